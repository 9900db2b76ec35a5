"""The download stage: put WIDER FACE and the pretrained backbone into ``<data.root>`` in the pipeline's layout.

Two sources (``data.source``):

- ``gdown``: fetch each `featherface.data.sources.Source` into ``data.archive_dir`` (Google Drive through
  ``gdown``, other URLs through ``urllib``), resumable, skipping archives already present with the right
  checksum; check size and checksum (a bad file is moved aside to ``<name>.bad`` and the stage fails with
  the expected and actual values); extract each archive into a staging layout (``<archive_dir>/layout``,
  through a temporary folder on the same filesystem and a rename); then build ``<root>`` from it as below.
- ``local``: build ``<root>`` from ``data.local_widerface`` / ``data.local_weights`` (the layout of
  ``../shared``), for offline machines and CI.

Building ``<root>/widerface`` applies the subset (the first ``data.train_images`` train images in sorted
order with ``label.txt`` restricted to them, the first ``data.val_images`` val images; 0 keeps all; the
``.mat`` files are always whole). Files already present and identical are kept, files no longer in the
subset disappear, and the new tree is written into a temporary folder and swapped in with renames, so an
interrupted run never leaves a half-built tree. A run that changes nothing touches nothing.

The stage ends by writing ``<root>/manifest.json``: every file with its size and sha256, the source, the
subset and the parameters. The library never prints: progress goes through a callback
``progress(done, total, what)``, messages through `logging`.
"""

from __future__ import annotations

import filecmp
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
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from featherface.config import DataConfig, resolve_path, to_dict
from featherface.data.labels import count_faces, parse_label_lines, read_label_file, restrict_label_text
from featherface.data.sources import PRETRAIN_FILENAME, PRETRAIN_LAYOUT_PATH, SOURCES, VAL_MAT_FILES, Source
from featherface.utils.provenance import atomic_write_text

logger = logging.getLogger(__name__)

#: progress(done, total or None when unknown, what is being done).
ProgressCallback = Callable[[int, "int | None", str], None]

#: File suffixes taken as images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A source could not be fetched or extracted; the message names the file and what went wrong."""


class ChecksumError(DownloadError):
    """A downloaded or extracted file whose size or checksum differs from the expected one."""


class DataSourceError(FileNotFoundError):
    """A local source folder or file is missing; the message names every missing path."""


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
            import gdown
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
    """(sha256, md5, size) of a file, in one pass."""
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


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    return _digests(path)[0]


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
            actual = sha256_of(tmp / layout_path)
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
        atomic_write_text(marker, json.dumps({"archive": source.filename, "archive_sha256": record.sha256}) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dests


def _extract_zip(record: ArchiveRecord, tmp: Path, progress: ProgressCallback | None) -> None:
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


# ----------------------------------------------------------------------------------------------------
# Building <root> from a source tree (local copy, or the staging layout of the gdown source)
# ----------------------------------------------------------------------------------------------------


def list_images(folder: Path) -> list[str]:
    """Relative POSIX paths of the image files under `folder`, sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _check_local_sources(widerface: Path, weights_file: Path) -> None:
    required = [
        widerface,
        widerface / "train" / "images",
        widerface / "train" / "label.txt",
        widerface / "val" / "images",
        *(widerface / "val" / name for name in VAL_MAT_FILES),
        weights_file,
    ]
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        raise DataSourceError("data source incomplete; missing: " + ", ".join(missing))


@dataclass(frozen=True)
class PlannedFile:
    """A file of the new tree: copied from `src`, or written from `data`."""

    src: Path | None = None
    data: bytes | None = None


def _identical(planned: PlannedFile, existing: Path) -> bool:
    if not existing.is_file():
        return False
    if planned.data is not None:
        return existing.stat().st_size == len(planned.data) and existing.read_bytes() == planned.data
    assert planned.src is not None
    # Same size and mtime (copies keep the mtime) counts as identical, else the bytes are compared.
    return filecmp.cmp(planned.src, existing, shallow=True)


def _materialize(planned: PlannedFile, target: Path, link: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if planned.data is not None:
        target.write_bytes(planned.data)
        return
    assert planned.src is not None
    if link:
        try:
            os.link(planned.src, target)
            return
        except OSError:
            pass
    # Copy the bytes and keep the modification time (so the quick size + mtime comparison of a re-run
    # recognises the file), but not the permission bits of a possibly read-only source.
    shutil.copyfile(planned.src, target)
    stat = planned.src.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _existing_files(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _default_dir_mode() -> int:
    """0o777 minus the process umask (what ``mkdir`` would give), for folders made by ``mkdtemp`` (0o700)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _clean_stale(root: Path, name: str) -> None:
    """Remove what an interrupted `sync_tree` left; a run killed between its two renames left the previous
    complete tree as ``.<name>.old-*`` and no ``<name>``: put it back."""
    olds = sorted(root.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime_ns)
    if olds and not (root / name).exists():
        logger.info("restoring %s left by an interrupted run", olds[-1])
        os.rename(olds.pop(), root / name)
    for stale in list(root.glob(f".{name}.tmp-*")) + olds:
        logger.info("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


def sync_tree(
    plan: Mapping[str, PlannedFile],
    target: Path,
    *,
    link: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, int]:
    """Make folder `target` hold exactly the planned files, atomically.

    Files already present and identical are hard-linked into the new tree (no copy); the new tree is
    built in ``.<name>.tmp-*`` beside `target` and swapped in with two renames; nothing is touched when
    nothing changes.

    Returns:
        Counts ``{"kept", "written", "removed"}``.
    """
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale(root, target.name)
    existing = _existing_files(target)
    same = {rel for rel in plan if rel in existing and _identical(plan[rel], target / rel)}
    removed = existing - set(plan)
    stats = {"kept": len(same), "written": len(plan) - len(same), "removed": len(removed)}
    if not removed and len(same) == len(plan) and target.is_dir():
        logger.info("%s: up to date (%d files)", target, len(plan))
        return stats
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.tmp-"))
    os.chmod(tmp, _default_dir_mode())
    try:
        for index, (rel, planned) in enumerate(sorted(plan.items()), start=1):
            if rel in same:
                _materialize(PlannedFile(src=target / rel), tmp / rel, link=True)
            else:
                _materialize(planned, tmp / rel, link=link)
            _report(progress, index, len(plan), f"writing {target.name}")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.old-"))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("%s: %d kept, %d written, %d removed", target, stats["kept"], stats["written"], stats["removed"])
    return stats


def _sync_file(src: Path, target: Path, link: bool) -> bool:
    """Make `target` a copy of `src` (temporary file + rename); False when already identical."""
    planned = PlannedFile(src=src)
    if _identical(planned, target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        _materialize(planned, tmp, link=link)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def plan_widerface(
    widerface: Path, train_images: int, val_images: int
) -> tuple[dict[str, PlannedFile], dict[str, Any]]:
    """The files of ``<root>/widerface`` for a subset, relative to it, and a summary of the subset.

    Raises:
        LabelFormatError: when the source ``train/label.txt`` is malformed.
    """
    train_all = list_images(widerface / "train" / "images")
    val_all = list_images(widerface / "val" / "images")
    train = train_all[:train_images] if train_images else train_all
    val = val_all[:val_images] if val_images else val_all
    label_path = widerface / "train" / "label.txt"
    text = label_path.read_text(encoding="utf-8")
    labelled = read_label_file(label_path)  # strict: a malformed source fails here, naming file:line
    if train_images:
        text = restrict_label_text(text, train)
        labelled = parse_label_lines(text.splitlines(), label_path)
    missing = sorted({img.path for img in labelled} - set(train))
    if missing:
        logger.warning("%d images listed in %s are not in the train images (first: %s)",
                       len(missing), label_path, missing[0])
    plan: dict[str, PlannedFile] = {}
    plan.update({f"train/images/{rel}": PlannedFile(src=widerface / "train" / "images" / rel) for rel in train})
    plan["train/label.txt"] = PlannedFile(data=text.encode("utf-8"))
    plan.update({f"val/images/{rel}": PlannedFile(src=widerface / "val" / "images" / rel) for rel in val})
    plan.update({f"val/{name}": PlannedFile(src=widerface / "val" / name) for name in VAL_MAT_FILES})
    split_dir = widerface / "wider_face_split"
    for p in sorted(split_dir.rglob("*")) if split_dir.is_dir() else []:
        if p.is_file():
            plan[f"wider_face_split/{p.relative_to(split_dir).as_posix()}"] = PlannedFile(src=p)
    faces, landmarked = count_faces(labelled)
    summary = {
        "train_images": len(train),
        "train_images_available": len(train_all),
        "train_label_images": len(labelled),
        "train_faces": faces,
        "train_landmarked_faces": landmarked,
        "val_images": len(val),
        "val_images_available": len(val_all),
    }
    return plan, summary


def _hash_files(root: Path, rels: Iterable[str], progress: ProgressCallback | None) -> dict[str, dict[str, Any]]:
    rels = sorted(rels)
    out: dict[str, dict[str, Any]] = {}
    for index, rel in enumerate(rels, start=1):
        path = root / rel
        out[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
        _report(progress, index, len(rels), "checksums")
    return out


def build_layout(
    widerface_src: Path,
    weights_src: Path,
    root: Path,
    cfg: DataConfig,
    *,
    link: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Build ``<root>/widerface`` (subset of `widerface_src`) and ``<root>/weights`` from a source tree.

    Args:
        widerface_src: a folder in the layout of ``../shared/data/widerface``.
        weights_src: the ``mobilenetV1X0.25_pretrain.tar`` file.
        link: hard-link instead of copying (used for the gdown staging tree; never for a user's folder).

    Returns:
        The subset summary (counts) merged with the sync statistics under ``"sync"``.

    Raises:
        DataSourceError: naming every missing source folder or file.
    """
    _check_local_sources(widerface_src, weights_src)
    plan, summary = plan_widerface(widerface_src, cfg.train_images, cfg.val_images)
    stats = sync_tree(plan, root / "widerface", link=link, progress=progress)
    stats["weights_written"] = int(_sync_file(weights_src, root / PRETRAIN_LAYOUT_PATH, link=link))
    return {**summary, "sync": stats}


def _copy_extra_weights(weights_dir: Path, root: Path, names: Sequence[str]) -> None:
    """Copy the checkpoints named in ``data.extra_weights`` from `weights_dir` into ``<root>/weights``."""
    missing = [str(weights_dir / name) for name in names if not (weights_dir / name).is_file()]
    if missing:
        raise DataSourceError("data.extra_weights: missing source files: " + ", ".join(missing))
    for name in names:
        _sync_file(weights_dir / name, root / "weights" / name, link=False)


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    atomic_write_text(path, text)


def download(
    cfg: DataConfig,
    project_root: Path,
    *,
    downloader: Downloader | None = None,
    progress: ProgressCallback | None = None,
    sources: Sequence[Source] = SOURCES,
) -> Path:
    """Run the download stage and return the path of ``<root>/manifest.json``.

    Args:
        cfg: the ``data`` section of ``params.yaml``.
        project_root: the folder relative paths in `cfg` are resolved against (the parameter file's).
        downloader: fetches sources for ``source: gdown``; defaults to `GdownDownloader`.
        progress: ``progress(done, total, what)`` callback (bytes or files).
        sources: what the gdown source fetches (tests pass their own).

    Raises:
        DataSourceError: (local) a missing source folder or file, all of them named.
        DownloadError / ChecksumError: (gdown) a failed fetch, a bad archive, a size or checksum mismatch.
        LabelFormatError: the source ``label.txt`` is malformed (file and line named).
    """
    project_root = Path(project_root)
    root = resolve_path(cfg.root, project_root)
    if cfg.source == "local":
        widerface_src = resolve_path(cfg.local_widerface, project_root)
        weights_src = resolve_path(cfg.local_weights, project_root) / PRETRAIN_FILENAME
        summary = build_layout(widerface_src, weights_src, root, cfg, link=False, progress=progress)
        _copy_extra_weights(resolve_path(cfg.local_weights, project_root), root, cfg.extra_weights)
        source_info: dict[str, Any] = {"kind": "local", "widerface": cfg.local_widerface, "weights": cfg.local_weights}
    elif cfg.source == "gdown":
        if cfg.extra_weights:
            raise ValueError(
                f"data.extra_weights {list(cfg.extra_weights)}: extra checkpoints have no official download; "
                "they are copied only with data.source: local (set data.extra_weights: [] for gdown)"
            )
        archive_dir = resolve_path(cfg.archive_dir, project_root)
        layout_dir = archive_dir / "layout"
        fetcher = downloader if downloader is not None else GdownDownloader()
        records = [fetch_source(s, archive_dir, fetcher, progress) for s in sources]
        for record in records:
            extract_source(record, layout_dir, progress)
        summary = build_layout(
            layout_dir / "widerface", layout_dir / PRETRAIN_LAYOUT_PATH, root, cfg, link=True, progress=progress
        )
        source_info = {
            "kind": "gdown",
            "archives": {
                r.source.name: {
                    "filename": r.source.filename,
                    "gdrive_id": r.source.gdrive_id,
                    "url": r.source.url,
                    "size": r.size,
                    "sha256": r.sha256,
                    "md5": r.md5,
                    "verified": r.verified,
                }
                for r in records
            },
        }
    else:  # pragma: no cover - DataConfig validates the literal
        raise ValueError(f"data.source: unknown source {cfg.source!r}")
    sync = summary.pop("sync")
    rels = [f"widerface/{rel}" for rel in _existing_files(root / "widerface")] + [PRETRAIN_LAYOUT_PATH]
    rels += [f"weights/{name}" for name in cfg.extra_weights]
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": source_info,
        "subset": summary,
        "params": to_dict(cfg),
        "files": _hash_files(root, rels, progress),
    }
    path = root / MANIFEST_NAME
    _write_if_changed(path, json.dumps(manifest, indent=2) + "\n")
    logger.info("download: %s (%s)", path, sync)
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest written by `download`.

    Raises:
        FileNotFoundError / ValueError: missing file, not JSON, or no ``files`` mapping.
    """
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ValueError(f"{path}: no 'files' mapping")
    return data
