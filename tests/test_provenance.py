"""Tests of featherface.provenance helpers that the stage tests do not cover."""

from __future__ import annotations

import subprocess
import sys

from featherface.provenance import hardware_description


def test_hardware_description_names_the_cpu() -> None:
    text = hardware_description("cpu")
    assert text.startswith("cpu: ") and text.endswith(" cores")


def test_train_config_imports_first_without_a_cycle() -> None:
    # featherface.config and featherface.train.config import each other's names; either may be imported first.
    for module in ("featherface.train.config", "featherface.config", "featherface.train.trainer"):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
