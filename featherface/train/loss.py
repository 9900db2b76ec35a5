"""The RetinaFace / FeatherFace multibox loss: box, face-vs-background and landmark terms.

``total = loc_weight * L_box + L_cls + landm_weight * L_landm`` (2, 1, 1: Deng et al., "RetinaFace",
CVPR 2020, and the FeatherFace training recipe), where, over the whole batch, with ``N`` the number of face
priors (at least 1) and ``N_l`` the number of face priors whose face has landmarks (at least 1):

- ``L_box``: smooth L1 (beta 1) between predicted and encoded box offsets, summed over the 4 offsets of every
  face prior, divided by ``N``;
- ``L_cls``: cross-entropy (logit column 1 = face) summed over the face priors and the hard negatives, divided
  by ``N``. Hard-negative mining (Liu et al., "SSD", ECCV 2016): per image, the background priors ranked by
  their cross-entropy, the ``min(max(neg_pos_ratio * n_pos, min_negatives), P - 1)`` highest kept (all of them
  when fewer are available);
- ``L_landm``: smooth L1 over the 10 landmark offsets of the face priors matched to a face with landmarks,
  divided by ``N_l``; zero when there are none.

Images without faces: the reference keeps ``neg_pos_ratio * 0 = 0`` negatives, so such an image teaches
nothing. Here ``min_negatives`` (default: ``neg_pos_ratio``, i.e. as if the image held one face prior)
hardest negatives are kept, so face-free crops still penalise false positives; ``min_negatives=0`` restores
the reference. Their cross-entropy shares the batch normaliser ``N`` (1 when the whole batch is empty), so
box and landmark terms are exactly 0 and every term stays finite.

Device and dtype: matching runs on the outputs' device (targets and priors are moved there); the loss is
computed in the outputs' dtype promoted to at least float32 (half-precision outputs are upcast). A forward
makes a few host-device synchronisations (the face-prior indices, the top-k size of the mining); it costs
about 65 ms for B = 32, P = 16,800 on two (shared) CPU cores, most of it the matching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featherface.ops.box_coding import VARIANCES
from featherface.ops.matching import match_batch

__all__ = ["ExtraLoss", "LossTerms", "MultiBoxLoss", "hard_negative_mask"]


class LossTerms(NamedTuple):
    """The loss and its parts, 0-d tensors: ``total`` (differentiable), the unweighted ``loc``, ``cls`` and
    ``landm`` terms (differentiable), and ``num_pos`` (int64), the number of face priors in the batch."""

    total: Tensor
    loc: Tensor
    cls: Tensor
    landm: Tensor
    num_pos: Tensor


def hard_negative_mask(
    loss: Tensor, positive: Tensor, neg_pos_ratio: int = 7, min_negatives: int = 0
) -> Tensor:
    """Hard negatives per image: the background priors of highest classification loss.

    Args:
        loss: ``(B, P)`` per-prior loss used for ranking (not differentiated through).
        positive: ``(B, P)`` bool, face priors (never selected).
        neg_pos_ratio: negatives kept per face prior.
        min_negatives: at least this many negatives per image (images without faces included).

    Returns:
        ``(B, P)`` bool; image ``b`` has ``min(max(neg_pos_ratio * n_b, min_negatives), P - 1, P - n_b)`` true
        entries, ``n_b`` its number of face priors. Which of several equal losses is kept at the boundary is
        unspecified (their sum is not).
    """
    if loss.dim() != 2 or positive.shape != loss.shape:
        raise ValueError(
            f"hard_negative_mask: expected loss and positive of shape (B, P), got {tuple(loss.shape)} and "
            f"{tuple(positive.shape)}"
        )
    batch, num_priors = loss.shape
    num_neg = (positive.sum(dim=1) * neg_pos_ratio).clamp(min=min_negatives, max=num_priors - 1)  # (B,)
    # Only the top max(num_neg) of each row are needed: a partial top-k is 4-5x cheaper than a full sort at
    # P = 16,800 (one host sync for k). Faces rank last (-inf), so they are reached only when fewer
    # negatives than num_neg exist, and are then removed by the final mask.
    k = int(num_neg.max())
    mask = torch.zeros_like(positive)
    if k == 0:
        return mask
    ranking = loss.detach().masked_fill(positive, float("-inf"))
    top = ranking.topk(k, dim=1, largest=True, sorted=True).indices  # (B, k)
    keep = torch.arange(k, device=loss.device)[None, :] < num_neg[:, None]  # (B, k)
    return mask.scatter_(1, top, keep) & ~positive


class MultiBoxLoss(nn.Module):
    """Matching + multibox loss (see the module docstring). No learnable weights.

    Args:
        neg_pos_ratio: hard negatives kept per face prior (7).
        iou_threshold: matching threshold (0.35).
        loc_weight: weight of the box term (2.0).
        landm_weight: weight of the landmark term (1.0).
        variances: box / landmark coding variances.
        force_min_iou: floor for forcing a face onto its best prior (0.2).
        min_negatives: hard negatives kept at least per image (``None``: ``neg_pos_ratio``; 0: reference).
    """

    def __init__(
        self,
        neg_pos_ratio: int = 7,
        iou_threshold: float = 0.35,
        loc_weight: float = 2.0,
        landm_weight: float = 1.0,
        variances: Sequence[float] = VARIANCES,
        force_min_iou: float = 0.2,
        min_negatives: int | None = None,
    ) -> None:
        super().__init__()
        if int(neg_pos_ratio) != neg_pos_ratio or neg_pos_ratio < 1:
            raise ValueError(f"MultiBoxLoss: neg_pos_ratio must be a positive integer, got {neg_pos_ratio}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"MultiBoxLoss: iou_threshold must be in (0, 1], got {iou_threshold}")
        if not 0.0 <= force_min_iou <= 1.0:
            raise ValueError(f"MultiBoxLoss: force_min_iou must be in [0, 1], got {force_min_iou}")
        if loc_weight < 0 or landm_weight < 0:
            raise ValueError(
                f"MultiBoxLoss: loc_weight and landm_weight must be >= 0, got {loc_weight} and {landm_weight}"
            )
        if len(variances) != 2 or any(v <= 0 for v in variances):
            raise ValueError(f"MultiBoxLoss: variances must be two positive numbers, got {tuple(variances)!r}")
        if min_negatives is None:
            min_negatives = int(neg_pos_ratio)
        if int(min_negatives) != min_negatives or min_negatives < 0:
            raise ValueError(f"MultiBoxLoss: min_negatives must be a non-negative integer, got {min_negatives}")
        self.neg_pos_ratio = int(neg_pos_ratio)
        self.iou_threshold = float(iou_threshold)
        self.force_min_iou = float(force_min_iou)
        self.loc_weight = float(loc_weight)
        self.landm_weight = float(landm_weight)
        self.variances = (float(variances[0]), float(variances[1]))
        self.min_negatives = int(min_negatives)

    def extra_repr(self) -> str:
        return (
            f"neg_pos_ratio={self.neg_pos_ratio}, iou_threshold={self.iou_threshold}, "
            f"force_min_iou={self.force_min_iou}, loc_weight={self.loc_weight}, landm_weight={self.landm_weight}, "
            f"variances={self.variances}, min_negatives={self.min_negatives}"
        )

    def forward(
        self,
        outputs: tuple[Tensor, Tensor, Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        priors: Tensor,
    ) -> LossTerms:
        """Loss of a batch.

        Args:
            outputs: the model's raw ``(loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10))``.
            targets: ``B`` dicts: ``"boxes"`` ``(N_i, 4)`` normalised xyxy, ``"landmarks"`` ``(N_i, 10)``
                normalised, ``"has_landmarks"`` ``(N_i,)`` bool (see :func:`~featherface.ops.matching.match_batch`).
            priors: ``(P, 4)`` normalised cxcywh priors of the input size.

        Returns:
            :class:`LossTerms`.
        """
        loc, logits, landm = self._check(outputs, targets, priors)
        batch, num_priors = logits.shape[:2]
        dtype = torch.promote_types(loc.dtype, torch.float32)
        loc, logits, landm = loc.to(dtype), logits.to(dtype), landm.to(dtype)

        with torch.no_grad():
            match = match_batch(
                targets, priors.to(loc.device), self.iou_threshold, self.force_min_iou, self.variances
            )
        positive = match.labels > 0  # (B, P)
        num_pos = positive.sum()
        norm = num_pos.clamp(min=1).to(dtype)
        num_landm = match.landm_mask.sum()
        norm_landm = num_landm.clamp(min=1).to(dtype)

        # Boolean indexing keeps the smooth L1 terms to the face priors (5x cheaper than masking B * P * 14).
        loss_loc = F.smooth_l1_loss(
            loc[positive], match.loc_targets[positive].to(dtype), reduction="sum", beta=1.0
        ) / norm
        landm_mask = match.landm_mask
        loss_landm = F.smooth_l1_loss(
            landm[landm_mask], match.landm_targets[landm_mask].to(dtype), reduction="sum", beta=1.0
        ) / norm_landm

        # Two-class cross-entropy of every prior, as softplus of the logit margin against its label
        # (log(1 + exp(l_other - l_label)); identical to F.cross_entropy, half its cost at this size).
        margin = logits[..., 1] - logits[..., 0]  # (B, P), face minus background
        ce = F.softplus(torch.where(positive, -margin, margin))
        negative = hard_negative_mask(ce, positive, self.neg_pos_ratio, self.min_negatives)
        loss_cls = torch.where(positive | negative, ce, torch.zeros_like(ce)).sum() / norm

        total = self.loc_weight * loss_loc + loss_cls + self.landm_weight * loss_landm
        return LossTerms(total=total, loc=loss_loc, cls=loss_cls, landm=loss_landm, num_pos=num_pos)

    @staticmethod
    def _check(
        outputs: tuple[Tensor, Tensor, Tensor], targets: Sequence[Mapping[str, Tensor]], priors: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 3:
            raise ValueError("MultiBoxLoss: outputs must be the tuple (loc, logits, landmarks)")
        loc, logits, landm = outputs
        for name, tensor, last in (("loc", loc, 4), ("logits", logits, 2), ("landmarks", landm, 10)):
            if not isinstance(tensor, Tensor) or tensor.dim() != 3 or tensor.shape[-1] != last:
                got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(f"MultiBoxLoss: {name} must have shape (B, P, {last}), got {got}")
            if not tensor.is_floating_point():
                raise TypeError(f"MultiBoxLoss: {name} must be floating point, got {tensor.dtype}")
        if not (loc.shape[:2] == logits.shape[:2] == landm.shape[:2]):
            raise ValueError(
                f"MultiBoxLoss: loc, logits and landmarks disagree on (B, P): {tuple(loc.shape)}, "
                f"{tuple(logits.shape)}, {tuple(landm.shape)}"
            )
        batch, num_priors = loc.shape[:2]
        if not isinstance(priors, Tensor) or tuple(priors.shape) != (num_priors, 4):
            got = tuple(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__
            raise ValueError(f"MultiBoxLoss: priors must have shape ({num_priors}, 4) to match the outputs, got {got}")
        if len(targets) != batch:
            raise ValueError(f"MultiBoxLoss: {len(targets)} targets for a batch of {batch} outputs")
        return loc, logits, landm


@runtime_checkable
class ExtraLoss(Protocol):
    """A loss term the trainer adds to the ground-truth loss (``train.gt_weight`` x :class:`MultiBoxLoss`) at
    every step, e.g. :class:`~featherface.train.distill.DistillationLoss`.

    Called right after the model's forward, inside the same autocast region, with:

    * ``images``: the batch, (B, 3, S, S) on the model's device;
    * ``outputs``: the model's raw outputs ``(loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10))`` as it
      returned them (half precision under autocast);
    * ``targets``: the batch's per-image target dicts (``boxes``, ``landmarks``, ``has_landmarks``) on the device.

    It returns ``{name: 0-d tensor}``, weights already applied. Each value is added to the loss that is
    back-propagated and reported (``StepInfo.loss``, the ``loss`` column of ``metrics.csv``), and its mean over
    the epoch's steps and ranks becomes the ``metrics.csv`` column ``name``. A term returns the same names at
    every step, none of them a base column of ``metrics.csv``. A non-finite value stops training like a
    non-finite ground-truth term.
    """

    def __call__(self, images: Tensor, outputs: Sequence[Tensor],
                 targets: Sequence[Mapping[str, Tensor]]) -> Mapping[str, Tensor]: ...
