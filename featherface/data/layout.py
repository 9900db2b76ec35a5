"""Building ``<data.root>`` from a source tree: the WIDER FACE subset and the backbone weights.

The source tree is a local copy in the layout of ``../shared`` (``data.source: local``) or the staging layout
the ``gdown`` source extracts its archives into (`featherface.data.archives`). `build_layout` applies the
subset (the first ``data.train_images`` train images in sorted order with ``label.txt`` restricted to them,
the first ``data.val_images`` val images; 0 keeps all; the ``.mat`` files are always whole) and `sync_tree`
makes ``<root>/widerface`` hold exactly those files: files already present and identical are kept, files no
longer in the subset disappear, and the new tree is written into a temporary folder and swapped in with
renames, so an interrupted run never leaves a half-built tree. A run that changes nothing touches nothing.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from featherface.config import DataConfig
from featherface.data.labels import count_faces, parse_label_lines, read_label_file, restrict_label_text
from featherface.data.sources import PRETRAIN_LAYOUT_PATH, VAL_MAT_FILES
from featherface.utils.io import ProgressCallback, atomic_target

__all__ = [
    "IMAGE_SUFFIXES",
    "DataSourceError",
    "PlannedFile",
    "build_layout",
    "copy_extra_weights",
    "files_under",
    "list_images",
    "plan_widerface",
    "sync_tree",
]

logger = logging.getLogger(__name__)

#: File suffixes taken as images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataSourceError(FileNotFoundError):
    """A local source folder or file is missing; the message names every missing path."""


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
    """Raise `DataSourceError` naming every missing folder or file of a source tree."""
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
    """Whether the file at `existing` already holds what `planned` would write."""
    if not existing.is_file():
        return False
    if planned.data is not None:
        return existing.stat().st_size == len(planned.data) and existing.read_bytes() == planned.data
    assert planned.src is not None
    # Same size and mtime (copies keep the mtime) counts as identical, else the bytes are compared.
    return filecmp.cmp(planned.src, existing, shallow=True)


def _materialize(planned: PlannedFile, target: Path, link: bool) -> None:
    """Create `target` from `planned`: its bytes, or its source hard-linked (`link`; a copy when that fails)
    or copied."""
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


def files_under(folder: Path) -> set[str]:
    """Relative POSIX paths of the files (and symbolic links) anywhere under `folder`; empty when it is absent."""
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
    existing = files_under(target)
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
            if progress is not None:
                progress(index, len(plan), f"writing {target.name}")
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
    """Make `target` a copy (or hard link) of `src`, atomically; False when already identical."""
    planned = PlannedFile(src=src)
    if _identical(planned, target):
        return False
    with atomic_target(target) as tmp:
        tmp.unlink()  # a hard link needs a free name
        _materialize(planned, tmp, link=link)
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


def copy_extra_weights(weights_dir: Path, root: Path, names: Sequence[str]) -> None:
    """Copy the checkpoints named in ``data.extra_weights`` from `weights_dir` into ``<root>/weights``."""
    missing = [str(weights_dir / name) for name in names if not (weights_dir / name).is_file()]
    if missing:
        raise DataSourceError("data.extra_weights: missing source files: " + ", ".join(missing))
    for name in names:
        _sync_file(weights_dir / name, root / "weights" / name, link=False)
