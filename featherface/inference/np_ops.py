"""The numpy post-processing of the torch-free detectors: priors, decoding, scores, candidates, NMS, detections.

The numpy twin of :mod:`featherface.ops.priors`, :mod:`featherface.ops.box_coding`, :mod:`featherface.ops.boxes`
and :mod:`featherface.inference.postprocess`, with the floating-point operation order of the torch code so that
both give the same detections (same set, same order, boxes within float rounding):

- priors (:func:`make_priors`) computed in float64 and rounded once, bit for bit equal to torch's;
- box and landmark decoding (:func:`decode_boxes`, :func:`decode_landmarks`, variances 0.1 and 0.2);
- face probability ``softmax(logits)[..., 1]`` (:func:`face_scores`);
- candidates ``score > threshold`` by decreasing score, stable, top-k (:func:`select_candidates`);
- greedy NMS with the reference "+1" pixel convention and the float32 comparison of ``torchvision.ops.nms``
  (:func:`nms`), then the first ``max_detections`` survivors (:func:`postprocess_decoded`,
  :func:`detect_from_outputs`), and optionally box voting (:func:`suppression_owner`, :func:`vote`).

Differences that remain are those of the two math libraries (``exp`` may differ in the last bit), far below
1e-3 px. Used by :mod:`featherface.inference.onnx` and :mod:`featherface.inference.peers`; imports no torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featherface.inference.settings import DEFAULT_MIN_SIZES, DEFAULT_STEPS, VARIANCES, WIDER_PROTOCOL, DetectorSettings

__all__ = [
    "RuntimeDetections",
    "wider_rows",
    "to_wider_rows",
    "make_priors",
    "exp_f32",
    "decode_boxes",
    "decode_landmarks",
    "face_scores",
    "select_candidates",
    "nms",
    "suppression_owner",
    "vote",
    "postprocess_decoded",
    "detect_from_outputs",
]

log = logging.getLogger(__name__)


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


def wider_rows(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy boxes and ``(N,)`` scores as WIDER prediction rows ``(N, 5)`` float64: ``x y w h score``
    with the RetinaFace / FeatherFace evaluation scripts' integer convention (``x = int(x1)``,
    ``w = int(x2) - int(x1)``)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return np.zeros((0, 5))
    x1, y1 = np.trunc(boxes[:, 0]), np.trunc(boxes[:, 1])
    x2, y2 = np.trunc(boxes[:, 2]), np.trunc(boxes[:, 3])
    return np.stack([x1, y1, x2 - x1, y2 - y1, scores], axis=1)


def to_wider_rows(dets: RuntimeDetections) -> np.ndarray:
    """Detections as WIDER prediction rows (:func:`wider_rows`), as
    :func:`featherface.inference.detector.to_wider_rows`. Write them with
    :func:`featherface.eval.prediction_files.write_prediction_file` (torch-free)."""
    return wider_rows(dets.boxes, dets.scores)


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


def exp_f32(x: np.ndarray) -> np.ndarray:
    """float32 ``exp``, correctly rounded (through float64): torch's CPU ``exp`` agrees with it on ~99.5 % of
    inputs, numpy's own float32 ``exp`` on ~80 %."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def decode_boxes(offsets: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """``(..., 4)`` offsets against ``(..., 4)`` cxcywh priors -> ``(..., 4)`` xyxy boxes in the priors' units,
    with the operation order of :func:`featherface.ops.box_coding.decode_boxes` (float32 in, float32 out)."""
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    centre = priors[..., :2] + offsets[..., :2] * v0 * priors[..., 2:]
    size = priors[..., 2:] * exp_f32(offsets[..., 2:] * v1)
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
    e = exp_f32(logits - logits.max(axis=-1, keepdims=True))
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


def _pairwise_iou(a: np.ndarray, b: np.ndarray, offset: float) -> np.ndarray:
    """``(K, 4)`` x ``(N, 4)`` xyxy -> ``(K, N)`` IoU in the boxes' dtype, with the arithmetic of :func:`nms`
    (bottom-right corners moved by ``offset`` first), so that both make the same ``> threshold`` decisions."""
    dtype = a.dtype.type
    ax2, ay2 = a[:, 2] + dtype(offset), a[:, 3] + dtype(offset)
    bx2, by2 = b[:, 2] + dtype(offset), b[:, 3] + dtype(offset)
    w = np.maximum(dtype(0), np.minimum(ax2[:, None], bx2[None, :]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    h = np.maximum(dtype(0), np.minimum(ay2[:, None], by2[None, :]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = w * h
    area_a, area_b = (ax2 - a[:, 0]) * (ay2 - a[:, 1]), (bx2 - b[:, 0]) * (by2 - b[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def suppression_owner(
    boxes: np.ndarray, scores: np.ndarray, keep: np.ndarray, iou_threshold: float, offset: float = 0.0
) -> np.ndarray:
    """For each box, the position in ``keep`` of the :func:`nms` survivor that suppressed it (a survivor owns
    itself; ``-1``: none, for boxes after a keep-k cut): the first survivor visited before the box whose IoU
    with it is greater than ``iou_threshold``. The twin of :func:`featherface.ops.boxes.suppression_owner`.

    Args:
        boxes: ``(N, 4)`` xyxy; scores: ``(N,)``; keep: ``(K,)`` survivors in visiting order; iou_threshold,
            offset: as for :func:`nms`.

    Returns:
        ``(N,)`` int64.
    """
    n = boxes.shape[0]
    dtype = boxes.dtype if boxes.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    work = boxes.astype(dtype, copy=False)
    rank = np.empty(n, np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(n)
    suppresses = (_pairwise_iou(work[keep], work, offset) > dtype.type(iou_threshold)) & (
        rank[keep][:, None] < rank[None, :]
    )
    owner = np.where(suppresses.any(axis=0), suppresses.argmax(axis=0), -1)
    owner[keep] = np.arange(keep.size)
    return owner.astype(np.int64)


def vote(values: np.ndarray, scores: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """Box voting: ``(K, D)`` score-weighted means of ``(N, D)`` ``values`` over the boxes each survivor owns
    (:func:`suppression_owner`), in the dtype of ``values``. The twin of :func:`featherface.ops.boxes.vote`."""
    owned = owner >= 0
    weights = scores[owned].astype(values.dtype)
    total = np.zeros((count, values.shape[1]), values.dtype)
    np.add.at(total, owner[owned], values[owned] * weights[:, None])
    norm = np.zeros(count, values.dtype)
    np.add.at(norm, owner[owned], weights)
    return total / norm[:, None]


def postprocess_decoded(
    boxes: np.ndarray,
    scores: np.ndarray,
    landmarks: np.ndarray,
    settings: DetectorSettings,
) -> RuntimeDetections:
    """NMS and keep-k on already selected, decoded candidates in original pixels.

    Args:
        boxes: ``(K, 4)`` xyxy px; scores: ``(K,)``; landmarks: ``(K, 10)`` or ``(K, 5, 2)`` px; in candidate
            order (by decreasing score).
        settings: ``nms_iou``, ``nms_offset``, ``max_detections`` and ``box_voting`` are used.
    """
    keep = nms(boxes, scores, settings.nms_iou, offset=settings.nms_offset, limit=settings.max_detections)
    keep = keep[: settings.max_detections]
    points = landmarks.reshape(len(boxes), 10)
    if settings.box_voting and keep.size:
        owner = suppression_owner(boxes, scores, keep, settings.nms_iou, offset=settings.nms_offset)
        merged = vote(np.concatenate((boxes, points), axis=1), scores, owner, keep.size)
        kept_boxes, kept_points = merged[:, :4], merged[:, 4:]
    else:
        kept_boxes, kept_points = boxes[keep], points[keep]
    return RuntimeDetections(
        np.ascontiguousarray(kept_boxes, dtype=np.float32),
        np.ascontiguousarray(scores[keep], dtype=np.float32),
        np.ascontiguousarray(kept_points.reshape(-1, 5, 2), dtype=np.float32),
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
    settings: DetectorSettings = WIDER_PROTOCOL,
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


