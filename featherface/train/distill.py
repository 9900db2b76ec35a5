"""Knowledge distillation from a trained FeatherFace (the teacher) into the model being trained (the student).

Two kinds of term, each with its weight in ``params.yaml`` (``train.distill_*``):

* **Output level**, for any teacher with the same prior layout (every FeatherFace variant: 2 anchors per
  location at strides 8 / 16 / 32). With ``p_t``, ``p_s`` the teacher's and the student's face probability of a
  prior (softmax of the two logits) and ``C`` the priors where ``p_t > score_threshold`` (the teacher sees a
  face; at least 1 in the denominators)::

      cls   = sum over all priors of KL(Bernoulli(p_t) || Bernoulli(p_s)) / |C|
      box   = sum over C of smoothL1(loc_s - loc_t) / |C|          (encoded offsets, beta 1)
      landm = sum over C of smoothL1(landm_s - landm_t) / |C|

  The normalisation by ``|C|`` mirrors the ground-truth loss, which divides by the number of matched priors.
* **Feature level**, when the teacher shares the student's trunk shapes: the mean squared difference of named
  intermediate maps (:data:`~featherface.train.config.FEATURE_MODULES`: ``c3..c5`` after the backbone
  attention sites, ``p3..p5`` after the BiFPN attention sites, ``s3..s5`` the SSH outputs), summed over the
  names.

The teacher runs in eval mode under ``torch.no_grad`` on the same augmented batch as the student. In training,
:class:`DistillationLoss` is the trainer's extra loss term (:class:`~featherface.train.loss.ExtraLoss`) ``distill``.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from featherface.train.config import FEATURE_MODULES, TrainConfig

__all__ = ["DistillTerms", "DistillationLoss", "Distiller", "FeatureTap", "feature_distillation",
           "output_distillation"]


class DistillTerms(NamedTuple):
    """Unweighted distillation terms of one batch (scalars) and their weighted sum ``total``."""

    total: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor
    landm: torch.Tensor
    feature: torch.Tensor


def _face_log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_background, log p_face), each (B, P), from (B, P, 2) logits."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return log_p[..., 0], log_p[..., 1]


def output_distillation(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    score_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output-level terms ``(cls, box, landm)`` (see the module docstring).

    Args:
        student, teacher: raw outputs ``(loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10))`` of the same
            images (the same P).
        score_threshold: teacher face probability above which a prior counts as a face for the box and landmark
            terms and the normalisation.
    """
    s_loc, s_logits, s_landm = student
    t_loc, t_logits, t_landm = teacher
    if s_logits.shape != t_logits.shape:
        raise ValueError(f"output distillation needs the same priors: student logits {tuple(s_logits.shape)}, "
                         f"teacher {tuple(t_logits.shape)} (a teacher with another prior layout?)")
    s_bg, s_face = _face_log_probs(s_logits)
    t_bg, t_face = _face_log_probs(t_logits)
    p_face, p_bg = t_face.exp(), t_bg.exp()
    kl = p_face * (t_face - s_face) + p_bg * (t_bg - s_bg)  # (B, P)
    confident = p_face > score_threshold
    count = confident.sum().clamp(min=1).to(kl.dtype)
    cls = kl.sum() / count
    box = F.smooth_l1_loss(s_loc[confident].float(), t_loc[confident].float(), reduction="sum", beta=1.0) / count
    landm = F.smooth_l1_loss(s_landm[confident].float(), t_landm[confident].float(), reduction="sum",
                             beta=1.0) / count
    return cls, box, landm


def feature_distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over the names of ``mean((student[name] - teacher[name])^2)``; shapes must agree."""
    total = None
    for name, s in student.items():
        t = teacher[name]
        if s.shape != t.shape:
            raise ValueError(f"feature distillation at {name!r}: student map {tuple(s.shape)}, teacher "
                             f"{tuple(t.shape)}; the teacher must share the student's trunk shapes there")
        term = F.mse_loss(s.float(), t.float())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("feature distillation: no feature maps were captured")
    return total


class FeatureTap:
    """Forward hooks that keep the outputs of a model's named feature maps
    (:data:`~featherface.train.config.FEATURE_MODULES`).

    Args:
        model: a FeatherFace (or a wrapper whose submodule names carry the same suffixes).
        names: feature names (keys of :data:`~featherface.train.config.FEATURE_MODULES`).

    ``tap.maps`` holds the outputs of the last forward; :meth:`close` removes the hooks.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in FEATURE_MODULES]
        if unknown:
            raise ValueError(f"unknown feature names {unknown}; known: {sorted(FEATURE_MODULES)}")
        modules = dict(model.named_modules())
        self.maps: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        for name in names:
            module = modules.get(FEATURE_MODULES[name])
            if module is None:
                raise ValueError(f"the model has no module {FEATURE_MODULES[name]!r} (feature {name!r})")
            self._handles.append(module.register_forward_hook(self._keeper(name)))

    def _keeper(self, name: str):  # noqa: ANN202 (a hook)
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.maps[name] = output
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class Distiller:
    """Computes the distillation terms for the student's last forward.

    Args:
        teacher: the teacher model (put in eval mode, its parameters frozen).
        student: the student (hooks are registered on it for the feature terms).
        cls_weight, box_weight, landm_weight, feature_weight: weights of the terms (0 skips a term; the feature
            hooks are only registered when ``feature_weight > 0``).
        features: feature names for the feature term.
        score_threshold: see :func:`output_distillation`.

    Usage per step: ``outputs = student(images)``, then ``terms = distiller(images, outputs)``.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        landm_weight: float = 1.0,
        feature_weight: float = 0.0,
        features: Sequence[str] = ("s3", "s4", "s5"),
        score_threshold: float = 0.5,
    ) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weights = (float(cls_weight), float(box_weight), float(landm_weight), float(feature_weight))
        self.score_threshold = float(score_threshold)
        use_features = feature_weight > 0 and len(features) > 0
        self.student_tap = FeatureTap(student, features) if use_features else None
        self.teacher_tap = FeatureTap(self.teacher, features) if use_features else None

    def __call__(self, images: torch.Tensor, student_outputs: Sequence[torch.Tensor]) -> DistillTerms:
        with torch.no_grad():
            teacher_outputs = self.teacher(images)
        cls, box, landm = output_distillation(student_outputs, teacher_outputs, self.score_threshold)
        if self.student_tap is not None and self.teacher_tap is not None:
            feature = feature_distillation(self.student_tap.maps, self.teacher_tap.maps)
        else:
            feature = cls.new_zeros(())
        w_cls, w_box, w_landm, w_feature = self.weights
        total = w_cls * cls + w_box * box + w_landm * landm + w_feature * feature
        return DistillTerms(total, cls, box, landm, feature)

    def close(self) -> None:
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.close()


class DistillationLoss:
    """Distillation as the trainer's extra loss term (:class:`~featherface.train.loss.ExtraLoss`):
    ``{"distill": weighted sum of the terms}`` for the student's last forward (``targets`` are not used).

    Args:
        distiller: the teacher and the weights of the terms.
    """

    def __init__(self, distiller: Distiller) -> None:
        self.distiller = distiller

    @classmethod
    def from_config(cls, config: TrainConfig, teacher: nn.Module, student: nn.Module) -> DistillationLoss:
        """The term with the ``train.distill_*`` weights, features and score threshold."""
        return cls(Distiller(teacher, student, cls_weight=config.distill_cls, box_weight=config.distill_box,
                             landm_weight=config.distill_landm, feature_weight=config.distill_feature,
                             features=config.distill_features, score_threshold=config.distill_score_threshold))

    def __call__(self, images: torch.Tensor, outputs: Sequence[torch.Tensor],
                 targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {"distill": self.distiller(images, outputs).total}

    def close(self) -> None:
        """Remove the feature hooks."""
        self.distiller.close()
