"""Fault injection on `featherface train` (issue 15): a kill during an epoch and during a checkpoint write, Ctrl-C,
a full disk (``ulimit -f``), a corrupt ``last.pt``, two runs into one folder, a fresh run into a used folder.

Each test checks that nothing the user made is lost (``last.pt``, ``metrics.csv`` and ``final.pt`` keep their
bytes, or are set aside under another name) and that the message names the file and the way out. Faults are
injected in a child process by :mod:`tests.train.fault_driver`; the follow-up runs go through
:func:`featherface.cli.main` in this process. A tiny model (width 16, one BiFPN cell, 64 px, 4 images, 2 steps
per epoch) keeps each test to seconds.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from featherface.cli import main
from featherface.models.checkpoints import load_checkpoint
from featherface.stages.train import run_training
from featherface.train.run_folder import RunFolderError
from tests.train import restore_threads, write_widerface  # noqa: F401 (autouse fixture)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRAIN = {"model": "featherface_none", "width": 16, "bifpn_repeats": 1, "init": "none", "image_size": 64,
         "epochs": 2, "batch_size": 2, "num_workers": 0, "max_train_images": 4, "threads": 1, "log_every": 0,
         "warmup_epochs": 0.0, "probe_images": 0}
#: Global step 2 is the first step of epoch 2: last.pt then holds epoch 1.
IN_EPOCH_2 = 2
UNSAFE = ("Traceback", "weights_only", "inline_container", "Original Traceback")


@pytest.fixture()
def params(tmp_path: Path) -> Path:
    write_widerface(tmp_path / "data", n=4)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"root": "data"}, "train": TRAIN}))
    return path


def _train_args(params: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--params", str(params), "-q", "--out", str(out), *extra]


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}


def _inject(fault: str, step: int, args: list[str], ready: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tests.train.fault_driver", fault, str(step), *([str(ready)] if ready else []),
           "--", *args]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=_child_env(), capture_output=True, text=True, timeout=180)


def _files(out: Path) -> dict[str, bytes]:
    """The bytes of every file in ``out`` but the lock file (temporary files included)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != ".lock"}


def _epochs(out: Path) -> list[str]:
    return [row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]]


def _temps(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def _no_library_internals(text: str) -> None:
    assert not any(word in text for word in UNSAFE), text


# ------------------------------------------------------------------------------------------------ kills


def test_kill_during_an_epoch_keeps_the_run_and_a_fresh_start_is_refused(params, tmp_path, capsys):
    out = tmp_path / "run"
    killed = _inject("kill", IN_EPOCH_2, _train_args(params, out))
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and _epochs(out) == ["1"]
    before = _files(out)
    assert (out / ".lock").is_file()  # left by the killed run; harmless, see below

    assert main(_train_args(params, out)) == 2  # no --resume: would overwrite the run
    err = capsys.readouterr().err
    assert err.startswith(f"featherface train: error: {out} already holds a training run (last.pt, metrics.csv); ")
    assert "Continue it with --resume, train into a new folder with --out, or pass --overwrite" in err
    assert _files(out) == before

    assert main(_train_args(params, out, "--resume")) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and _epochs(out) == ["1", "2"]
    assert (out / "final.pt").is_file() and not (out / ".lock").exists()


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(params, tmp_path):
    out = tmp_path / "run"
    killed = _inject("kill-in-save", IN_EPOCH_2, _train_args(params, out))
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the half-written file never took the real name
    (temp,) = _temps(out)
    assert temp.startswith(".last.pt.") and (out / temp).read_bytes() == b"half a checkpoint"

    assert main(_train_args(params, out, "--resume")) == 0
    assert _temps(out) == []  # the killed run's temporary file is removed
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and (out / "final.pt").is_file()


def test_ctrl_c_says_where_to_resume_from(params, tmp_path):
    out = tmp_path / "run"
    stopped = _inject("ctrl-c", IN_EPOCH_2, _train_args(params, out))
    assert stopped.returncode == 130
    assert (f"featherface train: training interrupted in epoch 2/2; {out / 'last.pt'} holds 1 finished epoch(s): "
            f"continue with --resume (same settings and --out {out})") in stopped.stderr
    _no_library_internals(stopped.stderr)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.csv"]  # lock released, no temporary file


# ------------------------------------------------------------------------------------------- full disk


def test_full_disk_at_checkpoint_time_names_the_file(params, tmp_path):
    out = tmp_path / "run"
    failed = _inject("disk-full", IN_EPOCH_2, _train_args(params, out))
    assert failed.returncode == 2
    err = failed.stderr
    assert f"featherface train: error: cannot write the checkpoint {out / 'last.pt'}: the file could not be " \
           "written completely" in err
    assert "a full disk, or a file size limit set by ulimit -f" in err
    assert "the previous last.pt is unchanged. Free some space or choose another output folder." in err
    assert f"Training stopped in epoch 2/2; {out / 'last.pt'} holds 1 finished epoch(s): continue with --resume" in err
    _no_library_internals(err)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and _temps(out) == []
    assert main(_train_args(params, out, "--resume")) == 0  # space is back: the run goes on
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def test_full_disk_with_loader_workers_is_one_line_not_a_worker_traceback(params, tmp_path):
    out = tmp_path / "run"

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    cmd = [sys.executable, "-m", "featherface", *_train_args(params, out, "--set", "train.num_workers=2")]
    failed = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_child_env(), capture_output=True, text=True, timeout=180,
                            preexec_fn=limit_file_size)
    assert failed.returncode == 2
    err = failed.stderr.strip().splitlines()[-1]
    assert err.startswith("featherface train: error: a data loader worker failed in epoch 1/2: RuntimeError: ")
    assert "File too large" in err and "set train.num_workers: 0" in err and "ulimit -f" in err
    assert "no checkpoint of this run was saved" in err
    _no_library_internals(failed.stderr)
    assert list(out.iterdir()) == []  # nothing half-written, lock released


# --------------------------------------------------------------------------------------- corrupt last.pt


def test_corrupt_last_pt_is_named_and_left_alone(params, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(params, out, "--set", "train.epochs=1")) == 0
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    before = _files(out)
    assert main(_train_args(params, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{out / 'last.pt'}: not a readable PyTorch checkpoint: a damaged or truncated PyTorch file" in err
    assert "To start afresh instead, pass --overwrite without --resume" in err
    _no_library_internals(err)
    assert _files(out) == before

    assert main(_train_args(params, out, "--overwrite", "--set", "train.epochs=1")) == 0
    stale = sorted(p.name.split(".stale-")[0] for p in out.glob("*.stale-*"))
    assert stale == ["final", "last", "metrics", "provenance"]
    assert next(out.glob("last.stale-*")).read_bytes() == before["last.pt"]  # the damaged file is kept
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


# ------------------------------------------------------------------------------------ two runs, one folder


def test_a_second_run_into_the_same_folder_is_stopped(params, tmp_path, capsys):
    out, ready = tmp_path / "run", tmp_path / "ready"
    cmd = [sys.executable, "-m", "tests.train.fault_driver", "hold", "0", str(ready), "--", *_train_args(params, out)]
    first = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=_child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), "the first run did not start"
        for extra in ((), ("--resume",), ("--overwrite",)):
            assert main(_train_args(params, out, *extra)) == 2
            err = capsys.readouterr().err
            assert (f"featherface train: error: another training run is writing to {out} (process {first.pid}, "
                    f"lock {out / '.lock'}); wait for it to finish, or train into another folder with --out") in err
    finally:
        first.kill()
        first.wait(timeout=60)
    assert main(_train_args(params, out)) == 0  # the killed run's lock file does not block the next run
    assert load_checkpoint(out / "final.pt")["epoch"] == 2


# ------------------------------------------------------------------------------ a fresh run into a used folder


def test_fresh_run_into_a_used_folder_needs_overwrite_and_keeps_the_old_files(params, tmp_path, capsys):
    out = tmp_path / "run"
    run_training(params, ["train.epochs=1"], out)
    old = _files(out)
    with pytest.raises(RunFolderError, match=r"already holds a training run \(last\.pt, metrics\.csv, final\.pt\)"):
        run_training(params, ["train.epochs=1"], out)
    (out / "last.pt").unlink()  # --resume without a last.pt would start afresh: refused the same way
    with pytest.raises(RunFolderError, match="--resume found no last.pt to continue"):
        run_training(params, ["train.epochs=1"], out, "strict")
    assert main(_train_args(params, out, "--overwrite", "--resume")) == 2
    assert "--overwrite starts afresh (setting the old run aside); it cannot be combined with --resume" in (
        capsys.readouterr().err)
    assert main(_train_args(params, out, "--overwrite", "--set", "train.epochs=1")) == 0
    for name in ("metrics.csv", "final.pt", "provenance.json"):
        stem, suffix = name.split(".")
        (kept,) = out.glob(f"{stem}.stale-*.{suffix}")
        assert kept.read_bytes() == old[name]
    assert _epochs(out) == ["1"] and (out / "final.pt").is_file()
