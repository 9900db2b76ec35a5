"""A compact copy of training folders, for machines that receive the project as a small upload (a lent GPU).

:func:`pack_train_folders` merges several training folders (``images/<event>/<name>.jpg`` + ``label.txt`` in the
RetinaFace layout, :mod:`featherface.data.labels`) into one, with every image downscaled so that its longer side is
at most ``max_side`` pixels and re-encoded as JPEG at ``quality``; the label coordinates (boxes and landmarks) are
scaled by the same factor, the visibility flags and blur scores kept. Measured on the 999 train images (119 MB as JPEG
quality 70 at full size; ``featherface pack``): 98.6 MiB at 1024 px and quality 60, 50.7 MiB at 800 px and quality 50
(the defaults, which leave room for the code under a 64 MiB upload).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2

from featherface.data.dataset import read_image
from featherface.data.labels import label_file_blocks
from featherface.utils.io import replace_dir, write_text_atomic

__all__ = ["PackSummary", "pack_train_folders", "scale_face_line"]

log = logging.getLogger(__name__)

#: Positions, on a 20-number face line, of the numbers that are pixel coordinates (box and landmark x, y).
_COORDINATES = (0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17)


@dataclass
class PackSummary:
    """What :func:`pack_train_folders` wrote: image count, bytes of the images, images that were downscaled."""

    images: int = 0
    bytes: int = 0
    downscaled: int = 0


def scale_face_line(line: str, factor: float) -> str:
    """One face line with its pixel coordinates multiplied by ``factor`` (``-1`` placeholders kept)."""
    fields = line.split()
    if not fields:
        return line
    values = [float(v) for v in fields]
    for i in _COORDINATES:
        if i < len(values) and not (i >= 4 and values[i] == -1.0):
            values[i] *= factor
    return " ".join(f"{v:.2f}".rstrip("0").rstrip(".") if v != -1.0 else "-1.0" for v in values) + "\n"


def pack_train_folders(folders: Sequence[str | Path], out: str | Path, max_side: int = 800,
                       quality: int = 50) -> PackSummary:
    """Merge ``folders`` into ``out`` (``images/`` + one ``label.txt``), downscaled and re-encoded.

    Args:
        folders: training folders, each with ``images/`` and ``label.txt``; an image path may appear in one only.
        out: the folder to write (replaced when it exists).
        max_side: longest image side after packing, pixels.
        quality: JPEG quality, 1-100.

    Raises:
        ValueError: an image listed twice, or bad ``max_side`` / ``quality``.
        FileNotFoundError, ImageReadError: a listed image that is missing or does not decode.
    """
    if max_side < 32 or not 1 <= quality <= 100:
        raise ValueError(f"pack: max_side must be >= 32 and quality in 1..100, got {max_side} and {quality}")
    out = Path(out)
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    summary = PackSummary()
    labels: list[str] = []
    seen: set[str] = set()
    for folder in map(Path, folders):
        for name, block in label_file_blocks((folder / "label.txt").read_text()):
            if name is None:
                continue
            if name in seen:
                raise ValueError(f"pack: {name} is listed by more than one folder (second: {folder})")
            seen.add(name)
            image = read_image(folder / "images" / name)
            height, width = image.shape[:2]
            factor = min(1.0, max_side / max(height, width))
            if factor < 1.0:
                size = (max(1, round(width * factor)), max(1, round(height * factor)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                factor = size[0] / width  # the factor the width really got
                summary.downscaled += 1
            target = staging / "images" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise OSError(f"pack: could not write {target}")
            summary.images += 1
            summary.bytes += target.stat().st_size
            header, *faces = block.splitlines(keepends=True)
            labels.append(header if header.endswith("\n") else header + "\n")
            labels.extend(scale_face_line(line, factor) for line in faces if line.strip())
    write_text_atomic(staging / "label.txt", "".join(labels))
    replace_dir(staging, out)
    log.info("pack: %d images (%d downscaled), %.1f MB, into %s", summary.images, summary.downscaled,
             summary.bytes / 1e6, out)
    return summary
