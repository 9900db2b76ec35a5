"""WIDER FACE prediction files: the official `<event>/<name>.txt` layout, read and written.

One file per image, `<pred_dir>/<event>/<name>.txt`::

    <name>.jpg            image name (the official kit writes it; RetinaFace-style code writes `<name>`)
    <count>               number of detections
    x y w h score         one line per detection: top-left corner, width, height in pixels; confidence

How the widely used Python port of the official evaluation (wondervictor's `evaluation.py`, shipped in
biubug6/Pytorch_Retinaface) reads these files, and what this reader does instead:

- it keys the image by the *first line* (the part after the last ``/``, less ``.jpg``), not by the file name;
  here the first line must name the same image as the file (``<name>``, ``<name>.jpg`` or ``<event>/<name>.jpg``),
  otherwise a :class:`PredictionFileError` names the file;
- it ignores the count line; here it must be an integer equal to the number of detection lines;
- it splits lines on single spaces, skips lines that start with a space and ignores columns beyond the fifth;
  here lines are split on any whitespace (so RetinaFace's trailing ``" \\n"`` and ``\\r\\n`` endings are fine),
  blank lines are skipped, and a line must hold exactly five numbers;
- negative widths or heights and non-finite values (which the reference would silently turn into nonsense
  areas or a division by zero) are rejected, naming file and line.

Writing uses the shortest text that parses back to the same float64 (``repr``), so a written file is read back
to exactly the values it was written from, and goes through a temporary file and a rename so an interrupted
run never leaves a half-written prediction file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from featherface.utils.io import write_text_atomic

__all__ = [
    "PredictionFileError",
    "check_detections",
    "prediction_key",
    "read_prediction_file",
    "read_prediction_folder",
    "split_key",
    "write_prediction_file",
    "write_prediction_folder",
]

log = logging.getLogger(__name__)

NUM_COLUMNS = 5  # x, y, w, h, score


class PredictionFileError(ValueError):
    """A prediction file or prediction array that does not follow the official layout."""


def prediction_key(event: str, name: str) -> str:
    """The key of one image, ``"<event>/<name>"`` (name without ``.jpg``), as used for GT and predictions."""
    return f"{event}/{name}"


def split_key(key: str) -> tuple[str, str]:
    """``"<event>/<name>"`` -> ``(event, name)``; :class:`PredictionFileError` naming a malformed key."""
    event, sep, name = key.partition("/")
    if not sep or not event or not name or "/" in name:
        raise PredictionFileError(f"prediction key {key!r}: expected '<event>/<name>'")
    return event, name


def _image_name_from_header(header: str) -> str:
    """The image name on a file's first line: the part after the last ``/``, without a ``.jpg`` suffix."""
    name = header.strip().rsplit("/", 1)[-1]
    return name[: -len(".jpg")] if name.endswith(".jpg") else name


def _locate_bad_line(path: Path, lines: list[str], first_body_line: int) -> str:
    """A message naming the first detection line (1-based) that is not five numbers."""
    for offset, line in enumerate(lines[first_body_line:]):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}, line {first_body_line + offset + 1}"
        if len(tokens) != NUM_COLUMNS:
            return f"{where}: expected {NUM_COLUMNS} values (x y w h score), got {len(tokens)}: {line.strip()!r}"
        for token in tokens:
            try:
                float(token)
            except ValueError:
                return f"{where}: {token!r} is not a number: {line.strip()!r}"
    return f"{path}: malformed detection lines"  # not reached when called on a failing file


def _bad_rows(dets: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``dets`` (N, 5) with a non-finite value or a negative width or height."""
    return np.flatnonzero(~np.isfinite(dets).all(axis=1) | (dets[:, 2] < 0) | (dets[:, 3] < 0))


def _describe_bad_row(row: np.ndarray) -> str:
    return "non-finite value" if not np.isfinite(row).all() else "negative width or height"


def check_detections(dets: np.ndarray, where: str) -> None:
    """Raise :class:`PredictionFileError` unless every row of ``dets`` (N, 5) is finite with w, h >= 0.

    ``where`` names the source (an in-memory key); the message gives the first bad row and how many are bad.
    """
    bad = _bad_rows(dets)
    if bad.size:
        row = int(bad[0])
        raise PredictionFileError(
            f"{where}, row {row}: {_describe_bad_row(dets[row])} in detection {dets[row].tolist()} "
            f"({bad.size} bad detection(s) in all)"
        )


def read_prediction_file(path: str | os.PathLike[str]) -> tuple[str, np.ndarray]:
    """Read one prediction file.

    Args:
        path: ``<event>/<name>.txt``.

    Returns:
        ``(name, dets)``: the image name (the file stem, checked against the first line) and the detections,
        float64 (N, 5) ``x, y, w, h, score`` in file order (N may be 0).

    Raises:
        PredictionFileError: naming the file and line when the file does not follow the layout.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise PredictionFileError(f"{path}: not a text file ({err})") from err
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise PredictionFileError(f"{path}, line 1: expected the image name (`{path.stem}.jpg`), file is empty")
    name = _image_name_from_header(lines[0])
    if name != path.stem:
        raise PredictionFileError(
            f"{path}, line 1: names image {name!r} but the file is for {path.stem!r} "
            f"(the first line must be `{path.stem}.jpg`)"
        )
    if len(lines) < 2:
        raise PredictionFileError(f"{path}, line 2: missing the detection count")
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise PredictionFileError(
            f"{path}, line 2: detection count must be an integer, got {lines[1].strip()!r}"
        ) from None
    if count < 0:
        raise PredictionFileError(f"{path}, line 2: negative detection count {count}")
    rows = [tokens for tokens in (line.split() for line in lines[2:]) if tokens]
    if len(rows) != count:
        raise PredictionFileError(f"{path}, line 2: declares {count} detection(s) but the file lists {len(rows)}")
    if count == 0:
        return name, np.zeros((0, NUM_COLUMNS), dtype=np.float64)
    if any(len(tokens) != NUM_COLUMNS for tokens in rows):
        raise PredictionFileError(_locate_bad_line(path, lines, 2))
    try:
        dets = np.array(rows, dtype=np.float64)
    except ValueError:
        raise PredictionFileError(_locate_bad_line(path, lines, 2)) from None
    bad = _bad_rows(dets)
    if bad.size:
        row = int(bad[0])
        line_index = [i for i, line in enumerate(lines) if i >= 2 and line.split()][row]
        raise PredictionFileError(
            f"{path}, line {line_index + 1}: {_describe_bad_row(dets[row])} in detection "
            f"{lines[line_index].strip()!r}"
        )
    return name, dets


def read_prediction_folder(pred_dir: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every ``<event>/<name>.txt`` under ``pred_dir``.

    Other files (and anything deeper than one folder) are ignored, with a debug log; temporary files of an
    interrupted writer (``.<name>.txt.<random>.tmp``) are therefore never read.

    Returns:
        ``{"<event>/<name>": dets}`` with dets float64 (N, 5), sorted by key.

    Raises:
        FileNotFoundError: ``pred_dir`` does not exist.
        PredictionFileError: a malformed file, ``.txt`` files at the top level (not inside an event folder),
            or no prediction file at all.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"prediction folder {root} does not exist")
    preds: dict[str, np.ndarray] = {}
    stray: list[str] = []
    with os.scandir(root) as top:
        entries = sorted(top, key=lambda e: e.name)
    for entry in entries:
        if not entry.is_dir():
            if entry.name.endswith(".txt"):
                stray.append(entry.name)
            continue
        with os.scandir(entry.path) as inner:
            files = sorted(inner, key=lambda e: e.name)
        for item in files:
            if not (item.name.endswith(".txt") and item.is_file()):
                log.debug("ignoring %s (not a prediction file)", item.path)
                continue
            name, dets = read_prediction_file(item.path)
            preds[prediction_key(entry.name, name)] = dets
    if stray:
        raise PredictionFileError(
            f"{root}: prediction files must lie in <event>/ folders, found {len(stray)} at the top level "
            f"(e.g. {stray[0]})"
        )
    if not preds:
        raise PredictionFileError(f"{root}: no prediction files (<event>/<name>.txt) found")
    log.debug("read %d prediction files from %s", len(preds), root)
    return preds


def _format_detections(name: str, dets: np.ndarray) -> str:
    """The text of one prediction file; floats as ``repr`` so that parsing gives back the same float64."""
    lines = [f"{name}.jpg", str(len(dets))]
    lines.extend(" ".join(map(repr, row)) for row in dets.tolist())
    return "\n".join(lines) + "\n"


def _as_detections(dets: np.ndarray, where: str) -> np.ndarray:
    """``dets`` as float64 (N, 5), validated (shape, finite, w and h >= 0)."""
    arr = np.asarray(dets, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, NUM_COLUMNS)
    if arr.ndim != 2 or arr.shape[1] != NUM_COLUMNS:
        raise PredictionFileError(f"{where}: detections must have shape (N, 5) = x y w h score, got {arr.shape}")
    check_detections(arr, where)
    return arr


def write_prediction_file(path: str | os.PathLike[str], dets: np.ndarray) -> Path:
    """Write one prediction file atomically (temporary file + rename).

    Args:
        path: ``<event>/<name>.txt``; the folder is created. The first line is ``<name>.jpg``.
        dets: (N, 5) ``x, y, w, h, score`` in pixels, in the order the file should list them.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix != ".txt":
        raise ValueError(f"{path}: prediction files are named <name>.txt")
    arr = _as_detections(dets, str(path))
    write_text_atomic(path, _format_detections(path.stem, arr))
    return path


def write_prediction_folder(preds: Mapping[str, np.ndarray], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``{"<event>/<name>": dets (N, 5)}`` as ``out_dir/<event>/<name>.txt`` files, each atomically.

    Every array is validated before anything is written, so bad input leaves ``out_dir`` untouched.

    Returns:
        The paths written, in key order.
    """
    root = Path(out_dir)
    checked: list[tuple[Path, np.ndarray]] = []
    for key in sorted(preds):
        event, name = split_key(key)
        checked.append((root / event / f"{name}.txt", _as_detections(preds[key], f"prediction {key!r}")))
    for folder in {path.parent for path, _ in checked}:
        folder.mkdir(parents=True, exist_ok=True)
    for path, arr in checked:
        write_text_atomic(path, _format_detections(path.stem, arr))
    log.debug("wrote %d prediction files under %s", len(checked), root)
    return [path for path, _ in checked]
