"""The training folder's guards on their own (no training): the lock, the refusal, setting files aside, the
temporary files of a killed run (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from featherface.train.run_folder import (
    RunFolderBusyError,
    RunFolderError,
    RunFolderLock,
    prepare_run_folder,
    remove_stale_temps,
)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(name)


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with RunFolderLock(folder) as lock:
        assert lock.path.read_text().strip().isdigit()
        with pytest.raises(RunFolderBusyError, match=f"another training run is writing to {folder} "):
            RunFolderLock(folder).acquire()
    assert not (folder / ".lock").exists()
    (folder / ".lock").write_text("12345\n")  # a lock file left by a killed run holds no lock
    with RunFolderLock(folder):
        pass


def test_fresh_start_is_refused_in_a_used_folder(tmp_path: Path) -> None:
    _touch(tmp_path, "final.pt")
    with pytest.raises(RunFolderError, match=r"holds a training run \(final\.pt\).*--resume.*--out.*--overwrite"):
        prepare_run_folder(tmp_path, resume=False)
    assert (tmp_path / "final.pt").read_text() == "final.pt"
    assert prepare_run_folder(tmp_path / "new", resume=False) == []


def test_overwrite_and_auto_set_files_aside(tmp_path: Path) -> None:
    _touch(tmp_path / "a", "last.pt", "metrics.csv", "final.pt", "provenance.json", "notes.txt")
    moved = prepare_run_folder(tmp_path / "a", resume=False, overwrite=True)
    assert sorted(p.name.split(".stale-")[0] for p in moved) == ["final", "last", "metrics", "provenance"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if ".stale-" not in p.name) == ["notes.txt"]
    # --resume auto with no last.pt to continue: the other files of the old run are set aside, not overwritten
    _touch(tmp_path / "b", "metrics.csv", "final.pt")
    moved = prepare_run_folder(tmp_path / "b", resume="auto")
    assert sorted(p.read_text() for p in moved) == ["final.pt", "metrics.csv"]
    # a resumable folder is left as it is
    _touch(tmp_path / "c", "last.pt", "metrics.csv")
    assert prepare_run_folder(tmp_path / "c", resume="strict") == []
    with pytest.raises(RunFolderError, match="cannot be combined with --resume"):
        prepare_run_folder(tmp_path / "c", resume="strict", overwrite=True)


def test_only_our_temporary_files_are_removed(tmp_path: Path) -> None:
    ours = [".last.pt.k2j_9abc.tmp", ".metrics.csv.abcdefgh.tmp", ".final.pt.00000000.tmp"]
    others = [".last.pt.tmp", "last.pt.abcdefgh.tmp", ".notes.txt.abcdefgh.tmp", "last.pt"]
    _touch(tmp_path, *ours, *others)
    assert sorted(p.name for p in remove_stale_temps(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
