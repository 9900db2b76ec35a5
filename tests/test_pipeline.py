"""The pipeline runs the same stages under Snakemake and DVC, does nothing when run again, and reruns only
what depends on a changed parameter.

Each test copies the workflow files (and the package sources DVC hashes as code dependencies) into a
temporary project whose params.yaml selects a tiny subset of `../shared/data/widerface`, then runs the real
tools there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "workflow", "dvc.yaml", ".dvcignore", "featherface"]


def _run(cmd: list[str], cwd: Path) -> str:
    # One thread per process: the stages are tiny here, and PyTorch's thread pool thrashes on a busy 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-4000:]}"
    return output


def _set_param(project: Path, section: str, key: str, value: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path, shared_dir: Path) -> Path:
    """A throw-away copy of the pipeline with a 4 + 4 image subset of the shared data."""
    root = tmp_path / "project"
    root.mkdir()
    for name in WORKFLOW_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"].update(
        local_widerface=str(shared_dir / "data" / "widerface"),
        local_weights=str(shared_dir / "weights"),
        train_images=4,
        val_images=4,
    )
    params["validate"]["golden_dir"] = str(shared_dir / "golden")
    params["train"].update(image_size=128, batch_size=2, epochs=1, warmup_epochs=0, num_workers=0, probe_images=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _dvc_init(project: Path) -> None:
    _run(["git", "init", "-q"], project)
    _run([sys.executable, "-m", "dvc", "init", "-q"], project)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], project)


def _snakemake(project: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "snakemake", "--cores", "1", *args], project)


def _snakemake_ran(output: str) -> set[str]:
    return set(re.findall(r"^\s*(?:local)?rule (\w+):", output, flags=re.M)) - {"all"}


def _dvc_ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_snakemake_and_dvc_define_the_same_stages(project: Path) -> None:
    _dvc_init(project)
    summary = _snakemake(project, "--summary")
    snake_outputs: dict[str, set[str]] = {}
    for line in summary.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 3 and not line.startswith("output_file"):
            snake_outputs.setdefault(fields[2], set()).add(fields[0])
    code = (
        "import json, sys\nfrom dvc.repo import Repo\n"
        "repo = Repo('.')\n"
        "print(json.dumps({s.name: sorted(str(o) for o in s.outs) for s in repo.index.stages}))"
    )
    import json

    dvc_outputs = json.loads(_run([sys.executable, "-c", code], project).strip().splitlines()[-1])
    assert set(snake_outputs) == set(dvc_outputs), "the two DAGs list different stages"
    for stage, outs in dvc_outputs.items():
        assert snake_outputs[stage] == set(outs), f"stage {stage}: outputs differ"


ALL_STAGES = {"download", "verify", "validate", "predict", "score", "train", "export", "benchmark", "report"}


def _check_results(project: Path, val_images: int) -> None:
    assert yaml.safe_load((project / "results" / "verify" / "report.json").read_text())["ok"] is True
    assert yaml.safe_load((project / "results" / "validate" / "report.json").read_text())["ok"] is True
    ap = yaml.safe_load((project / "results" / "score" / "ap.json").read_text())
    assert ap["num_images"] == val_images and ap["num_images_total"] == 3226
    assert all(0.0 <= ap["ap"][s] <= 1.0 for s in ("easy", "medium", "hard"))
    assert (project / "results" / "score" / "pr_curves.png").stat().st_size > 0
    metrics = (project / "results" / "train" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2 and "loss" in metrics[0]


def test_snakemake_reruns_only_what_a_parameter_touches(project: Path) -> None:
    assert _snakemake_ran(_snakemake(project)) == ALL_STAGES
    _check_results(project, 4)
    again = _snakemake(project)
    assert _snakemake_ran(again) == set(), "a second run must do nothing"
    assert "Nothing to be done" in again

    _set_param(project, "verify", "decode_images", False)
    assert _snakemake_ran(_snakemake(project)) == {"verify", "report"}

    _set_param(project, "validate", "input_sizes", [[64, 64]])
    assert _snakemake_ran(_snakemake(project)) == {"validate", "report"}

    _set_param(project, "score", "iou_threshold", 0.6)
    assert _snakemake_ran(_snakemake(project)) == {"score", "report"}

    _set_param(project, "train", "lr", 2e-3)
    assert _snakemake_ran(_snakemake(project)) == {"train", "report"}

    _set_param(project, "data", "val_images", 3)
    assert _snakemake_ran(_snakemake(project)) == {
        "download", "verify", "predict", "score", "train", "export", "benchmark", "report"}
    _check_results(project, 3)


def test_dvc_reruns_only_what_a_parameter_touches(project: Path) -> None:
    _dvc_init(project)
    dvc = [sys.executable, "-m", "dvc", "repro"]
    assert _dvc_ran(_run(dvc, project)) == ALL_STAGES
    _check_results(project, 4)
    assert _dvc_ran(_run(dvc, project)) == set(), "a second run must do nothing"

    _set_param(project, "verify", "decode_images", False)
    assert _dvc_ran(_run(dvc, project)) == {"verify", "report"}

    _set_param(project, "validate", "input_sizes", [[64, 64]])
    assert _dvc_ran(_run(dvc, project)) == {"validate", "report"}

    _set_param(project, "train", "lr", 2e-3)
    assert _dvc_ran(_run(dvc, project)) == {"train", "report"}

    _set_param(project, "data", "val_images", 3)
    assert _dvc_ran(_run(dvc, project)) == {"download", "verify", "predict", "score", "train", "report"}
    _check_results(project, 3)
    provenance = yaml.safe_load((project / "results" / "verify" / "provenance.json").read_text())
    assert provenance["params"]["data"]["val_images"] == 3
    assert provenance["code"]["package"]
