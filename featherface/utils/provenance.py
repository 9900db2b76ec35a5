"""Provenance records: which code, parameters and data produced a stage's outputs.

Every pipeline stage writes `provenance.json` beside its outputs with the stage name, the parameter sections it
read, the code version (git commit and whether the tree was dirty, plus the package version) and the sha256 of
its input files, so a number in `results/` can be traced back to what made it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

import featherface
from featherface.utils.io import sha256_file, write_json_atomic

__all__ = ["code_version", "hardware_description", "write_record"]


def code_version(repo_dir: str | Path | None = None) -> dict[str, Any]:
    """The package version and, inside a git checkout, the commit and whether tracked files were modified."""
    repo = Path(repo_dir) if repo_dir else Path(featherface.__file__).resolve().parents[1]
    info: dict[str, Any] = {"package": featherface.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        info.update(git_commit=commit, git_dirty=bool(status.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def hardware_description(device: str = "cpu") -> str:
    """A one-line description of where a stage ran, e.g. ``"cpu: Intel Xeon ..., 2 cores"`` or
    ``"cuda: NVIDIA H100 80GB HBM3 x 1"``."""
    if str(device).startswith("cuda"):
        import torch  # here: this module is imported by torch-free code (data, eval.prediction_files)

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu: {name}, {cores} cores"


def write_record(
    out_dir: str | Path,
    stage: str,
    params: Mapping[str, Any],
    inputs: Iterable[str | Path] = (),
    extra: Mapping[str, Any] | None = None,
    code: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<out_dir>/provenance.json` for a stage and return its path.

    Args:
        out_dir: the stage's output folder.
        stage: the stage name (``download``, ``verify``, ...).
        params: the parameter sections the stage read (plain data).
        inputs: input files whose sha256 is recorded (folders are skipped; use a manifest file for them).
        extra: anything else worth recording (e.g. a summary of the results).
        code: the code version to record (default: :func:`code_version` now; a long stage passes the version it
            started with).
    """
    checksums = {str(p): sha256_file(p) for p in map(Path, inputs) if p.is_file()}
    record = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code": dict(code) if code is not None else code_version(),
        "python": platform.python_version(),
        "params": dict(params),
        "inputs_sha256": checksums,
    }
    if extra:
        record.update(extra)
    path = Path(out_dir) / "provenance.json"
    write_json_atomic(path, record)
    return path
