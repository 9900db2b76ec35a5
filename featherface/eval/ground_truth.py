"""The official WIDER FACE val ground truth: boxes and the Easy / Medium / Hard face lists of every image.

Read from the evaluation kit's ``.mat`` files (``wider_face_val.mat``: events, image names and boxes;
``wider_{easy,medium,hard}_val.mat``: per setting, the 1-based indices of the faces it counts) into the flat
arrays the vectorised evaluation (:mod:`featherface.eval.widerface`) works on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.io

from featherface.eval.prediction_files import prediction_key

__all__ = [
    "FACE_FILE",
    "GT_FILES",
    "SETTINGS",
    "GroundTruthImage",
    "WiderGroundTruth",
    "load_ground_truth",
    "mat_string",
]

log = logging.getLogger(__name__)

#: The settings, in the order results are reported.
SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")
FACE_FILE = "wider_face_val.mat"
#: The official files, by role: ``face`` (boxes) and one face list per setting.
GT_FILES: dict[str, str] = {
    "face": FACE_FILE,
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}


@dataclass(frozen=True)
class GroundTruthImage:
    """The ground truth of one image.

    Attributes:
        event: event folder, e.g. ``"0--Parade"``.
        name: image name without ``.jpg``, e.g. ``"0_Parade_marchingband_1_465"``.
        boxes: float64 (N, 4) ``x, y, w, h`` in pixels (top-left corner; official boxes, some with w or h <= 0).
        listed: per setting (``"easy"``, ``"medium"``, ``"hard"``), int64 (K,) 1-based indices into ``boxes``
            of the faces the setting counts; the other faces are ignored (matching them is neither a hit nor
            a false positive).
    """

    event: str
    name: str
    boxes: np.ndarray
    listed: Mapping[str, np.ndarray]

    @property
    def key(self) -> str:
        """``"<event>/<name>"``."""
        return prediction_key(self.event, self.name)


class WiderGroundTruth:
    """Ground truth of a set of images, with the flat arrays the vectorised evaluation works on.

    Build it with :func:`load_ground_truth` (the official ``.mat`` files) or directly from
    :class:`GroundTruthImage` objects (tests, other datasets). Load once and pass it to :func:`evaluate`
    to evaluate several prediction sets without re-reading the ``.mat`` files.

    Attributes:
        images: the images, in ground-truth order.
        index: ``{"<event>/<name>": position in images}``.
        boxes: float64 (F, 4) all faces' ``x, y, w, h``, image after image.
        offsets: int64 (I + 1,) image ``i`` owns ``boxes[offsets[i]:offsets[i + 1]]``.
        listed_mask: per setting, bool (F,) whether the face is listed (counted) by that setting.
        listed_count: per setting, int64 (I,) number of listed faces per image.
    """

    def __init__(self, images: Sequence[GroundTruthImage], settings: Sequence[str] = SETTINGS) -> None:
        self.images: tuple[GroundTruthImage, ...] = tuple(images)
        self.settings: tuple[str, ...] = tuple(settings)
        self.index: dict[str, int] = {}
        counts = np.zeros(len(self.images), dtype=np.int64)
        box_list: list[np.ndarray] = []
        for i, image in enumerate(self.images):
            if image.key in self.index:
                raise ValueError(f"ground truth lists image {image.key!r} twice")
            self.index[image.key] = i
            boxes = np.asarray(image.boxes, dtype=np.float64)
            if boxes.size == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"ground truth {image.key!r}: boxes must have shape (N, 4), got {boxes.shape}")
            counts[i] = len(boxes)
            box_list.append(boxes)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.boxes = np.concatenate(box_list) if box_list else np.zeros((0, 4))
        self.listed_mask: dict[str, np.ndarray] = {}
        self.listed_count: dict[str, np.ndarray] = {}
        for setting in self.settings:
            lists = []
            for image in self.images:
                if setting not in image.listed:
                    raise ValueError(f"ground truth {image.key!r}: no face list for setting {setting!r}")
                lists.append(np.asarray(image.listed[setting], dtype=np.int64).reshape(-1))
            per_image = np.array([len(idx) for idx in lists], dtype=np.int64)
            flat = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
            owner = np.repeat(np.arange(len(self.images)), per_image)
            out_of_range = np.flatnonzero((flat < 1) | (flat > counts[owner]))
            if out_of_range.size:
                i = int(owner[out_of_range[0]])
                raise ValueError(
                    f"ground truth {self.images[i].key!r}, setting {setting!r}: face index "
                    f"{int(flat[out_of_range[0]])} is outside 1..{counts[i]} (indices are 1-based)"
                )
            face = self.offsets[owner] + flat - 1
            repeated = np.flatnonzero(np.bincount(face, minlength=len(self.boxes)) > 1)
            if repeated.size:
                i = int(np.searchsorted(self.offsets, repeated[0], side="right") - 1)
                raise ValueError(f"ground truth {self.images[i].key!r}, setting {setting!r}: repeated face indices")
            mask = np.zeros(len(self.boxes), dtype=bool)
            mask[face] = True
            self.listed_mask[setting] = mask
            self.listed_count[setting] = per_image
        for arr in (self.offsets, self.boxes, *self.listed_mask.values(), *self.listed_count.values()):
            arr.setflags(write=False)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: str) -> GroundTruthImage:
        return self.images[self.index[key]]

    @property
    def num_faces(self) -> dict[str, int]:
        """Listed faces per setting over all images."""
        return {s: int(c.sum()) for s, c in self.listed_count.items()}


def mat_string(cell: Any) -> str:
    """A MATLAB char array as ``loadmat`` returns it inside a cell (``array(['name'], dtype='<U..')``) as a
    Python string; ``""`` for an empty one."""
    arr = np.asarray(cell).reshape(-1)
    return str(arr[0]) if arr.size else ""


def _loadmat(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    try:
        mat = scipy.io.loadmat(str(path), variable_names=list(keys))
    except Exception as err:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: cannot be read as a MATLAB .mat file ({err})") from err
    missing = [k for k in keys if k not in mat]
    if missing:
        raise ValueError(f"{path}: missing variable(s) {missing} (is this the official WIDER FACE file?)")
    return mat


def _mat_names(mat: Mapping[str, Any], path: Path) -> tuple[list[str], list[list[str]]]:
    """Events and per-event image names of one official .mat file."""
    events = [mat_string(e[0]) for e in mat["event_list"]]
    files = [[mat_string(f[0]) for f in mat["file_list"][i][0]] for i in range(len(events))]
    if len(mat["file_list"]) != len(events):
        raise ValueError(f"{path}: event_list and file_list disagree in length")
    return events, files


def load_ground_truth(gt_dir: str | os.PathLike[str]) -> WiderGroundTruth:
    """Read the official WIDER FACE val ground truth.

    Args:
        gt_dir: folder with ``wider_face_val.mat`` (boxes) and ``wider_{easy,medium,hard}_val.mat`` (face lists).

    Returns:
        The ground truth of all images (3,226 for the official val set), in the files' order.

    Raises:
        FileNotFoundError: naming every missing file.
        ValueError: a file without the expected variables, or files that disagree on events or images.
    """
    root = Path(gt_dir)
    missing = [name for name in GT_FILES.values() if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"WIDER FACE ground truth folder {root} lacks {', '.join(missing)}")
    face_path = root / GT_FILES["face"]
    face = _loadmat(face_path, ("face_bbx_list", "event_list", "file_list"))
    events, files = _mat_names(face, face_path)
    lists: dict[str, Any] = {}
    for setting in SETTINGS:
        path = root / GT_FILES[setting]
        mat = _loadmat(path, ("gt_list", "event_list", "file_list"))
        if _mat_names(mat, path) != (events, files):
            raise ValueError(f"{path}: its events or images differ from those of {face_path}")
        lists[setting] = mat["gt_list"]
    images: list[GroundTruthImage] = []
    for i, event in enumerate(events):
        for j, name in enumerate(files[i]):
            boxes = np.asarray(face["face_bbx_list"][i][0][j][0], dtype=np.float64).reshape(-1, 4)
            listed = {
                s: np.asarray(lists[s][i][0][j][0], dtype=np.int64).reshape(-1) for s in SETTINGS
            }
            images.append(GroundTruthImage(event=event, name=name, boxes=boxes, listed=listed))
    gt = WiderGroundTruth(images)
    log.debug("loaded WIDER FACE ground truth from %s: %d images, faces %s", root, len(gt), gt.num_faces)
    return gt
