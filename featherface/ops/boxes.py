"""Box format conversions, areas, IoU and non-maximum suppression (pure tensor functions).

Formats (the last dimension, any leading dimensions):
- ``xyxy``: ``(x1, y1, x2, y2)``, top-left and bottom-right corners;
- ``xywh``: ``(x1, y1, w, h)``, top-left corner and size (the WIDER FACE label and prediction format);
- ``cxcywh``: ``(cx, cy, w, h)``, centre and size (the prior format).
Units are whatever the input uses (normalised for priors and matching, pixels for detections).

``offset`` (areas, IoU, NMS): the "+1" pixel convention of older detection code, where a box covering
pixels ``x1..x2`` inclusive is ``x2 - x1 + 1`` wide. Use ``offset=0`` (the default) for continuous
coordinates (matching, training) and ``offset=1`` to reproduce the RetinaFace / FeatherFace evaluation NMS
(``py_cpu_nms``), see :func:`nms`.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor

__all__ = [
    "xyxy_to_xywh",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_area",
    "box_iou",
    "nms",
    "suppression_owner",
    "vote",
]


def _check_boxes(name: str, boxes: Tensor, func: str) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{func}: {name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{func}: {name} must have shape (..., 4), got {tuple(boxes.shape)}")


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners -> ``(..., 4)`` top-left corner and size."""
    _check_boxes("boxes", boxes, "xyxy_to_xywh")
    return torch.cat((boxes[..., :2], boxes[..., 2:] - boxes[..., :2]), dim=-1)


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` top-left corner and size -> ``(..., 4)`` corners."""
    _check_boxes("boxes", boxes, "xywh_to_xyxy")
    return torch.cat((boxes[..., :2], boxes[..., :2] + boxes[..., 2:]), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners -> ``(..., 4)`` centre and size."""
    _check_boxes("boxes", boxes, "xyxy_to_cxcywh")
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre and size -> ``(..., 4)`` corners."""
    _check_boxes("boxes", boxes, "cxcywh_to_xyxy")
    half = boxes[..., 2:] / 2
    return torch.cat((boxes[..., :2] - half, boxes[..., :2] + half), dim=-1)


def box_area(boxes: Tensor, offset: float = 0.0) -> Tensor:
    """``(..., 4)`` xyxy boxes -> ``(...)`` areas ``(x2 - x1 + offset) * (y2 - y1 + offset)``."""
    _check_boxes("boxes", boxes, "box_area")
    return (boxes[..., 2] - boxes[..., 0] + offset) * (boxes[..., 3] - boxes[..., 1] + offset)


def box_iou(boxes1: Tensor, boxes2: Tensor, offset: float = 0.0) -> Tensor:
    """Pairwise IoU of ``(..., N, 4)`` and ``(..., M, 4)`` xyxy boxes -> ``(..., N, M)``.

    Leading dimensions broadcast. Intersections are clamped at zero; two empty boxes give ``nan`` (0 / 0).
    """
    _check_boxes("boxes1", boxes1, "box_iou")
    _check_boxes("boxes2", boxes2, "box_iou")
    if boxes1.dim() < 2 or boxes2.dim() < 2:
        raise ValueError(
            f"box_iou: expected (..., N, 4) and (..., M, 4), got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    a = boxes1[..., :, None, :]  # (..., N, 1, 4)
    b = boxes2[..., None, :, :]  # (..., 1, M, 4)
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (bottom_right - top_left + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1, offset)[..., :, None] + box_area(boxes2, offset)[..., None, :] - inter
    return inter / union


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: float = 0.0) -> Tensor:
    """Greedy non-maximum suppression, deterministic on ties.

    Boxes are visited by decreasing score, equal scores by increasing index (a stable sort); a box is kept
    unless its IoU (with ``offset``, see :func:`box_iou`) with an already kept box is **greater than**
    ``iou_threshold``, the comparison made in the boxes' precision (an IoU of exactly ``float32(0.4)`` is kept
    at threshold 0.4 in float32, as in the numpy reference; bare ``torchvision.ops.nms`` suppresses it).

    ``offset=1`` reproduces ``py_cpu_nms`` of the RetinaFace / FeatherFace evaluation scripts: its IoU uses
    widths ``x2 - x1 + 1``, which is algebraically the continuous IoU of boxes whose bottom-right corner is
    moved by ``+1`` (only the float rounding of the ``+1`` differs), so the work is delegated to
    :func:`torchvision.ops.nms` on shifted boxes. (Plain ``torchvision.ops.nms``, ``offset=0``, keeps a
    different set on real outputs: 56 of the 750 detections of the golden parade image differ.) Ties: ``py_cpu_nms`` orders by numpy's unstable ``argsort``, so on exactly equal
    scores its visiting order is implementation-defined; here it is the stable order, on every device,
    because torchvision only sees the strictly decreasing ranks.

    Args:
        boxes: ``(N, 4)`` xyxy.
        scores: ``(N,)``.
        iou_threshold: suppress when IoU > this.
        offset: the pixel-size convention (0 continuous, 1 legacy "+1").

    Returns:
        ``(K,)`` int64 indices into ``boxes``, by decreasing score.
    """
    _check_boxes("boxes", boxes, "nms")
    if boxes.dim() != 2 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms: expected boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}"
        )
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    work_dtype = boxes.dtype
    if not work_dtype.is_floating_point or torch.finfo(work_dtype).bits < 32:
        work_dtype = torch.float32
    if n >= 2**24 and work_dtype == torch.float32:
        work_dtype = torch.float64  # ranks must stay exact
    ordered = boxes[order].to(work_dtype)
    if offset != 0:
        ordered = torch.cat((ordered[:, :2], ordered[:, 2:] + offset), dim=1)
    ranks = torch.arange(n, 0, -1, device=boxes.device, dtype=work_dtype)  # strictly decreasing
    # torchvision compares the IoU, in the boxes' dtype, with a double threshold: an IoU of exactly
    # float32(0.4) = 0.40000000596 would be "> 0.4" and suppressed, where the reference (all float32) keeps
    # it. Rounding the threshold to the working dtype gives the reference's comparison.
    threshold = torch.tensor(float(iou_threshold), dtype=work_dtype).item()
    keep = torchvision.ops.nms(ordered, ranks, threshold)
    return order[keep]


def suppression_owner(boxes: Tensor, scores: Tensor, keep: Tensor, iou_threshold: float, offset: float = 0.0) -> Tensor:
    """For each box, the survivor of :func:`nms` that suppressed it.

    Greedy NMS removes a box when the first survivor visited before it (by decreasing score, equal scores by
    increasing index) overlaps it by IoU > ``iou_threshold``; that survivor owns it. A survivor owns itself.
    Boxes no survivor in ``keep`` overlaps (those after a ``keep_top_k`` cut) have no owner.

    Args:
        boxes: ``(N, 4)`` xyxy; scores: ``(N,)``; keep: ``(K,)`` int64 survivors in visiting order, as
            :func:`nms` returns them (possibly cut to its first ``K``); iou_threshold, offset: as for :func:`nms`.

    Returns:
        ``(N,)`` int64: the position in ``keep`` of each box's owner, ``-1`` for none.
    """
    n = boxes.shape[0]
    rank = torch.empty(n, dtype=torch.int64, device=boxes.device)
    rank[torch.sort(scores, descending=True, stable=True).indices] = torch.arange(n, device=boxes.device)
    work = boxes.float() if not boxes.dtype.is_floating_point or torch.finfo(boxes.dtype).bits < 32 else boxes
    if offset != 0:  # the IoU arithmetic of nms: corners moved first, so both make the same decisions
        work = torch.cat((work[:, :2], work[:, 2:] + offset), dim=1)
    threshold = torch.tensor(float(iou_threshold), dtype=work.dtype).item()
    suppresses = (box_iou(work[keep], work) > threshold) & (rank[keep][:, None] < rank[None, :])  # (K, N)
    owner = torch.where(suppresses.any(dim=0), suppresses.int().argmax(dim=0), -1)
    owner[keep] = torch.arange(keep.numel(), device=boxes.device)
    return owner


def vote(values: Tensor, scores: Tensor, owner: Tensor, count: int) -> Tensor:
    """Box voting: each survivor's values become the score-weighted mean over the boxes it owns (itself and the
    boxes it suppressed; see :func:`suppression_owner`).

    Args:
        values: ``(N, D)`` per-box values (e.g. xyxy boxes and landmarks, in pixels); scores: ``(N,)``, the weights;
        owner: ``(N,)`` int64 from :func:`suppression_owner`; count: the number of survivors ``K``.

    Returns:
        ``(K, D)`` in the dtype of ``values``, in the order of ``keep``.
    """
    owned = owner >= 0
    weights = scores[owned].to(values.dtype)
    total = torch.zeros(count, values.shape[1], dtype=values.dtype, device=values.device)
    total.index_add_(0, owner[owned], values[owned] * weights[:, None])
    norm = torch.zeros(count, dtype=values.dtype, device=values.device).index_add_(0, owner[owned], weights)
    return total / norm[:, None]
