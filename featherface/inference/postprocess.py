"""From raw head outputs to detections: decode, score threshold, top-k, NMS, keep-k, rescale.

Coordinate conventions:
- inputs: ``loc`` ``(P, 4)`` and ``landmarks`` ``(P, 10)`` are the raw regressions, ``priors`` ``(P, 4)`` are
  ``(cx, cy, w, h)`` normalised by the network input size ``(H, W)`` (see :mod:`featherface.ops.priors`);
  ``scores`` ``(P,)`` is the face probability, ``softmax(logits)[..., 1]`` (:func:`face_scores`).
- outputs (:class:`Detections`): boxes ``(N, 4)`` ``(x1, y1, x2, y2)`` and landmarks ``(N, 5, 2)`` ``(x, y)``
  in **pixels of the original image**: normalised values times ``(W, H)`` of the network input, times
  ``scale = (sx, sy)`` when the network input was a resized copy of the original (``sx = W_orig / W``).
  Boxes are not clipped to the image.

The steps and their order follow the RetinaFace / FeatherFace evaluation scripts (the protocol of
DESIGN.md section 3: score > 0.02, top 5000, NMS IoU 0.4, keep 750):

1. candidates: ``score > score_threshold`` (strictly), sorted by decreasing score (stable: equal scores by
   increasing prior index), the first ``pre_nms_top_k``;
2. decode them (variances 0.1, 0.2) and convert to pixels, **rescale included** (the reference multiplies
   by ``scale / resize`` before NMS; with the "+1" IoU below, NMS is not scale invariant, so the order matters);
3. greedy NMS, suppressing IoU > ``nms_iou`` with the reference's "+1" pixel convention (``nms_offset=1``,
   see :func:`featherface.ops.boxes.nms`; plain continuous IoU keeps a different set on real images);
4. the first ``keep_top_k`` survivors;
5. optionally (``box_voting``, off in the protocol), box voting: each survivor's box and landmarks become the
   score-weighted mean of its own and those of the candidates it suppressed (its score is kept), see
   :func:`featherface.ops.boxes.vote`.

This reproduces ``shared/golden/featherface_v1/outputs.npz`` exactly (same detections, same order).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from featherface.ops.box_coding import VARIANCES, decode_boxes, decode_landmarks
from featherface.ops.boxes import nms, suppression_owner, vote

__all__ = [
    "Detections",
    "face_scores",
    "select_candidates",
    "to_pixels",
    "detect_from_outputs",
    "detect_batch",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """Detections of one image, by decreasing score.

    Attributes:
        boxes: ``(N, 4)`` ``(x1, y1, x2, y2)`` in pixels of the original image.
        scores: ``(N,)`` face probabilities.
        landmarks: ``(N, 5, 2)`` ``(x, y)`` in pixels of the original image (left eye, right eye, nose,
            left and right mouth corners).
    """

    boxes: Tensor
    scores: Tensor
    landmarks: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_dets(self) -> Tensor:
        """``(N, 5)`` rows ``(x1, y1, x2, y2, score)``, the reference ``dets`` layout."""
        return torch.cat((self.boxes, self.scores[:, None].to(self.boxes.dtype)), dim=1)

    def to(self, device: torch.device | str) -> Detections:
        """The same detections on ``device``."""
        return Detections(self.boxes.to(device), self.scores.to(device), self.landmarks.to(device))


def face_scores(logits: Tensor) -> Tensor:
    """``(..., 2)`` class logits (background, face) -> ``(...)`` face probability ``softmax(logits)[..., 1]``."""
    if logits.dim() == 0 or logits.shape[-1] != 2:
        raise ValueError(f"face_scores: logits must have shape (..., 2), got {tuple(logits.shape)}")
    return torch.softmax(logits, dim=-1)[..., 1]


def select_candidates(scores: Tensor, score_threshold: float, top_k: int | None) -> Tensor:
    """Indices of ``(P,)`` ``scores`` strictly above ``score_threshold``, by decreasing score (stable),
    at most ``top_k`` of them (``None``: all). Returns ``(K,)`` int64."""
    if scores.dim() != 1:
        raise ValueError(f"select_candidates: scores must have shape (P,), got {tuple(scores.shape)}")
    index = torch.nonzero(scores > score_threshold).squeeze(1)
    order = torch.sort(scores[index], descending=True, stable=True).indices
    if top_k is not None:
        order = order[:top_k]
    return index[order]


def to_pixels(normalised: Tensor, image_size: tuple[int, int], scale: tuple[float, float] = (1.0, 1.0)) -> Tensor:
    """``(..., 2k)`` interleaved normalised ``(x, y, x, y, ...)`` values -> pixels of the original image:
    times ``(W, H)`` of the network input, then times ``(sx, sy)`` unless both are 1."""
    height, width = image_size
    if normalised.dim() == 0 or normalised.shape[-1] % 2:
        raise ValueError(f"to_pixels: expected (..., 2k) interleaved x, y values, got {tuple(normalised.shape)}")
    reps = normalised.shape[-1] // 2
    size = torch.tensor([width, height], dtype=normalised.dtype, device=normalised.device).repeat(reps)
    pixels = normalised * size
    if tuple(scale) != (1.0, 1.0):
        factors = torch.tensor([scale[0], scale[1]], dtype=normalised.dtype, device=normalised.device).repeat(reps)
        pixels = pixels * factors
    return pixels


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2 or any(int(v) != v or v <= 0 for v in image_size):
        raise ValueError(f"image_size must be (H, W) positive integers, got {tuple(image_size)!r}")
    return int(image_size[0]), int(image_size[1])


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
    if len(scale) != 2 or any(not math.isfinite(float(v)) or float(v) <= 0 for v in scale):
        raise ValueError(f"scale must be (sx, sy) positive finite factors, got {tuple(scale)!r}")
    return float(scale[0]), float(scale[1])


def _check_limits(score_threshold: float, pre_nms_top_k: int | None, nms_iou: float, keep_top_k: int | None) -> None:
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
    if not 0.0 <= nms_iou <= 1.0:
        raise ValueError(f"nms_iou must be in [0, 1], got {nms_iou}")
    for name, value in (("pre_nms_top_k", pre_nms_top_k), ("keep_top_k", keep_top_k)):
        if value is not None and (int(value) != value or value <= 0):
            raise ValueError(f"{name} must be a positive integer or None (no limit), got {value!r}")


def detect_from_outputs(
    loc: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    priors: Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.02,
    pre_nms_top_k: int | None = 5000,
    nms_iou: float = 0.4,
    keep_top_k: int | None = 750,
    scale: tuple[float, float] = (1.0, 1.0),
    variances: Sequence[float] = VARIANCES,
    nms_offset: float = 1.0,
    box_voting: bool = False,
) -> Detections:
    """Detections of one image from its head outputs (steps and conventions in the module docstring).

    Args:
        loc: ``(P, 4)`` raw box offsets.
        scores: ``(P,)`` face probabilities (:func:`face_scores` of the logits).
        landmarks: ``(P, 10)`` raw landmark offsets.
        priors: ``(P, 4)`` normalised ``(cx, cy, w, h)``.
        image_size: ``(H, W)`` of the network input in pixels.
        score_threshold: keep scores strictly greater.
        pre_nms_top_k: candidates entering NMS (``None``: all).
        nms_iou: suppress IoU strictly greater.
        keep_top_k: detections kept after NMS (``None``: all).
        scale: ``(sx, sy)`` from network-input pixels to original-image pixels.
        variances: box coding variances.
        nms_offset: pixel-size convention of the NMS IoU (1: reference "+1"; 0: continuous).
        box_voting: replace each survivor's box and landmarks by the score-weighted mean over the candidates it
            suppressed and itself.

    Returns:
        :class:`Detections` in original-image pixels, by decreasing score; empty tensors with shapes
        ``(0, 4)``, ``(0,)``, ``(0, 5, 2)`` when nothing passes the threshold.
    """
    if loc.dim() != 2 or loc.shape[1] != 4:
        raise ValueError(f"detect_from_outputs: loc must have shape (P, 4), got {tuple(loc.shape)}")
    p = loc.shape[0]
    for name, tensor, shape in (
        ("scores", scores, (p,)),
        ("landmarks", landmarks, (p, 10)),
        ("priors", priors, (p, 4)),
    ):
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"detect_from_outputs: {name} must have shape {shape} to match loc {tuple(loc.shape)}, "
                f"got {tuple(tensor.shape)}"
                + (" (pass face_scores(logits), the face probability, not the logits)" if name == "scores" else "")
            )
    size = _check_image_size(image_size)
    sxy = _check_scale(scale)
    _check_limits(score_threshold, pre_nms_top_k, nms_iou, keep_top_k)

    index = select_candidates(scores, score_threshold, pre_nms_top_k)
    cand_priors = priors[index]
    boxes = to_pixels(decode_boxes(loc[index], cand_priors, variances), size, sxy)
    points = to_pixels(decode_landmarks(landmarks[index], cand_priors, variances), size, sxy)
    cand_scores = scores[index]

    keep = nms(boxes, cand_scores, nms_iou, offset=nms_offset)
    if keep_top_k is not None:
        keep = keep[:keep_top_k]
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("postprocess: %d priors, %d into NMS, %d kept", p, index.numel(), keep.numel())
    if box_voting and keep.numel():
        owner = suppression_owner(boxes, cand_scores, keep, nms_iou, offset=nms_offset)
        merged = vote(torch.cat((boxes, points), dim=1), cand_scores, owner, keep.numel())
        return Detections(merged[:, :4], cand_scores[keep], merged[:, 4:].unflatten(-1, (5, 2)))
    return Detections(boxes[keep], cand_scores[keep], points[keep].unflatten(-1, (5, 2)))


def detect_batch(
    loc: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    priors: Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.02,
    pre_nms_top_k: int | None = 5000,
    nms_iou: float = 0.4,
    keep_top_k: int | None = 750,
    scales: Sequence[tuple[float, float]] | tuple[float, float] | None = None,
    variances: Sequence[float] = VARIANCES,
    nms_offset: float = 1.0,
    box_voting: bool = False,
) -> list[Detections]:
    """:func:`detect_from_outputs` for each image of a batch.

    Args:
        loc: ``(B, P, 4)``; scores: ``(B, P)`` face probabilities; landmarks: ``(B, P, 10)``;
        priors: ``(P, 4)`` shared by the batch (one network input size ``image_size = (H, W)``).
        scales: one ``(sx, sy)`` for all images, one per image, or ``None`` for ``(1, 1)``.
        Other arguments: as :func:`detect_from_outputs`.

    Returns:
        ``B`` :class:`Detections`, in batch order.
    """
    if loc.dim() != 3:
        raise ValueError(f"detect_batch: loc must have shape (B, P, 4), got {tuple(loc.shape)}")
    batch = loc.shape[0]
    if scores.dim() != 2 or scores.shape[0] != batch:
        raise ValueError(
            f"detect_batch: scores must have shape (B, P) = {(batch, loc.shape[1])}, got {tuple(scores.shape)}"
            " (pass face_scores(logits), the face probability, not the logits)"
        )
    if landmarks.dim() != 3 or landmarks.shape[0] != batch:
        raise ValueError(
            f"detect_batch: landmarks must have shape (B, P, 10) with B={batch}, got {tuple(landmarks.shape)}"
        )
    if scales is None:
        per_image: list[tuple[float, float]] = [(1.0, 1.0)] * batch
    elif len(scales) == 2 and all(isinstance(v, (int, float)) for v in scales):
        per_image = [(float(scales[0]), float(scales[1]))] * batch  # type: ignore[arg-type]
    else:
        per_image = [tuple(s) for s in scales]  # type: ignore[misc]
        if len(per_image) != batch:
            raise ValueError(f"detect_batch: scales has {len(per_image)} entries for a batch of {batch}")
    return [
        detect_from_outputs(
            loc[b], scores[b], landmarks[b], priors, image_size,
            score_threshold=score_threshold, pre_nms_top_k=pre_nms_top_k, nms_iou=nms_iou,
            keep_top_k=keep_top_k, scale=per_image[b], variances=variances, nms_offset=nms_offset,
            box_voting=box_voting,
        )
        for b in range(batch)
    ]
