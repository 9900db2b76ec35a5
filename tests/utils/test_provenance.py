"""Tests of featherface.utils.provenance helpers that the stage tests do not cover."""

from __future__ import annotations

import subprocess
import sys

from featherface.utils.provenance import hardware_description


def test_hardware_description_names_the_cpu() -> None:
    text = hardware_description("cpu")
    assert text.startswith("cpu: ") and text.endswith(" cores")


def test_train_config_imports_first_without_a_cycle() -> None:
    # featherface.config and featherface.train.config import each other's names; either may be imported first.
    for module in ("featherface.train.config", "featherface.config", "featherface.stages.train"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_write_record_keeps_the_code_version_it_is_given(tmp_path) -> None:
    import json

    from featherface.utils.provenance import write_record

    started = {"package": "0.1.0", "git_commit": "abc", "git_dirty": False}
    path = write_record(tmp_path, "train", {"train": {}}, code=started)
    assert json.loads(path.read_text())["code"] == started
    assert "git_commit" in json.loads(write_record(tmp_path, "train", {}).read_text())["code"]
