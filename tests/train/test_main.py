"""`python -m featherface.train` end to end, alone and under torchrun, on a WIDER-layout folder written here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from featherface.models.checkpoints import load_checkpoint
from featherface.models.loading import build_model_from_checkpoint
from tests.train import project, restore_threads  # noqa: F401 (fixtures)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_module_entry_point(project):
    cmd = [sys.executable, "-m", "featherface.train", "--params", str(project / "params.yaml"), "-q",
           "--out", str(project / "run")]
    done = subprocess.run(cmd + ["--set", "train.epochs=1"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "final model" in done.stdout and "epoch 1/1 step 2/2" in done.stderr  # log_every=1
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "train.epochs changed from 1 to 2" in resumed.stderr
    assert load_checkpoint(project / "run" / "last.pt")["epoch"] == 2
    bad = subprocess.run(cmd + ["--set", "train.optimizer=adam"], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=300)
    assert bad.returncode == 2 and "train.optimizer" in bad.stderr and "Traceback" not in bad.stderr


def test_torchrun_two_processes(project):
    """`torchrun --nproc_per_node 2 -m featherface.train` on CPU (gloo): rank 0 writes, metrics sum both ranks."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "featherface.train", "--params", str(project / "params.yaml"), "-q", "--out", str(project / "ddp"),
           "--set", "train.epochs=1", "--set", "train.batch_size=1"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun run did not finish within 180 s (hang?)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gloo, rank 0 of 2" in done.stderr
    rows = (project / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[10] == "4"  # 4 images: 2 steps x batch 1 x 2 ranks
    assert build_model_from_checkpoint(project / "ddp" / "final.pt").config.width == 16
