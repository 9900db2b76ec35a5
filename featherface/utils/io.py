"""File helpers every stage shares: atomic writes of files and folders, sha256 digests and the progress-callback type.

An atomic write goes to a temporary file in the destination's folder (``.<name>.<random><suffix>``) that is renamed
over the destination only once it is complete, so a crash, a full disk or Ctrl-C never leaves a half-written
output: the destination holds either its old content or the new one. Temporary files of a killed run are found
again by :func:`leftover_temps`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

ProgressCallback = Callable[[int, "int | None", str], None]
"""``progress(done, total, what)``: ``done`` of ``total`` units (``None`` when unknown) of the task ``what``."""

_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = _CHUNK_BYTES) -> str:
    """The hex sha256 of a file's bytes, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_file_mode() -> int:
    """The permission bits a new file gets from ``open()`` under the current umask (``0o666 & ~umask``)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_beside(path: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """A new empty file ``.<name>.<8 random chars><suffix>`` in the folder of ``path`` (created with its parents),
    with the permissions of an ordinary new file (``mkstemp`` alone makes it 0600)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, default_file_mode())
    return Path(tmp)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike[str], suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on a clean exit rename it over ``path``, else delete it.

    Args:
        path: the destination (its folder is created).
        suffix: the temporary file's suffix (writers that pick a format by extension need the real one).
        fsync: flush the file to disk before the rename (checkpoints: survives a power cut, not just a crash).
    """
    dest = Path(path)
    tmp = temp_beside(dest, suffix)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (objects it cannot encode as their ``str``) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def leftover_temps(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files a killed writer of ``path`` left beside it (named as :func:`temp_beside` names them,
    with suffix ``.tmp`` or the extension of ``path``)."""
    dest = Path(path)
    if not dest.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.[A-Za-z0-9_]{{8}}(\.tmp|{re.escape(dest.suffix)})$")
    return [p for p in dest.parent.glob(f".{glob.escape(dest.name)}.*") if pattern.match(p.name) and p.is_file()]


def replace_dir(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Move the finished folder ``src`` to ``dest``, replacing an older ``dest`` only once ``src`` is complete.

    The older ``dest`` is first renamed aside (``.<name>.old-<pid>``); when the final rename fails it is put back
    before the error propagates, so ``dest`` is never left missing. Returns ``dest``.
    """
    src, dest = Path(src), Path(dest)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(src, dest)
    except BaseException:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest
