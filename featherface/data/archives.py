"""Fetching, checking and extracting the source archives of the ``gdown`` data source.

`fetch_source` downloads one `featherface.data.sources.Source` into ``data.archive_dir`` (Google Drive
through ``gdown``, other URLs through ``urllib``), resumable, skipping an archive already present with the
right checksum; it checks size, md5 and sha256 (a bad file is moved aside to ``<name>.bad`` and the error
names the expected and actual values). `extract_source` then maps the archive onto a staging layout
(``<archive_dir>/layout``) through a temporary folder on the same filesystem and a rename, checking the
extracted files the project knows the sha256 of. Progress goes through a ``progress(done, total, what)``
callback (bytes or members), messages through `logging`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from featherface.data.sources import Source
from featherface.utils.io import ProgressCallback, sha256_file, write_text_atomic

__all__ = [
    "ArchiveRecord",
    "ChecksumError",
    "DownloadError",
    "Downloader",
    "GdownDownloader",
    "UrlDownloader",
    "extract_source",
    "fetch_source",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes per read of a response, an archive member or a file being hashed


class DownloadError(RuntimeError):
    """A source could not be fetched or extracted; the message names the file and what went wrong."""


class ChecksumError(DownloadError):
    """A downloaded or extracted file whose size or checksum differs from the expected one."""


class Downloader(Protocol):
    """Fetches one source to a local file.

    `fetch` writes the complete file at `dest` (creating it), resuming from a partial download it kept
    beside `dest` (``<dest>.part`` for `UrlDownloader`; gdown's own ``<name>XXXXXXXX.part``), and reports
    bytes through `progress`. It does not check checksums: `download` does.
    """

    def fetch(self, source: Source, dest: Path, progress: ProgressCallback | None) -> None:
        ...


def _report(progress: ProgressCallback | None, done: int, total: int | None, what: str) -> None:
    if progress is not None:
        progress(done, total, what)


class UrlDownloader:
    """Plain HTTP(S) downloads with ``urllib``, resumable through a ``Range`` request on ``<dest>.part``.

    Args:
        timeout: seconds to wait for the server between reads.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout

    def fetch(self, source: Source, dest: Path, progress: ProgressCallback | None) -> None:
        if source.url is None:
            raise DownloadError(f"{source.filename}: no URL to download from")
        part = dest.with_name(dest.name + ".part")
        start = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "featherface-download"}
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(source.url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if start and response.status != 206:  # the server ignored the range: start over
                    start = 0
                length = response.headers.get("Content-Length")
                total = start + int(length) if length is not None else None
                done = start
                with open(part, "ab" if start else "wb") as handle:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        handle.write(chunk)
                        done += len(chunk)
                        _report(progress, done, total, source.filename)
        except urllib.error.HTTPError as err:
            if err.code == 416 and start:  # range not satisfiable: the partial file is already complete
                os.replace(part, dest)
                return
            raise DownloadError(f"{source.filename}: HTTP {err.code} from {source.url}") from err
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(
                f"{source.filename}: download from {source.url} failed ({err}); "
                f"the partial file {part} is kept and the next run resumes it"
            ) from err
        if total is not None and done != total:
            raise DownloadError(
                f"{source.filename}: connection closed after {done} of {total} bytes; "
                f"the partial file {part} is kept and the next run resumes it"
            )
        os.replace(part, dest)


class GdownDownloader:
    """Google Drive downloads with ``gdown.download(id=..., output=dest, resume=True)``; URL-only sources
    go through `UrlDownloader`.

    Args:
        timeout: seconds to wait for the server between reads.
        retries: extra attempts on transient network failures (gdown resumes the transfer).
    """

    def __init__(self, timeout: float = 60.0, retries: int = 2) -> None:
        self.timeout = timeout
        self.retries = retries
        self._url = UrlDownloader(timeout=timeout)

    def fetch(self, source: Source, dest: Path, progress: ProgressCallback | None) -> None:
        if source.gdrive_id is None:
            self._url.fetch(source, dest, progress)
            return
        try:
            import gdown  # imported here: optional for local sources, and slow to import
        except ImportError as err:  # pragma: no cover - gdown is a dependency
            raise DownloadError("the gdown source needs the 'gdown' package (pip install gdown)") from err
        kwargs: dict[str, Any] = {"id": source.gdrive_id, "output": str(dest), "quiet": True, "resume": True}
        accepted = inspect.signature(gdown.download).parameters
        if "progress" in accepted and progress is not None:
            kwargs["progress"] = lambda done, total: progress(done, total, source.filename)
        if "timeout" in accepted:
            kwargs["timeout"] = self.timeout
        if "retries" in accepted:
            kwargs["retries"] = self.retries
        try:
            gdown.download(**kwargs)
        except Exception as err:  # gdown raises several types (FileURLRetrievalError, DownloadError, HTTP)
            raise DownloadError(
                f"{source.filename}: Google Drive download (id {source.gdrive_id}) failed: {err}; "
                f"partial data in {dest.parent} is kept and the next run resumes it"
            ) from err


@dataclass(frozen=True)
class ArchiveRecord:
    """A fetched source file: where it is, its size and digests, and what it was checked against."""

    source: Source
    path: Path
    size: int
    sha256: str
    md5: str
    verified: str  # "md5", "sha256", "md5+sha256" or "none"


def _digests(path: Path, progress: ProgressCallback | None = None, what: str = "") -> tuple[str, str, int]:
    """(sha256, md5, size) of a file, in one pass with progress: the archives are gigabytes and WIDER FACE
    publishes md5 only, so `featherface.utils.io.sha256_file` (sha256 alone) would mean reading them twice."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    size = path.stat().st_size
    done = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
            done += len(chunk)
            _report(progress, done, size, what)
    return sha.hexdigest(), md5.hexdigest(), size


def _check_file(source: Source, path: Path, progress: ProgressCallback | None) -> tuple[ArchiveRecord | None, str]:
    """Check a fetched file against the source's size and checksums.

    Returns:
        (the record when it passes, else None; the reason it failed).
    """
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        kind = "truncated" if size < source.size else "too large"
        return None, f"{kind}: {size} bytes, expected {source.size}"
    sha, md5, size = _digests(path, progress, f"checking {source.filename}")
    if source.md5 is not None and md5 != source.md5.lower():
        return None, f"md5 mismatch: got {md5}, expected {source.md5} (corrupt or truncated download)"
    if source.sha256 is not None and sha != source.sha256.lower():
        return None, f"sha256 mismatch: got {sha}, expected {source.sha256} (corrupt or truncated download)"
    verified = "+".join(k for k, v in (("md5", source.md5), ("sha256", source.sha256)) if v) or "none"
    return ArchiveRecord(source, path, size, sha, md5, verified), ""


def _move_aside(path: Path) -> Path:
    """Rename a bad file to ``<name>.bad`` (kept for inspection, out of the way of the next download)."""
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    return bad


def fetch_source(
    source: Source,
    archive_dir: Path,
    downloader: Downloader,
    progress: ProgressCallback | None = None,
) -> ArchiveRecord:
    """Fetch one source into `archive_dir` (skipped when present and correct) and check it.

    Raises:
        ChecksumError: size or checksum differs; the file is moved to ``<name>.bad``.
        DownloadError: the downloader failed or produced no file.
    """
    archive_dir.mkdir(parents=True, exist_ok=True)
    final = archive_dir / source.filename
    if final.is_file():
        record, reason = _check_file(source, final, progress)
        if record is not None:
            logger.info("%s: present (%s), skipped", source.filename, record.verified)
            return record
        bad = _move_aside(final)
        logger.warning("%s: present but %s; moved to %s, downloading again", source.filename, reason, bad)
    logger.info("%s: downloading", source.filename)
    downloader.fetch(source, final, progress)
    if not final.is_file():
        raise DownloadError(f"{source.filename}: the downloader finished without writing {final}")
    record, reason = _check_file(source, final, progress)
    if record is None:
        bad = _move_aside(final)
        raise ChecksumError(f"{source.filename}: {reason}; the file was moved to {bad}")
    if record.verified == "none":
        logger.warning("%s: no published checksum; recorded sha256 %s", source.filename, record.sha256)
    return record


def _safe_relative(name: str) -> PurePosixPath | None:
    """An archive member name as a relative path, or None when it would escape the destination."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    return pure


def _zip_members(archive: zipfile.ZipFile, rule_member: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The archive members a rule selects, each with its path relative to the rule's destination."""
    infos = [
        i for i in archive.infolist()
        if not i.is_dir() and not i.filename.startswith("__MACOSX/") and _safe_relative(i.filename)
    ]
    if rule_member.endswith("/"):
        return [(i, PurePosixPath(i.filename[len(rule_member):])) for i in infos if i.filename.startswith(rule_member)]
    exact = [i for i in infos if i.filename == rule_member]
    if not exact:  # tolerate an extra top-level folder: match on the trailing path components
        exact = [i for i in infos if i.filename.endswith("/" + rule_member)]
    return [(exact[0], PurePosixPath())] if len(exact) == 1 else []


def extract_source(
    record: ArchiveRecord,
    layout_dir: Path,
    progress: ProgressCallback | None = None,
) -> list[Path]:
    """Extract (or copy) a fetched source into `layout_dir` following its `Extract` rules.

    Each destination is written into a temporary folder inside `layout_dir` and renamed into place. A marker
    ``<layout_dir>/.extracted/<name>.json`` holding the archive's sha256 makes a re-run skip the work.

    Returns:
        The destination paths.

    Raises:
        DownloadError: the archive is not a valid zip (moved to ``<name>.bad``) or lacks a member.
        ChecksumError: an extracted file differs from the source's ``layout_sha256``.
    """
    source = record.source
    dests = [layout_dir / rule.dest for rule in source.extract]
    marker = layout_dir / ".extracted" / f"{source.name}.json"
    if marker.is_file() and all(d.exists() for d in dests):
        try:
            if json.loads(marker.read_text()).get("archive_sha256") == record.sha256:
                logger.info("%s: already extracted", source.filename)
                return dests
        except json.JSONDecodeError:
            pass
    layout_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=layout_dir, prefix=f".extract-{source.name}-"))
    try:
        if source.kind == "file":
            for rule in source.extract:
                target = tmp / rule.dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(record.path, target)
        else:
            _extract_zip(record, tmp, progress)
        for layout_path, expected in source.layout_sha256:
            actual = sha256_file(tmp / layout_path)
            if actual != expected:
                bad = _move_aside(record.path)
                raise ChecksumError(
                    f"{source.filename}: extracted {layout_path} has sha256 {actual}, expected {expected} "
                    f"(not the official file); the archive was moved to {bad}"
                )
        for rule, dest in zip(source.extract, dests):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                shutil.rmtree(dest)
            elif dest.exists():
                dest.unlink()
            os.replace(tmp / rule.dest, dest)
        write_text_atomic(marker, json.dumps({"archive": source.filename, "archive_sha256": record.sha256}) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dests


def _extract_zip(record: ArchiveRecord, tmp: Path, progress: ProgressCallback | None) -> None:
    """Write the members the source's rules select into ``tmp/<rule.dest>``; a bad zip is moved aside."""
    source = record.source
    try:
        with zipfile.ZipFile(record.path) as archive:
            plan = []
            for rule in source.extract:
                members = _zip_members(archive, rule.member)
                if not members:
                    raise DownloadError(f"{source.filename}: no member {rule.member!r} in the archive")
                plan.extend((info, tmp / rule.dest / rel) for info, rel in members)
            for index, (info, target) in enumerate(plan, start=1):
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                _report(progress, index, len(plan), f"extracting {source.filename}")
    except (zipfile.BadZipFile, EOFError) as err:
        bad = _move_aside(record.path)
        raise DownloadError(
            f"{source.filename}: not a valid zip archive ({err}; truncated?); it was moved to {bad}"
        ) from err
