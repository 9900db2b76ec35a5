"""The training output folder: one run at a time, and nothing a user made is overwritten.

* :class:`RunFolderLock`: an exclusive ``fcntl.flock`` on ``<folder>/.lock`` for the whole run, so a second
  training into the same folder stops at once with a message naming the folder and the process holding it. The
  operating system releases the lock when the process ends, however it ends, so a lock file left by a killed run
  is harmless (the next run takes it over).
* :func:`prepare_run_folder`: before a run starts afresh in a folder that holds an earlier run (``last.pt``,
  ``metrics.csv`` or ``final.pt``), refuse (:class:`RunFolderError`, naming the folder, ``--resume`` and
  ``--out``) unless the user asked to overwrite; then the old files are renamed, never deleted
  (:func:`set_aside`). It also removes the temporary files a killed run left behind.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from featherface.errors import ConfigError
from featherface.utils.io import leftover_temps

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FINAL",
    "LAST",
    "LOCK_NAME",
    "METRICS",
    "RUN_FILES",
    "SET_ASIDE_FILES",
    "RunFolderBusyError",
    "RunFolderError",
    "RunFolderLock",
    "existing_run_files",
    "prepare_run_folder",
    "remove_stale_temps",
    "set_aside",
]

log = logging.getLogger(__name__)

#: The files of a training run: the training state, the per-epoch metrics and the trained model.
LAST, METRICS, FINAL = "last.pt", "metrics.csv", "final.pt"
#: The files that make a folder hold a training run.
RUN_FILES: tuple[str, ...] = (LAST, METRICS, FINAL)
#: The files set aside together when a run is replaced (the record of the old run goes with it).
SET_ASIDE_FILES: tuple[str, ...] = (*RUN_FILES, "provenance.json")
LOCK_NAME = ".lock"


class RunFolderError(ConfigError):
    """A training folder that cannot be used as asked (it holds a run that would be overwritten)."""


class RunFolderBusyError(RunFolderError):
    """Another process is training into the same folder."""


class RunFolderLock:
    """An exclusive lock on a training folder for as long as a run writes to it.

    Use as a context manager or with :meth:`acquire` / :meth:`release`. The lock file holds the process id of
    its holder (for the message another run gets) and is removed on release.

    Raises:
        RunFolderBusyError: another process holds the lock (from :meth:`acquire`).
        RunFolderError: the folder cannot be created.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        if fcntl is None:  # not POSIX: no lock
            log.warning("%s: cannot lock the training folder on this system (no fcntl)", self.folder)
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create the training folder {self.folder}: {err.strerror or err}") from err
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise RunFolderBusyError(
                    f"another training run is writing to {self.folder} (process {holder}, lock {self.path}); "
                    "wait for it to finish, or train into another folder with --out"
                ) from None
            if self._is_current(fd):
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: no other process holds this file
        finally:
            os.close(self._fd)
            self._fd = None

    def _is_current(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def set_aside(folder: str | os.PathLike[str], names: Sequence[str] = SET_ASIDE_FILES) -> list[Path]:
    """Rename each of ``names`` in ``folder`` to ``<stem>.stale-<UTC time><suffix>`` (``last.stale-20250101T
    120000Z.pt``); nothing is deleted and an earlier stale file is never overwritten. Returns the new paths."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            target = path.with_name(f"{path.stem}.stale-{stamp}{path.suffix}")
            copy = 1
            while target.exists():
                copy += 1
                target = path.with_name(f"{path.stem}.stale-{stamp}-{copy}{path.suffix}")
            path.rename(target)
            moved.append(target)
    return moved


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files (``.last.pt.<random>.tmp``, ...: :func:`~featherface.utils.io.leftover_temps`)
    a killed run left in ``folder``; call it only while holding the folder's lock (another run's temporary files
    would be in use)."""
    folder = Path(folder)
    removed = sorted(temp for name in SET_ASIDE_FILES for temp in leftover_temps(folder / name))
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run: %s", folder, len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def existing_run_files(folder: str | os.PathLike[str]) -> list[str]:
    """The :data:`RUN_FILES` present in ``folder``."""
    return [name for name in RUN_FILES if (Path(folder) / name).is_file()]


def prepare_run_folder(folder: str | os.PathLike[str], resume: bool | str, overwrite: bool = False) -> list[Path]:
    """Make ``folder`` ready for a run (rank 0, under :class:`RunFolderLock`); returns the files set aside.

    * A run that will start afresh (no ``resume``, or ``resume`` without a ``last.pt``) into a folder holding
      ``last.pt``, ``metrics.csv`` or ``final.pt`` is refused, unless ``overwrite`` (the old files are set aside)
      or ``resume="auto"`` (the pipeline's mode: set aside too).
    * The temporary files of a killed run are removed.

    Raises:
        RunFolderError: naming the folder, its run files and the options (``--resume``, ``--out``,
            ``--overwrite``); or ``overwrite`` together with ``resume``.
    """
    folder = Path(folder)
    if overwrite and resume:
        raise RunFolderError("--overwrite starts afresh (setting the old run aside); it cannot be combined with "
                             "--resume, which continues the old run: choose one")
    remove_stale_temps(folder)
    found = existing_run_files(folder)
    resumable = bool(resume) and (folder / LAST).is_file()
    if not found or resumable:
        return []
    if not (overwrite or resume == "auto"):
        state = "" if not resume else "--resume found no last.pt to continue, so the run would start afresh; "
        raise RunFolderError(
            f"{folder} already holds a training run ({', '.join(found)}); {state}starting afresh would overwrite "
            f"it. Continue it with --resume, train into a new folder with --out, or pass --overwrite to start "
            "afresh (the old files are kept as <name>.stale-<time>.<ext>)"
        )
    moved = set_aside(folder)
    log.warning("%s: starting afresh; the earlier run's files are kept as %s", folder,
                ", ".join(p.name for p in moved))
    return moved
