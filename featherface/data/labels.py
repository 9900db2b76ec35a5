"""Reader for the RetinaFace / WIDER FACE training label file (``train/label.txt``).

The layout is the one published with RetinaFace (Deng et al., "RetinaFace: Single-stage Dense Face
Localisation in the Wild", CVPR 2020; distributed as ``retinaface_gt_v1.1.zip`` and used by
biubug6/Pytorch_Retinaface):

.. code-block:: text

    # <event>/<name>.jpg
    x y w h  l0x l0y v0  l1x l1y v1  l2x l2y v2  l3x l3y v3  l4x l4y v4  blur
    ...

One ``#`` header per image (path relative to ``train/images``), then one line per face: a box
(top-left corner, width and height, in pixels), five landmarks (left eye, right eye, nose, left mouth
corner, right mouth corner; pixel coordinates and a visibility flag) and a blur score: 4 + 15 + 1 = 20
numbers. Faces without landmarks carry ``-1`` in the 15 landmark fields (and usually in the blur field).
Lines of only 4 numbers (boxes only) are accepted too.

Everything here is pure parsing: no images are opened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

#: Numbers on a face line with landmarks: box (4) + 5 landmarks x (x, y, visibility) (15) + blur (1).
FULL_LINE_FIELDS = 20
#: Numbers on a boxes-only face line.
BOX_LINE_FIELDS = 4
#: Number of landmarks per face.
NUM_LANDMARKS = 5


class LabelFormatError(ValueError):
    """A label file line that does not follow the layout; names the file and the 1-based line number."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True, eq=False)
class ImageLabels:
    """The faces of one image.

    Attributes:
        path: image path relative to the ``images`` folder, POSIX separators (``0--Parade/x.jpg``).
        boxes: (N, 4) float32, ``x, y, w, h`` in pixels (top-left corner, width, height).
        landmarks: (N, 5, 2) float32 pixel coordinates; ``-1`` for faces without landmarks.
        has_landmarks: (N,) bool, True where the face carries landmarks.
        visibility: (N, 5) float32, the per-landmark flag of the file (``-1`` without landmarks).
        blur: (N,) float32, the trailing blur score (``-1`` when absent).
        line: 1-based line number of the ``#`` header in its file (0 when built in memory).
    """

    path: str
    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray
    visibility: np.ndarray
    blur: np.ndarray
    line: int = 0

    @property
    def num_faces(self) -> int:
        """N, the number of faces."""
        return int(self.boxes.shape[0])

    def select(self, keep: np.ndarray) -> "ImageLabels":
        """The faces where the (N,) bool mask `keep` is True."""
        return ImageLabels(
            path=self.path,
            boxes=self.boxes[keep],
            landmarks=self.landmarks[keep],
            has_landmarks=self.has_landmarks[keep],
            visibility=self.visibility[keep],
            blur=self.blur[keep],
            line=self.line,
        )


def _check_image_path(raw: str, path: str | Path, line: int) -> str:
    name = raw.strip()
    if not name:
        raise LabelFormatError(path, line, "image header '#' without an image path")
    name = name.replace("\\", "/")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise LabelFormatError(path, line, f"image path {name!r} must be relative, without '..'")
    return name


def _parse_face(raw: str, path: str | Path, line: int) -> list[float]:
    fields = raw.split()
    if len(fields) not in (FULL_LINE_FIELDS, BOX_LINE_FIELDS):
        raise LabelFormatError(
            path, line,
            f"expected {FULL_LINE_FIELDS} numbers (box, 5 landmarks, blur) or {BOX_LINE_FIELDS} (box only), "
            f"got {len(fields)}",
        )
    values = []
    for index, field in enumerate(fields):
        try:
            value = float(field)
        except ValueError:
            raise LabelFormatError(path, line, f"field {index + 1} is not a number: {field!r}") from None
        if not math.isfinite(value):
            raise LabelFormatError(path, line, f"field {index + 1} is not finite: {field!r}")
        values.append(value)
    return values


def _build(name: str, header_line: int, faces: list[list[float]]) -> ImageLabels:
    n = len(faces)
    boxes = np.empty((n, 4), np.float32)
    landmarks = np.full((n, NUM_LANDMARKS, 2), -1.0, np.float32)
    visibility = np.full((n, NUM_LANDMARKS), -1.0, np.float32)
    blur = np.full((n,), -1.0, np.float32)
    has = np.zeros((n,), bool)
    for i, values in enumerate(faces):
        boxes[i] = values[:4]
        if len(values) == FULL_LINE_FIELDS:
            points = np.asarray(values[4:19], np.float32).reshape(NUM_LANDMARKS, 3)
            blur[i] = values[19]
            # The RetinaFace file marks "no landmarks" with -1 in every landmark field.
            if not np.all(points == -1.0):
                has[i] = True
                landmarks[i] = points[:, :2]
                visibility[i] = points[:, 2]
    return ImageLabels(name, boxes, landmarks, has, visibility, blur, header_line)


def parse_label_lines(
    lines: Iterable[str],
    path: str | Path = "<memory>",
    errors: list[LabelFormatError] | None = None,
) -> list[ImageLabels]:
    """Parse the lines of a label file.

    Args:
        lines: the file's lines (with or without trailing newlines).
        path: the file name used in error messages.
        errors: when None, the first malformed line raises; when a list, every malformed line is
            appended to it and skipped (a face line before any header is skipped too), so a caller can
            report them all.

    Returns:
        One `ImageLabels` per ``#`` header, in file order.

    Raises:
        LabelFormatError: (only when `errors` is None) for a face line before any header, a wrong number
            of fields, a non-numeric or non-finite field, an empty or unsafe image path, or an image
            listed twice; the message names `path` and the 1-based line number.
    """
    images: list[ImageLabels] = []
    seen: dict[str, int] = {}
    current: tuple[str, int] | None = None
    had_header = False
    faces: list[list[float]] = []

    def fail(err: LabelFormatError) -> None:
        if errors is None:
            raise err
        errors.append(err)

    def flush() -> None:
        if current is not None:
            images.append(_build(current[0], current[1], faces))

    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        if text.startswith("#"):
            had_header = True
            try:
                name = _check_image_path(text[1:], path, number)
            except LabelFormatError as err:
                fail(err)
                flush()
                current, faces = None, []
                continue
            if name in seen:
                fail(LabelFormatError(path, number, f"image {name!r} already listed at line {seen[name]}"))
                flush()
                current, faces = None, []
                continue
            flush()
            seen[name] = number
            current, faces = (name, number), []
            continue
        if current is None:
            # A face before the first header is an error; faces under a rejected header were
            # already reported through that header.
            if not had_header:
                fail(LabelFormatError(path, number, "face line before any '# <image path>' header"))
            continue
        try:
            faces.append(_parse_face(text, path, number))
        except LabelFormatError as err:
            fail(err)
    flush()
    return images


def read_label_file(path: str | Path) -> list[ImageLabels]:
    """Read a RetinaFace ``label.txt``; the first malformed line raises.

    Raises:
        FileNotFoundError: when `path` does not exist.
        LabelFormatError: naming the file and line (see `parse_label_lines`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        return parse_label_lines(handle, path)


def scan_label_file(path: str | Path) -> tuple[list[ImageLabels], list[LabelFormatError]]:
    """Read a label file, collecting every malformed line instead of stopping at the first.

    Returns:
        (images parsed from the well-formed lines, one `LabelFormatError` per malformed line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    errors: list[LabelFormatError] = []
    with open(path, encoding="utf-8") as handle:
        images = parse_label_lines(handle, path, errors)
    return images, errors


def drop_degenerate_boxes(images: Sequence[ImageLabels]) -> tuple[list[ImageLabels], int]:
    """Remove faces whose box has ``w <= 0`` or ``h <= 0``.

    Returns:
        (the images with those faces removed, in the same order; the number of faces dropped).
    """
    kept: list[ImageLabels] = []
    dropped = 0
    for image in images:
        valid = (image.boxes[:, 2] > 0) & (image.boxes[:, 3] > 0)
        dropped += int((~valid).sum())
        kept.append(image if bool(valid.all()) else image.select(valid))
    return kept, dropped


def label_file_blocks(text: str) -> list[tuple[str | None, str]]:
    """Split label-file text into per-image blocks, keeping the original bytes of each line.

    Returns:
        A list of (image path or None for text before the first header, the block's text including its
        header line), in file order; concatenating the texts gives back `text`.
    """
    blocks: list[tuple[str | None, str]] = []
    name: str | None = None
    chunk: list[str] = []
    for raw in text.splitlines(keepends=True):
        stripped = raw.strip()
        if stripped.startswith("#"):
            if chunk:
                blocks.append((name, "".join(chunk)))
            name, chunk = stripped[1:].strip().replace("\\", "/"), [raw]
        else:
            chunk.append(raw)
    if chunk:
        blocks.append((name, "".join(chunk)))
    return blocks


def restrict_label_text(text: str, keep: Iterable[str]) -> str:
    """The label-file text restricted to the images in `keep` (relative paths), lines kept verbatim.

    Image order is the file's; text before the first header is dropped.
    """
    wanted = set(keep)
    return "".join(block for name, block in label_file_blocks(text) if name is not None and name in wanted)


def count_faces(images: Sequence[ImageLabels]) -> tuple[int, int]:
    """(number of faces, number of faces with landmarks) over `images`."""
    faces = sum(image.num_faces for image in images)
    landmarked = sum(int(image.has_landmarks.sum()) for image in images)
    return faces, landmarked
