"""A torch-free FeatherFace detector: an ONNX export run by onnxruntime, with numpy post-processing.

Needs only numpy, OpenCV and onnxruntime (``pip install featherface[runtime]``); importing this module never
imports torch. It mirrors :class:`featherface.inference.detector.FaceDetector` step for step, so that both give the same
detections (same set, same order, boxes within float rounding):

    >>> detector = OnnxFaceDetector("featherface_v1.onnx", **WIDER_SETTINGS.as_kwargs())
    >>> dets = detector("group.jpg")                 # one image -> RuntimeDetections
    >>> dets.boxes, dets.scores, dets.landmarks      # (N, 4) xyxy px, (N,), (N, 5, 2) px (numpy)

The ONNX file is what :func:`featherface.deploy.export.export_onnx` writes: input ``input`` ``(B, 3, H, W)`` float32,
BGR minus the mean (104, 117, 123), no scaling; outputs ``loc`` ``(B, P, 4)``, ``logits`` ``(B, P, 2)`` and
``landmarks`` ``(B, P, 10)`` (raw regressions against the priors). What this module re-implements in numpy,
with the floating-point operation order of the torch code, is:

- image reading and normalisation (:func:`read_image`, :func:`to_bgr`, :func:`resize_long_side` from
  :mod:`featherface.inference.images`, which does not import torch);
- priors (:func:`make_priors`, :mod:`featherface.ops.priors`), computed in float64 and rounded once;
- box and landmark decoding (:func:`decode_boxes`, :func:`decode_landmarks`, variances 0.1 and 0.2);
- face probability ``softmax(logits)[..., 1]`` (:func:`face_scores`);
- candidates ``score > threshold`` by decreasing score, stable, top-k (:func:`select_candidates`);
- greedy NMS with the reference "+1" pixel convention and the float32 comparison of ``torchvision.ops.nms``
  (:func:`nms`), then the first ``max_detections`` survivors (:func:`detect_from_outputs`).

Differences that remain are those of the two math libraries (``exp`` may differ in the last bit), far below
the 1e-3 px the tests allow. Images are run one at a time (a batch of one): a dynamic export accepts any size
and ONNX batching brings little on the CPU. A file exported with a fixed input size (``dynamic=False``) gets
every image resized to fit that size (aspect ratio kept) and padded at the bottom and right with the mean
colour (a zero network input); detections are mapped back to original pixels.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from featherface.inference.images import (
    MEAN_BGR,
    ColorOrder,
    ImageError,
    as_image_list,
    large_image_warning,
    read_image,
    resize_long_side,
    to_bgr,
)

__all__ = [
    "MEAN_BGR",
    "DEFAULT_MIN_SIZES",
    "DEFAULT_STEPS",
    "VARIANCES",
    "ImageError",
    "OnnxFormatError",
    "RuntimeDetections",
    "RuntimeSettings",
    "WIDER_SETTINGS",
    "OnnxFaceDetector",
    "read_image",
    "to_bgr",
    "resize_long_side",
    "fit_and_pad",
    "to_network_input",
    "make_priors",
    "decode_boxes",
    "decode_landmarks",
    "face_scores",
    "select_candidates",
    "nms",
    "postprocess_decoded",
    "detect_from_outputs",
    "to_wider_rows",
    "load_session",
]

log = logging.getLogger(__name__)

#: Network input convention of FeatherFace (DESIGN.md section 1): BGR minus this mean, no scaling.
DEFAULT_MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
DEFAULT_STEPS: tuple[int, ...] = (8, 16, 32)
VARIANCES: tuple[float, float] = (0.1, 0.2)
#: Input sizes whose priors a detector keeps (least recently used dropped first), as in ``FaceDetector``.
PRIOR_CACHE_SIZE = 16

INPUT_NAME = "input"
OUTPUT_WIDTHS: dict[str, int] = {"loc": 4, "logits": 2, "landmarks": 10}

ImageInput = Union[str, os.PathLike, np.ndarray]
ModelSource = Union[str, os.PathLike, bytes]



class OnnxFormatError(ValueError):
    """An ONNX file that is not a model this runtime can run (unreadable, or another model's inputs/outputs)."""


# ------------------------------------------------------------------------------------------------ detections


@dataclass(frozen=True)
class RuntimeDetections:
    """Detections of one image, by decreasing score, as numpy arrays in original-image pixels.

    Attributes:
        boxes: ``(N, 4)`` float32 ``(x1, y1, x2, y2)``, not clipped to the image.
        scores: ``(N,)`` float32 face scores (probabilities).
        landmarks: ``(N, 5, 2)`` float32 ``(x, y)``: the eye with the smaller x in a frontal face first, then the
            other eye, the nose, and the two mouth corners in the same order.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.landmarks.shape != (n, 5, 2):
            raise ValueError(
                "RuntimeDetections: expected boxes (N, 4), scores (N,), landmarks (N, 5, 2), got "
                f"{self.boxes.shape}, {self.scores.shape}, {self.landmarks.shape}"
            )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> RuntimeDetections:
        """No detections: shapes ``(0, 4)``, ``(0,)``, ``(0, 5, 2)``."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def to_dets(self) -> np.ndarray:
        """``(N, 5)`` rows ``(x1, y1, x2, y2, score)``, the reference ``dets`` layout."""
        return np.concatenate((self.boxes, self.scores[:, None].astype(self.boxes.dtype)), axis=1)

    def to_wider_rows(self) -> np.ndarray:
        """WIDER prediction rows, see :func:`to_wider_rows`."""
        return to_wider_rows(self)


def to_wider_rows(dets: RuntimeDetections) -> np.ndarray:
    """Detections as WIDER prediction rows ``(N, 5)`` float64: ``x y w h score`` with the RetinaFace / FeatherFace
    evaluation scripts' integer convention (``x = int(x1)``, ``w = int(x2) - int(x1)``), as
    :func:`featherface.inference.detector.to_wider_rows`. Write them with
    :func:`featherface.eval.prediction_files.write_prediction_file` (torch-free)."""
    boxes = np.asarray(dets.boxes, dtype=np.float64)
    scores = np.asarray(dets.scores, dtype=np.float64)
    if len(scores) == 0:
        return np.zeros((0, 5))
    x1, y1 = np.trunc(boxes[:, 0]), np.trunc(boxes[:, 1])
    x2, y2 = np.trunc(boxes[:, 2]), np.trunc(boxes[:, 3])
    return np.stack([x1, y1, x2 - x1, y2 - y1, scores], axis=1)


# -------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RuntimeSettings:
    """Post-processing and input-size policy (the fields of :class:`featherface.inference.detector.DetectorSettings` that apply
    to one-image-at-a-time inference, validated the same way).

    Attributes:
        score_threshold: keep detections whose score is strictly greater.
        nms_iou: suppress boxes overlapping a better one by more than this IoU.
        pre_nms_top_k: candidates entering NMS.
        max_detections: detections kept per image after NMS.
        long_side: ``None`` runs at the original size; an integer resizes so the longer side has that many
            pixels (detections are mapped back to original pixels).
        nms_offset: pixel-size convention of the NMS IoU: 1 the reference "+1" (``x2 - x1 + 1`` wide, the
            WIDER protocol of RetinaFace / FeatherFace), 0 continuous coordinates.
    """

    score_threshold: float = 0.5
    nms_iou: float = 0.4
    pre_nms_top_k: int = 5000
    max_detections: int = 750
    long_side: int | None = None
    nms_offset: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        for name in ("pre_nms_top_k", "max_detections"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.long_side is not None and (int(self.long_side) != self.long_side or self.long_side < 32):
            raise ValueError(f"long_side must be None or an integer >= 32, got {self.long_side!r}")
        if self.nms_offset not in (0, 1):
            raise ValueError(f"nms_offset must be 0 (continuous) or 1 (reference '+1'), got {self.nms_offset!r}")

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (for the detectors' constructors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The WIDER FACE evaluation protocol (DESIGN.md section 3): original size, 0.02, top 5000, NMS 0.4 "+1", keep 750.
WIDER_SETTINGS = RuntimeSettings(score_threshold=0.02, nms_iou=0.4, pre_nms_top_k=5000, max_detections=750)


# ---------------------------------------------------------------------------------------------------- images


def fit_and_pad(
    image: np.ndarray, size: tuple[int, int], pad_value: Sequence[float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``(H, W, 3)`` ``image`` to fit inside ``size = (H', W')`` (aspect ratio kept, no resize when it
    already fits) and pad it at the bottom and right with ``pad_value`` to exactly ``(H', W')``.

    Returns:
        the ``(H', W', 3)`` image and ``(sx, sy)`` from its pixels back to the original ones (padding at the
        bottom and right does not move the origin).
    """
    height, width = image.shape[:2]
    target_h, target_w = size
    sx = sy = 1.0
    if height > target_h or width > target_w:
        ratio = min(target_h / height, target_w / width)
        new_w, new_h = max(1, min(target_w, round(width * ratio))), max(1, min(target_h, round(height * ratio)))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        sx, sy = width / new_w, height / new_h
        height, width = new_h, new_w
    if (height, width) != (target_h, target_w):
        image = cv2.copyMakeBorder(
            image, 0, target_h - height, 0, target_w - width, cv2.BORDER_CONSTANT, value=tuple(pad_value)
        )
    return image, (sx, sy)


def to_network_input(image: np.ndarray, mean: Sequence[float] = MEAN_BGR) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR -> ``(1, 3, H, W)`` float32 minus ``mean`` (as :func:`featherface.inference.images.to_tensor`,
    with a batch axis)."""
    array = image.astype(np.float32) - np.asarray(mean, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


# ---------------------------------------------------------------------------------------------------- priors


def make_priors(
    height: int,
    width: int,
    min_sizes: Sequence[Sequence[float]] = DEFAULT_MIN_SIZES,
    steps: Sequence[int] = DEFAULT_STEPS,
) -> np.ndarray:
    """RetinaFace priors for an input of ``height x width`` pixels, equal bit for bit to
    :func:`featherface.ops.priors.make_priors` (float64, rounded once to float32).

    Returns:
        ``(P, 4)`` float32 ``(cx, cy, w, h)`` normalised by ``W`` (x, w) and ``H`` (y, h): ``cx = (j + 0.5) s / W``,
        ``cy = (i + 0.5) s / H``, ``w = m / W``, ``h = m / H``; ordered by level, row, column, min size; unclipped.
    """
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"make_priors: image size must be positive integers, got height={height}, width={width}")
    if len(min_sizes) != len(steps) or not steps:
        raise ValueError(f"make_priors: need as many min_sizes as steps (>= 1), got {min_sizes!r} and {steps!r}")
    levels = []
    for sizes, step in zip(min_sizes, steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        m = np.asarray([float(v) for v in sizes], dtype=np.float64)
        k = m.size
        level = np.stack(
            np.broadcast_arrays(
                cx[None, :, None], cy[:, None, None], (m / width)[None, None, :], (m / height)[None, None, :]
            ),
            axis=-1,
        )  # (rows, cols, K, 4)
        levels.append(level.reshape(rows * cols * k, 4))
    return np.concatenate(levels, axis=0).astype(np.float32)


# -------------------------------------------------------------------------------------------------- decoding


def _exp32(x: np.ndarray) -> np.ndarray:
    """float32 ``exp``, correctly rounded (through float64): torch's CPU ``exp`` agrees with it on ~99.5 % of
    inputs, numpy's own float32 ``exp`` on ~80 %."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def decode_boxes(offsets: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """``(..., 4)`` offsets against ``(..., 4)`` cxcywh priors -> ``(..., 4)`` xyxy boxes in the priors' units,
    with the operation order of :func:`featherface.ops.box_coding.decode_boxes` (float32 in, float32 out)."""
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    centre = priors[..., :2] + offsets[..., :2] * v0 * priors[..., 2:]
    size = priors[..., 2:] * _exp32(offsets[..., 2:] * v1)
    top_left = centre - size / np.float32(2)
    return np.concatenate((top_left, top_left + size), axis=-1)


def decode_landmarks(offsets: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """``(..., 10)`` offsets against ``(..., 4)`` cxcywh priors -> ``(..., 10)`` points ``(x0, y0, ..., x4, y4)``
    in the priors' units (only ``variances[0]`` is used)."""
    v0 = np.float32(variances[0])
    points = offsets.reshape(*offsets.shape[:-1], 5, 2)
    decoded = priors[..., None, :2] + points * v0 * priors[..., None, 2:]
    return decoded.reshape(*offsets.shape)


def face_scores(logits: np.ndarray) -> np.ndarray:
    """``(..., 2)`` (background, face) logits -> ``(...)`` float32 ``softmax(logits)[..., 1]``, computed like
    torch's CPU softmax (max subtracted, exponentials, times the reciprocal of their sum). Torch's vectorised
    ``exp`` is not reproducible bit for bit: about 5 % of the scores differ from torch's in the last bit
    (relative difference <= 2e-7)."""
    if logits.ndim == 0 or logits.shape[-1] != 2:
        raise ValueError(f"face_scores: logits must have shape (..., 2), got {logits.shape}")
    logits = np.asarray(logits, dtype=np.float32)
    e = _exp32(logits - logits.max(axis=-1, keepdims=True))
    inv = np.float32(1.0) / (e[..., 0] + e[..., 1])
    return e[..., 1] * inv


def select_candidates(scores: np.ndarray, score_threshold: float, top_k: int | None) -> np.ndarray:
    """Indices of ``(P,)`` ``scores`` strictly above ``score_threshold``, by decreasing score (equal scores by
    increasing index), at most ``top_k`` of them (``None``: all). Returns ``(K,)`` int64."""
    if scores.ndim != 1:
        raise ValueError(f"select_candidates: scores must have shape (P,), got {scores.shape}")
    index = np.flatnonzero(scores > score_threshold)
    order = np.argsort(-scores[index], kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return index[order].astype(np.int64)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, offset: float = 0.0, limit: int | None = None
) -> np.ndarray:
    """Greedy non-maximum suppression as :func:`featherface.ops.boxes.nms`: boxes visited by decreasing score
    (equal scores by increasing index); a box is kept unless its IoU with a kept box is **greater than**
    ``iou_threshold``. ``offset=1`` is the "+1" convention of ``py_cpu_nms`` (boxes are ``x2 - x1 + 1`` wide),
    computed like ``torchvision.ops.nms`` on boxes whose bottom-right corner moved by +1 (the arithmetic, in
    float32 for float32 boxes, and the threshold rounded to that precision).

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        iou_threshold: suppress when IoU > this.
        offset: 0 (continuous) or 1 ("+1").
        limit: stop once this many boxes are kept (the greedy order makes the first ``limit`` survivors the
            same as without a limit).

    Returns:
        ``(K,)`` int64 indices into ``boxes``, by decreasing score.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: expected boxes (N, 4) and scores (N,), got {boxes.shape} and {scores.shape}")
    n = boxes.shape[0]
    if n == 0:
        return np.zeros((0,), np.int64)
    dtype = boxes.dtype if boxes.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(dtype, copy=False)
    x1, y1 = b[:, 0], b[:, 1]
    x2, y2 = b[:, 2] + dtype.type(offset), b[:, 3] + dtype.type(offset)
    areas = (x2 - x1) * (y2 - y1)
    threshold = dtype.type(iou_threshold)
    zero = dtype.type(0)
    keep: list[int] = []
    remaining = np.arange(n)
    while remaining.size:
        i = int(remaining[0])
        keep.append(i)
        if limit is not None and len(keep) >= limit:
            break
        rest = remaining[1:]
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        remaining = rest[~(iou > threshold)]  # NaN IoU keeps the box, as in torchvision
    return order[np.asarray(keep, dtype=np.int64)]


def postprocess_decoded(
    boxes: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray,
    settings: RuntimeSettings,
) -> RuntimeDetections:
    """NMS and keep-k on already selected, decoded candidates in original pixels.

    Args:
        boxes: ``(K, 4)`` xyxy px; scores: ``(K,)``; landmarks: ``(K, 10)`` or ``(K, 5, 2)`` px; in candidate
            order (by decreasing score).
        settings: ``nms_iou``, ``nms_offset`` and ``max_detections`` are used.
    """
    keep = nms(boxes, scores, settings.nms_iou, offset=settings.nms_offset, limit=settings.max_detections)
    keep = keep[: settings.max_detections]
    return RuntimeDetections(
        np.ascontiguousarray(boxes[keep], dtype=np.float32),
        np.ascontiguousarray(scores[keep], dtype=np.float32),
        np.ascontiguousarray(landmarks[keep].reshape(-1, 5, 2), dtype=np.float32),
    )


def _pixel_factors(image_size: tuple[int, int], reps: int, dtype: np.dtype) -> np.ndarray:
    height, width = image_size
    return np.tile(np.asarray([width, height], dtype=dtype), reps)


def detect_from_outputs(
    loc: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray,
    priors: np.ndarray,
    image_size: tuple[int, int],
    settings: RuntimeSettings = WIDER_SETTINGS,
    scale: tuple[float, float] = (1.0, 1.0),
    variances: Sequence[float] = VARIANCES,
) -> RuntimeDetections:
    """Detections of one image from its head outputs: the numpy twin of
    :func:`featherface.inference.postprocess.detect_from_outputs` (same steps, order and conventions).

    Args:
        loc: ``(P, 4)`` raw box offsets; scores: ``(P,)`` face probabilities; landmarks: ``(P, 10)`` raw offsets;
            priors: ``(P, 4)`` normalised cxcywh (all float32).
        image_size: ``(H, W)`` of the network input in pixels.
        settings: threshold, top-k, NMS IoU and offset, keep-k (``long_side`` is not used here).
        scale: ``(sx, sy)`` from network-input pixels to original-image pixels.
        variances: box coding variances.

    Returns:
        :class:`RuntimeDetections` in original pixels, by decreasing score.
    """
    p = loc.shape[0] if loc.ndim == 2 else -1
    for name, array, shape in (("loc", loc, (p, 4)), ("scores", scores, (p,)), ("landmarks", landmarks, (p, 10)),
                               ("priors", priors, (p, 4))):
        if array.shape != shape:
            raise ValueError(f"detect_from_outputs: {name} must have shape {shape} (P from loc), got {array.shape}")
    index = select_candidates(scores, settings.score_threshold, settings.pre_nms_top_k)
    cand_priors = priors[index]
    boxes = decode_boxes(loc[index], cand_priors, variances) * _pixel_factors(image_size, 2, loc.dtype)
    points = decode_landmarks(landmarks[index], cand_priors, variances) * _pixel_factors(image_size, 5, loc.dtype)
    if tuple(scale) != (1.0, 1.0):
        boxes = boxes * np.tile(np.asarray(scale, dtype=loc.dtype), 2)
        points = points * np.tile(np.asarray(scale, dtype=loc.dtype), 5)
    dets = postprocess_decoded(boxes, scores[index], points, settings)
    log.debug("postprocess: %d priors, %d into NMS, %d kept", p, index.size, len(dets))
    return dets


# ------------------------------------------------------------------------------------------------- sessions


def load_session(
    model: ModelSource, *, threads: int | None = None, providers: Sequence[str] | None = None, what: str = "model"
) -> Any:
    """An ``onnxruntime.InferenceSession`` for an ONNX file path or its bytes.

    Args:
        model: a path to a ``.onnx`` file, or the file's bytes.
        threads: intra-op threads (``None``: onnxruntime's default, one per physical core).
        providers: execution providers (default ``["CPUExecutionProvider"]``).
        what: how to name the model in error messages.

    Raises:
        FileNotFoundError: a path that does not exist.
        OnnxFormatError: bytes or a file onnxruntime cannot load (naming it and onnxruntime's reason).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if isinstance(model, (bytes, bytearray, memoryview)):
        source: Any = bytes(model)
        where = f"{what} ({len(source)} bytes)"
    else:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
        source, where = str(path), str(path)
    asked = list(providers or ["CPUExecutionProvider"])
    try:
        with warnings.catch_warnings():  # a missing provider is reported below, with what to do
            warnings.filterwarnings("ignore", message=".*provider.*", category=UserWarning)
            session = ort.InferenceSession(source, sess_options=options, providers=asked)
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxFormatError(f"{where}: not a loadable ONNX model: {reason}") from err
    _warn_about_fallback(asked, list(session.get_providers()), where)
    return session


def _warn_about_fallback(asked: Sequence[str], active: Sequence[str], where: str) -> list[str]:
    """Log a warning for each execution provider that was asked for but is not running the session (onnxruntime
    falls back to the CPU without raising); returns the missing ones."""
    missing = [p for p in asked if p not in active]
    if missing:
        log.warning("%s: %s asked for but not available; running on %s instead. For CUDA install the "
                    "onnxruntime-gpu package that matches your CUDA version (pip uninstall onnxruntime && pip "
                    "install onnxruntime-gpu)", where, ", ".join(missing), ", ".join(active) or "nothing")
    return missing


def _fixed(dim: Any) -> int | None:
    """A static ONNX dimension as an int, ``None`` for a symbolic / unknown one."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def _describe(args: Sequence[Any]) -> str:
    """onnxruntime inputs / outputs as ``'name' type [shape], ...`` for error messages."""
    return ", ".join(f"{a.name!r} {a.type} {list(a.shape)}" for a in args) or "none"


def _check_featherface_session(session: Any, where: str) -> tuple[int | None, int | None, int | None]:
    """Raise :class:`OnnxFormatError` unless the session has FeatherFace's input and outputs.

    Returns:
        The static batch, height and width of the input (``None`` where dynamic).
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = ("expected one input 'input' (B, 3, H, W) float32 and outputs 'loc' (B, P, 4), 'logits' (B, P, 2), "
                "'landmarks' (B, P, 10)")
    found = f"got inputs [{_describe(inputs)}] and outputs [{_describe(outputs)}]"
    problems = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append("input name/count")
    else:
        shape = list(inputs[0].shape)
        if inputs[0].type != "tensor(float)":
            problems.append(f"input type {inputs[0].type}")
        if len(shape) != 4 or (_fixed(shape[1]) is not None and shape[1] != 3):
            problems.append(f"input shape {shape}")
    by_name = {o.name: o for o in outputs}
    for name, width in OUTPUT_WIDTHS.items():
        out = by_name.get(name)
        if out is None:
            problems.append(f"no output {name!r}")
            continue
        shape = list(out.shape)
        if len(shape) != 3 or (_fixed(shape[2]) is not None and shape[2] != width):
            problems.append(f"output {name!r} shape {shape}")
    if problems:
        raise OnnxFormatError(f"not a FeatherFace ONNX export: {where}: {expected}; {found} ({'; '.join(problems)})")
    shape = list(inputs[0].shape)
    return _fixed(shape[0]), _fixed(shape[2]), _fixed(shape[3])


PriorParameters = tuple[tuple[tuple[float, ...], ...], tuple[int, ...], tuple[float, float]]


def _prior_parameters(session: Any, where: str) -> PriorParameters:
    """Min sizes, steps and variances from the ``featherface.priors`` metadata entry (defaults when absent)."""
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get("featherface.priors")
    if raw is None:
        return DEFAULT_MIN_SIZES, DEFAULT_STEPS, VARIANCES
    try:
        entry = json.loads(raw)
        min_sizes = tuple(tuple(float(v) for v in level) for level in entry["min_sizes"])
        steps = tuple(int(s) for s in entry["steps"])
        variances = tuple(float(v) for v in entry["variances"])
        if len(min_sizes) != len(steps) or len(variances) != 2:
            raise ValueError("levels or variances of the wrong length")
    except (ValueError, KeyError, TypeError) as err:
        raise OnnxFormatError(f"{where}: unreadable 'featherface.priors' metadata {raw!r}: {err}") from err
    return min_sizes, steps, (variances[0], variances[1])


# -------------------------------------------------------------------------------------------------- detector


def detect_each(
    detector: Any, images: ImageInput | Sequence[ImageInput], color: ColorOrder = "bgr"
) -> RuntimeDetections | list[RuntimeDetections]:
    """Run ``detector.prepare`` + ``detector.detect_array`` on one image (path or array) or on each of a list.

    Returns one :class:`RuntimeDetections` for a single image, a list of them for a list.
    """
    single, batch = as_image_list(images)
    results = []
    for i, image in enumerate(batch):
        array, scale = detector.prepare(image, color, where=f"image {i}")
        results.append(detector.detect_array(array, scale))
    return results[0] if single else results


class OnnxFaceDetector:
    """A FeatherFace ONNX export run by onnxruntime: the torch-free twin of :class:`featherface.inference.detector.FaceDetector`.

    Args:
        onnx_path: a file written by :func:`featherface.deploy.export.export_onnx` (or its bytes).
        score_threshold, nms_iou, pre_nms_top_k, max_detections, long_side, nms_offset: see
            :class:`RuntimeSettings` (defaults: 0.5, 0.4, 5000, 750, original size, "+1" NMS).
        settings: a :class:`RuntimeSettings` to start from (the keyword arguments given override its fields).
        threads: onnxruntime intra-op threads (``None``: its default).
        providers: onnxruntime execution providers (default CPU).
        backend: ``"onnxruntime"`` (default) or ``"openvino"`` (the optional extra; the ONNX file is converted
            by :mod:`featherface.deploy.openvino`, ``threads`` OpenVINO inference threads, fp32).

    Raises:
        FileNotFoundError: no such file.
        OnnxFormatError: not an ONNX file, or an ONNX model without FeatherFace's input and outputs.
        ValueError: a bad setting; ``long_side`` with a fixed-size export.
    """

    def __init__(
        self,
        onnx_path: ModelSource,
        *,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        pre_nms_top_k: int | None = None,
        max_detections: int | None = None,
        long_side: int | None = None,
        nms_offset: float | None = None,
        settings: RuntimeSettings | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        backend: str = "onnxruntime",
    ) -> None:
        base = settings or RuntimeSettings()
        given = {"score_threshold": score_threshold, "nms_iou": nms_iou, "pre_nms_top_k": pre_nms_top_k,
                 "max_detections": max_detections, "long_side": long_side, "nms_offset": nms_offset}
        self.settings = RuntimeSettings(**{**base.as_kwargs(), **{k: v for k, v in given.items() if v is not None}})
        self.source = "<bytes>" if isinstance(onnx_path, (bytes, bytearray, memoryview)) else str(onnx_path)
        if backend == "openvino":
            from featherface.deploy.openvino import OpenVinoSession

            self.session = OpenVinoSession(onnx_path, threads=threads)
        elif backend == "onnxruntime":
            self.session = load_session(onnx_path, threads=threads, providers=providers, what="ONNX model")
        else:
            raise ValueError(f"OnnxFaceDetector: backend must be 'onnxruntime' or 'openvino', got {backend!r}")
        self.backend = backend
        self._batch, height, width = _check_featherface_session(self.session, self.source)
        self.fixed_size = (height, width) if height is not None and width is not None else None
        if (height is None) != (width is None):
            raise OnnxFormatError(f"{self.source}: input height and width must both be fixed or both dynamic, "
                                  f"got {list(self.session.get_inputs()[0].shape)}")
        if self._batch not in (None, 1):
            raise OnnxFormatError(f"{self.source}: fixed batch size {self._batch}; this runtime runs one image at a "
                                  "time (export with dynamic=True or batch_size=1)")
        if self.fixed_size is not None and self.settings.long_side is not None:
            raise ValueError(f"{self.source} has a fixed input size {self.fixed_size}; long_side does not apply "
                             "(every image is resized to fit it)")
        self.min_sizes, self.steps, self.variances = _prior_parameters(self.session, self.source)
        self._priors: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._warned_large = False
        log.info("loaded %s (input %s)", self.source, list(self.session.get_inputs()[0].shape))

    def __repr__(self) -> str:
        return f"OnnxFaceDetector({self.source!r}, settings={self.settings})"

    def _priors_for(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key in self._priors:
            self._priors.move_to_end(key)
        else:
            self._priors[key] = make_priors(height, width, self.min_sizes, self.steps)
            while len(self._priors) > PRIOR_CACHE_SIZE:
                self._priors.popitem(last=False)
        return self._priors[key]

    def prepare(
        self, image: ImageInput, color: ColorOrder = "bgr", where: str = "image"
    ) -> tuple[np.ndarray, tuple[float, float]]:
        """An image (path or array) as the ``(H, W, 3)`` uint8 BGR network image and ``(sx, sy)`` back to
        original pixels (resized by ``long_side``, or fitted and padded for a fixed-size export)."""
        array = read_image(image) if isinstance(image, (str, os.PathLike)) else to_bgr(image, color, where=where)
        if self.fixed_size is not None:
            return fit_and_pad(array, self.fixed_size, MEAN_BGR)
        message = None if self._warned_large else large_image_warning(
            array.shape[0], array.shape[1], self.settings.long_side,
            str(image) if isinstance(image, (str, os.PathLike)) else where)
        if message:
            log.warning("%s (further large images are not reported)", message)
            self._warned_large = True
        return resize_long_side(array, self.settings.long_side)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the network on a ``(B, 3, H, W)`` float32 input; returns ``loc``, ``logits``, ``landmarks``
        ``(B, P, 4)``, ``(B, P, 2)``, ``(B, P, 10)``, checked against the number of priors of ``H x W``.

        Raises:
            ValueError: an input that is not ``(B, 3, H, W)`` float32, or that is empty.
            RuntimeError: onnxruntime failed (naming the model and the input size).
            OnnxFormatError: outputs whose shapes do not fit FeatherFace's priors.
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.dtype != np.float32:
            raise ValueError(f"forward: expected a (B, 3, H, W) float32 array, got {x.dtype} {x.shape}")
        if min(x.shape) < 1:
            raise ValueError(f"forward: {self.source}: the input {x.shape} is empty; images must have at least "
                             "one pixel (and one image per batch)")
        try:
            loc, logits, landmarks = self.session.run(list(OUTPUT_WIDTHS), {INPUT_NAME: x})
        except Exception as err:  # onnxruntime's own exception types (InvalidArgument, Fail, ...)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeError(f"{self.source}: onnxruntime could not run a {x.shape[2]}x{x.shape[3]} input "
                               f"(batch {x.shape[0]}): {reason}") from err
        batch, _, height, width = x.shape
        p = sum(len(m) * math.ceil(height / s) * math.ceil(width / s) for m, s in zip(self.min_sizes, self.steps))
        for name, out in zip(OUTPUT_WIDTHS, (loc, logits, landmarks)):
            if out.shape != (batch, p, OUTPUT_WIDTHS[name]):
                raise OnnxFormatError(
                    f"not a FeatherFace ONNX export: {self.source}: output {name!r} has shape {out.shape} for a "
                    f"{height}x{width} input, expected {(batch, p, OUTPUT_WIDTHS[name])} (priors: min sizes "
                    f"{self.min_sizes}, steps {self.steps})"
                )
        return loc, logits, landmarks

    def detect_array(self, image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> RuntimeDetections:
        """Detections of one prepared ``(H, W, 3)`` uint8 BGR network image; ``scale`` maps back to original pixels."""
        height, width = image.shape[:2]
        loc, logits, landmarks = self.forward(to_network_input(image, MEAN_BGR))
        return detect_from_outputs(
            loc[0], face_scores(logits[0]), landmarks[0], self._priors_for(height, width), (height, width),
            self.settings, scale, self.variances,
        )

    def detect(
        self, images: ImageInput | Sequence[ImageInput], color: ColorOrder = "bgr"
    ) -> RuntimeDetections | list[RuntimeDetections]:
        """Detect faces.

        Args:
            images: an image path, an ``(H, W[, C])`` array (uint8; grayscale, BGR/RGB or with alpha), or a list
                of them (any sizes).
            color: channel order of array inputs (paths are always decoded correctly).

        Returns:
            One :class:`RuntimeDetections` (original pixels) for a single image, a list of them for a list.

        Raises:
            FileNotFoundError, ImageError: an unreadable path or an unusable array (naming it).
        """
        return detect_each(self, images, color)

    __call__ = detect
