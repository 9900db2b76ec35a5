"""Prior matching: assign ground-truth faces to priors and encode the regression targets.

The RetinaFace rules (Deng et al., "RetinaFace", CVPR 2020; the ``match`` of its public PyTorch
implementation, itself the SSD rule of Liu et al., ECCV 2016, with a floor on forced matches):

1. IoU between every ground-truth box and every prior (the prior taken as xyxy, continuous coordinates).
2. Each prior takes the ground truth of highest IoU (ties: the lowest index).
3. Each ground truth is *forced* onto its best prior (ties: the lowest prior index), which then counts as
   IoU 2 and belongs to that ground truth, unless that best IoU is below ``force_min_iou`` (0.2): such a
   "hard" ground truth is left unmatched by the forcing step. When two ground truths force the same prior,
   the later one (higher index) wins, as in the reference's sequential loop.
4. Priors whose (possibly forced) IoU is below ``iou_threshold`` (0.35) are background; the rest are faces.
   If no ground truth reaches the forcing floor, every prior is background (the reference returns early).

One deliberate difference from the reference: its forcing loop re-assigns the best prior of *every*
ground truth, including the hard ones filtered out in step 3, so a tiny face sharing its best prior with a
valid face could steal that (positive) prior and become its regression target. Here hard ground truths
take part in step 2 only, never in the forcing.

Conventions: boxes are normalised xyxy, landmarks normalised ``(x0, y0, ..., x4, y4)``, priors normalised
``(cx, cy, w, h)`` (see :mod:`featherface.ops.priors`, :mod:`featherface.ops.box_coding`). Pure functions:
the device follows the priors, the floating dtype is the promotion of the ground truth's and the priors'.
No host-device synchronisation is needed by :func:`match_priors`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from featherface.ops.box_coding import VARIANCES, encode_boxes, encode_landmarks
from featherface.ops.boxes import box_iou, cxcywh_to_xyxy

__all__ = ["MatchResult", "match_priors", "match_batch"]


class MatchResult(NamedTuple):
    """Per-prior training targets (``(P, ...)`` for one image, ``(B, P, ...)`` for a batch).

    Attributes:
        labels: int64, 1 face, 0 background.
        loc_targets: ``(..., 4)`` encoded box offsets of the matched face; zero on background priors.
        landm_targets: ``(..., 10)`` encoded landmark offsets; zero where ``landm_mask`` is false.
        landm_mask: bool, face priors whose matched face has landmarks.
        matched_gt: int64 index of the matched ground truth in its image, -1 on background priors.
    """

    labels: Tensor
    loc_targets: Tensor
    landm_targets: Tensor
    landm_mask: Tensor
    matched_gt: Tensor


def _check_thresholds(iou_threshold: float, force_min_iou: float) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"matching: iou_threshold must be in (0, 1], got {iou_threshold}")
    if not 0.0 <= force_min_iou <= 1.0:
        raise ValueError(f"matching: force_min_iou must be in [0, 1], got {force_min_iou}")


def _check_priors(priors: Tensor) -> None:
    if not isinstance(priors, Tensor):
        raise TypeError(f"matching: priors must be a torch.Tensor, got {type(priors).__name__}")
    if priors.dim() != 2 or priors.shape[1] != 4 or priors.shape[0] == 0:
        raise ValueError(f"matching: priors must have shape (P, 4) with P > 0, got {tuple(priors.shape)}")
    if not priors.is_floating_point():
        raise TypeError(f"matching: priors must be floating point, got {priors.dtype}")


def _check_gt(where: str, names: tuple[str, str, str], boxes: Tensor, landmarks: Tensor, has: Tensor) -> None:
    """Shapes and dtypes of one image's ground truth; errors read ``f"{where}{name} ..."``."""
    for name, tensor in zip(names, (boxes, landmarks, has)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{where}{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}{names[0]} must have shape (N, 4), got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if tuple(landmarks.shape) != (n, 10):
        raise ValueError(f"{where}{names[1]} must have shape ({n}, 10), got {tuple(landmarks.shape)}")
    if tuple(has.shape) != (n,):
        raise ValueError(f"{where}{names[2]} must have shape ({n},), got {tuple(has.shape)}")
    if not boxes.is_floating_point() or not landmarks.is_floating_point():
        raise TypeError(
            f"{where}{names[0]} and {names[1]} must be floating point, got {boxes.dtype} and {landmarks.dtype}"
        )


def _assign(boxes: Tensor, priors_xyxy: Tensor, iou_threshold: float, force_min_iou: float) -> Tensor:
    """The matching rules for one image.

    Args:
        boxes: ``(N, 4)`` xyxy ground truth, on the device and in the dtype of ``priors_xyxy``.
        priors_xyxy: ``(P, 4)`` priors as corners.

    Returns:
        ``(P,)`` int64 index of each prior's ground truth, -1 for background. No host sync.
    """
    n, num_priors = boxes.shape[0], priors_xyxy.shape[0]
    device = priors_xyxy.device
    if n == 0:
        return torch.full((num_priors,), -1, dtype=torch.int64, device=device)
    iou = box_iou(boxes, priors_xyxy)  # (N, P)
    best_prior_iou, best_prior = iou.max(dim=1)  # (N,): each GT's best prior
    best_gt_iou, best_gt = iou.max(dim=0)  # (P,): each prior's best GT

    # Forcing: every GT reaching the floor claims its best prior; on a shared prior the highest GT index wins
    # (a scatter-max of the GT index, where GTs below the floor contribute -1, the fill value).
    valid = best_prior_iou >= force_min_iou  # (N,)
    gt_index = torch.arange(n, device=device)
    claim = torch.where(valid, gt_index, torch.full_like(gt_index, -1))
    forced_gt = torch.full((num_priors,), -1, dtype=torch.int64, device=device)
    forced_gt = forced_gt.scatter_reduce(0, best_prior, claim, reduce="amax", include_self=True)  # (P,)
    forced = forced_gt >= 0
    best_gt = torch.where(forced, forced_gt, best_gt)
    best_gt_iou = torch.where(forced, torch.full_like(best_gt_iou, 2.0), best_gt_iou)

    # No GT reaching the floor: all background (the reference's early return).
    positive = (best_gt_iou >= iou_threshold) & valid.any()
    return torch.where(positive, best_gt, torch.full_like(best_gt, -1))


def _targets(
    boxes: Tensor,
    landmarks: Tensor,
    has_landmarks: Tensor,
    matched: Tensor,
    priors: Tensor,
    variances: Sequence[float],
) -> tuple[Tensor, Tensor, Tensor]:
    """Encode the targets of the face priors only.

    Args:
        boxes, landmarks, has_landmarks: ``(M, 4)``, ``(M, 10)``, ``(M,)`` bool: the ground truth of the whole
            batch, concatenated, on the priors' device and in their dtype.
        matched: ``(B, P)`` int64 index into the concatenated ground truth, -1 for background.
        priors: ``(P, 4)`` cxcywh.

    Returns:
        ``loc (B, P, 4)``, ``landm (B, P, 10)``, ``landm_mask (B, P)`` bool, zero / false on background.

    One host sync (``nonzero``): encoding the face priors only is about 100 times less work than encoding all
    ``B * P`` priors, the dominant cost otherwise.
    """
    batch, num_priors = matched.shape
    loc = boxes.new_zeros(batch, num_priors, 4)
    landm = boxes.new_zeros(batch, num_priors, 10)
    landm_mask = torch.zeros(batch, num_priors, dtype=torch.bool, device=matched.device)
    b, p = (matched >= 0).nonzero(as_tuple=True)
    if b.numel() == 0:
        return loc, landm, landm_mask
    g = matched[b, p]
    with_landmarks = has_landmarks[g]
    face_priors = priors[p]
    loc[b, p] = encode_boxes(boxes[g], face_priors, variances)
    encoded = encode_landmarks(landmarks[g], face_priors, variances)
    landm[b, p] = torch.where(with_landmarks[:, None], encoded, torch.zeros_like(encoded))
    landm_mask[b, p] = with_landmarks
    return loc, landm, landm_mask


def match_priors(
    gt_boxes: Tensor,
    gt_landmarks: Tensor,
    has_landmarks: Tensor,
    priors: Tensor,
    iou_threshold: float = 0.35,
    force_min_iou: float = 0.2,
    variances: Sequence[float] = VARIANCES,
) -> MatchResult:
    """Match the ground truth of one image to the priors (rules in the module docstring).

    Args:
        gt_boxes: ``(N, 4)`` normalised xyxy face boxes (``N`` may be 0).
        gt_landmarks: ``(N, 10)`` normalised landmark points (any values where ``has_landmarks`` is false).
        has_landmarks: ``(N,)`` bool (or 0/1), whether each face has landmark annotations.
        priors: ``(P, 4)`` normalised cxcywh priors.
        iou_threshold: a prior is a face when its IoU with its ground truth is at least this.
        force_min_iou: a ground truth is forced onto its best prior only when their IoU is at least this.
        variances: the box / landmark coding variances.

    Returns:
        A :class:`MatchResult` of ``(P, ...)`` tensors on the priors' device (the ground truth is moved there),
        floating ones in the promoted dtype of ``gt_boxes`` and ``priors``.
    """
    _check_gt("match_priors: ", ("gt_boxes", "gt_landmarks", "has_landmarks"), gt_boxes, gt_landmarks, has_landmarks)
    result = _match([(gt_boxes, gt_landmarks, has_landmarks)], priors, iou_threshold, force_min_iou, variances)
    return MatchResult(*(t[0] for t in result))


def _match(
    ground_truth: Sequence[tuple[Tensor, Tensor, Tensor]],
    priors: Tensor,
    iou_threshold: float,
    force_min_iou: float,
    variances: Sequence[float],
) -> MatchResult:
    """Match ``B`` images given as ``(boxes, landmarks, has_landmarks)``; returns ``(B, P, ...)`` tensors."""
    _check_priors(priors)
    _check_thresholds(iou_threshold, force_min_iou)
    device = priors.device
    dtype = functools.reduce(torch.promote_types, (gt[0].dtype for gt in ground_truth), priors.dtype)
    priors = priors.to(dtype)
    priors_xyxy = cxcywh_to_xyxy(priors)
    boxes = [gt[0].to(device=device, dtype=dtype) for gt in ground_truth]
    matched = torch.stack([_assign(b, priors_xyxy, iou_threshold, force_min_iou) for b in boxes])  # (B, P)
    # Index into the concatenated ground truth of the batch, for one batched encoding.
    starts = torch.tensor([0] + [b.shape[0] for b in boxes][:-1], device=device).cumsum(0)  # (B,)
    matched_all = torch.where(matched >= 0, matched + starts[:, None], matched)
    loc, landm, landm_mask = _targets(
        torch.cat(boxes),
        torch.cat([gt[1].to(device=device, dtype=dtype) for gt in ground_truth]),
        torch.cat([gt[2].to(device=device) != 0 for gt in ground_truth]),
        matched_all,
        priors,
        variances,
    )
    return MatchResult(
        labels=(matched >= 0).to(torch.int64),
        loc_targets=loc,
        landm_targets=landm,
        landm_mask=landm_mask,
        matched_gt=matched,
    )


def _target_tensors(index: int, target: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``(boxes, landmarks, has_landmarks)`` of ``targets[index]``; landmarks are optional (absent: none)."""
    where = f"match_batch: targets[{index}]"
    if not isinstance(target, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(target).__name__}")
    if "boxes" not in target:
        raise KeyError(f"{where} has no 'boxes' key (keys: {sorted(target)})")
    boxes = target["boxes"]
    if "landmarks" in target:
        if "has_landmarks" not in target:
            raise KeyError(f"{where} has 'landmarks' but no 'has_landmarks'")
        landmarks, has = target["landmarks"], target["has_landmarks"]
    elif isinstance(boxes, Tensor) and boxes.dim() == 2:
        landmarks = boxes.new_zeros(boxes.shape[0], 10)
        has = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    else:
        landmarks, has = torch.zeros(0, 10), torch.zeros(0, dtype=torch.bool)  # the boxes check below fails
    _check_gt(where, ("['boxes']", "['landmarks']", "['has_landmarks']"), boxes, landmarks, has)
    return boxes, landmarks, has


def match_batch(
    targets: Sequence[Mapping[str, Tensor]],
    priors: Tensor,
    iou_threshold: float = 0.35,
    force_min_iou: float = 0.2,
    variances: Sequence[float] = VARIANCES,
) -> MatchResult:
    """Match every image of a batch (the rules of :func:`match_priors`) and stack the results.

    Args:
        targets: ``B`` dicts with ``"boxes"`` ``(N_i, 4)`` normalised xyxy and, optionally, ``"landmarks"``
            ``(N_i, 10)`` with ``"has_landmarks"`` ``(N_i,)`` bool (without them no face has landmarks).
        priors: ``(P, 4)`` normalised cxcywh priors, shared by the batch.
        iou_threshold, force_min_iou, variances: as in :func:`match_priors`.

    Returns:
        A :class:`MatchResult` of ``(B, P, ...)`` tensors on the priors' device; ``matched_gt`` indexes each
        image's own ground truth.

    The IoU matrices are computed one image at a time (``(N_i, P)`` each), so memory stays bounded on crowded
    images (a padded ``(B, N_max, P)`` one reaches gigabytes at ``P = 16,800`` with hundreds of faces); the
    target encoding is batched.
    """
    if len(targets) == 0:
        raise ValueError("match_batch: targets is empty (one dict per image is needed)")
    ground_truth = [_target_tensors(i, target) for i, target in enumerate(targets)]
    return _match(ground_truth, priors, iou_threshold, force_min_iou, variances)
