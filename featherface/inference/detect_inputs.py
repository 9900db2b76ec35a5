"""Input collection and output naming of ``featherface detect`` (:mod:`featherface.inference.detect`).

Inputs (:func:`collect_inputs`):

- an image file (suffixes :data:`~featherface.inference.images.IMAGE_SUFFIXES`) -> ``<out>/<stem>.jpg`` and
  ``<stem>.json``;
- a folder -> every image under it (recursive), keeping the relative structure:
  ``photos/a/b.png`` -> ``<out>/a/b.jpg`` and ``<out>/a/b.json``; videos inside folders are not processed
  (each is named in a warning and in ``skipped``);
- a video file (:data:`VIDEO_SUFFIXES`) -> ``<out>/<stem>.mp4`` (or ``.avi``, :data:`VIDEO_CODECS`) and
  ``<out>/<stem>.jsonl``.

Output names never collide (:func:`plan_outputs`): a stem whose output files are already claimed in this run
(``a.jpg`` and ``a.png`` in one folder, two ``x.jpg`` from different folders) or would overwrite an input gets
``_1``, ``_2``, ... (inputs are processed in a fixed order, so the names are reproducible).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from featherface.inference.images import IMAGE_SUFFIXES, list_images
from featherface.utils.io import leftover_temps

__all__ = [
    "VIDEO_SUFFIXES",
    "VIDEO_CODECS",
    "OUTPUT_SUFFIXES",
    "VIDEO_IN_FOLDER",
    "InputError",
    "InputItem",
    "InputKind",
    "path_key",
    "is_strictly_inside",
    "list_videos",
    "collect_inputs",
    "plan_outputs",
    "remove_leftover_temps",
]

log = logging.getLogger(__name__)

#: Suffixes read as videos (lower case).
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: Video writers tried in order: (fourcc, container suffix).
VIDEO_CODECS: tuple[tuple[str, str], ...] = (("mp4v", ".mp4"), ("MJPG", ".avi"))

InputKind = Literal["image", "video"]

#: The files each kind of input writes (all video containers are claimed: the writer may fall back to any).
OUTPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".jpg", ".json"),
    "video": tuple(ext for _, ext in VIDEO_CODECS) + (".jsonl",),
}


class InputError(ValueError):
    """An input path of an unknown type, or no usable input at all."""


@dataclass(frozen=True)
class InputItem:
    """One image or video to process.

    Attributes:
        path: the file.
        kind: ``"image"`` or ``"video"``.
        relative: natural output stem relative to the output folder, without suffix (``a/b`` for
            ``photos/a/b.png`` found in the folder ``photos``; ``clip`` for ``clip.mp4``).
        folder: the folder the image was found in, ``None`` for a file named directly. Unreadable images from a
            folder are skipped; named files raise.
    """

    path: Path
    kind: InputKind
    relative: Path
    folder: Path | None = None


def path_key(path: Path) -> str:
    """A comparison key for paths: absolute, normalised, case-folded (safe on case-insensitive file systems)."""
    return os.path.normcase(os.path.abspath(path)).casefold()


def is_strictly_inside(key: str, folder: Path) -> bool:
    """Whether the path with comparison key ``key`` (ending in a separator) lies strictly inside ``folder``."""
    folder_key = path_key(folder) + os.sep
    return key.startswith(folder_key) and key != folder_key


#: Why a video found inside a folder is not processed (folders are searched for images only).
VIDEO_IN_FOLDER = "a video inside a folder: folders are searched for images only; name the video itself to process it"


def list_videos(folder: str | os.PathLike[str]) -> list[Path]:
    """Video files under ``folder`` (recursive, by :data:`VIDEO_SUFFIXES`), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def collect_inputs(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    keep_going: bool = False,
    skipped: dict[str, str] | None = None,
) -> list[InputItem]:
    """Expand the user's paths into images and videos, in the order given (folder contents sorted).

    Args:
        paths: image files, video files and folders (searched recursively for images; videos inside folders
            are not picked up: they are logged with a warning and listed in ``skipped``).
        keep_going: skip (log and list in ``skipped``) a path that does not exist or has an unknown type instead
            of raising.
        skipped: filled with ``{path: reason}`` of what was left out.

    Returns:
        One :class:`InputItem` per distinct file (a file reached twice is kept once, at its first position).

    Raises:
        FileNotFoundError: a path does not exist (unless ``keep_going``).
        InputError: a file with a suffix that is neither an image nor a video one (unless ``keep_going``), or no
            image or video at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    skipped = skipped if skipped is not None else {}
    items: list[InputItem] = []
    seen: set[str] = set()

    def add(item: InputItem) -> None:
        key = path_key(item.path)
        if key in seen:
            log.info("%s given more than once; processed once", item.path)
            return
        seen.add(key)
        items.append(item)

    def refuse(error: Exception, path: Path) -> None:
        if not keep_going:
            raise error
        log.warning("skipping %s: %s", path, error)
        skipped[str(path)] = str(error)

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            refuse(FileNotFoundError(f"input not found: {path}"), path)
        elif path.is_dir():
            images = list_images(path)
            if not images:
                log.warning("no images (%s) under folder %s", " ".join(IMAGE_SUFFIXES), path)
            for image in images:
                add(InputItem(image, "image", image.relative_to(path).with_suffix(""), path))
            for video in list_videos(path):
                log.warning("not processing %s: %s", video, VIDEO_IN_FOLDER)
                skipped[str(video)] = VIDEO_IN_FOLDER
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                add(InputItem(path, "image", Path(path.stem)))
            elif suffix in VIDEO_SUFFIXES:
                add(InputItem(path, "video", Path(path.stem)))
            else:
                refuse(InputError(
                    f"{path}: unknown input type {path.suffix or '(no suffix)'!r}; images: "
                    f"{' '.join(IMAGE_SUFFIXES)}; videos: {' '.join(VIDEO_SUFFIXES)}"
                ), path)
        else:
            refuse(InputError(f"{path}: not a regular file or a folder"), path)
    if not items:
        left_out = "; ".join(f"{p}: {why}" for p, why in list(skipped.items())[:5])
        raise InputError(f"no images or videos found in {[str(p) for p in paths]}"
                         + (f" (left out: {left_out})" if left_out else ""))
    return items


def plan_outputs(items: Sequence[InputItem], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Unique output stems (``out_dir / relative``, without suffix), one per item, in order.

    A stem whose output files (``.jpg`` ``.json`` for an image; ``.mp4`` ``.avi`` ``.jsonl`` for a video) are
    already claimed by an earlier item, or would overwrite one of the inputs, gets the first free ``_1``, ``_2``, ...
    suffix. An image and a video may share a stem (their files differ). Comparisons ignore case.
    """
    out_dir = Path(out_dir)
    taken = {path_key(item.path) for item in items}
    stems: list[Path] = []
    for item in items:
        base = out_dir / item.relative
        candidate, n = base, 0
        while True:
            files = {path_key(candidate.parent / (candidate.name + ext)) for ext in OUTPUT_SUFFIXES[item.kind]}
            if not files & taken:
                break
            n += 1
            candidate = base.parent / f"{base.name}_{n}"
        if n:
            log.info("output name %s taken; %s is written as %s", base.name, item.path, candidate.name)
        taken |= files
        stems.append(candidate)
    return stems


def remove_leftover_temps(stem: Path, kind: InputKind) -> list[Path]:
    """Delete the temporary files a killed run left beside the outputs of ``stem``; returns them."""
    removed = []
    for ext in OUTPUT_SUFFIXES[kind]:
        for tmp in leftover_temps(stem.parent / (stem.name + ext)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(str(p) for p in removed))
    return removed

