"""Distillation terms on tiny cases worked out by hand, and the feature taps."""

from __future__ import annotations

import math

import pytest
import torch

from featherface.models.registry import create_model
from featherface.train.distill import (
    DistillationLoss,
    Distiller,
    FeatureTap,
    feature_distillation,
    output_distillation,
)
from featherface.train.loss import ExtraLoss
from tests.train import tiny_config


def _outputs(loc, logits, landm):
    return (torch.tensor([loc], dtype=torch.float32), torch.tensor([logits], dtype=torch.float32),
            torch.tensor([landm], dtype=torch.float32))


def test_output_terms_by_hand() -> None:
    # two priors; the teacher sees a face on prior 0 (p = sigmoid(2) = 0.881) and background on prior 1
    teacher = _outputs([[0.0] * 4, [0.0] * 4], [[0.0, 2.0], [0.0, -2.0]], [[0.0] * 10, [0.0] * 10])
    student = _outputs([[0.5, 0.0, 0.0, 2.0], [9.0] * 4], [[0.0, 0.0], [0.0, -2.0]], [[1.0] + [0.0] * 9, [9.0] * 10])
    cls, box, landm = output_distillation(student, teacher, score_threshold=0.5)
    p = 1 / (1 + math.exp(-2.0))
    kl0 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)  # prior 1 agrees exactly: KL 0
    assert cls.item() == pytest.approx(kl0, rel=1e-5)
    # one confident prior: smooth L1 (beta 1) of 0.5 -> 0.125, of 2.0 -> 1.5; landmarks 1.0 -> 0.5
    assert box.item() == pytest.approx(0.125 + 1.5)
    assert landm.item() == pytest.approx(0.5)


def test_output_terms_vanish_when_the_student_is_the_teacher() -> None:
    torch.manual_seed(0)
    out = (torch.randn(2, 6, 4), torch.randn(2, 6, 2) * 3, torch.randn(2, 6, 10))
    cls, box, landm = output_distillation(out, out, 0.3)
    assert abs(cls.item()) < 1e-6 and box.item() == 0 and landm.item() == 0


def test_output_terms_refuse_other_prior_layouts() -> None:
    a = (torch.zeros(1, 4, 4), torch.zeros(1, 4, 2), torch.zeros(1, 4, 10))
    b = (torch.zeros(1, 6, 4), torch.zeros(1, 6, 2), torch.zeros(1, 6, 10))
    with pytest.raises(ValueError, match="same priors"):
        output_distillation(a, b)


def test_feature_term_by_hand_and_shape_check() -> None:
    s = {"s3": torch.ones(1, 2, 2, 2), "s4": torch.zeros(1, 1, 1, 2)}
    t = {"s3": torch.zeros(1, 2, 2, 2), "s4": torch.tensor([[[[1.0, 3.0]]]])}
    assert feature_distillation(s, t).item() == pytest.approx(1.0 + (1 + 9) / 2)
    with pytest.raises(ValueError, match="s3"):
        feature_distillation({"s3": torch.ones(1, 2, 2, 2)}, {"s3": torch.ones(1, 3, 2, 2)})


def test_distiller_on_tiny_models() -> None:
    torch.manual_seed(0)
    student = create_model("featherface_none", width=16, bifpn_repeats=1)
    teacher = create_model("featherface_none", width=16, bifpn_repeats=1)
    teacher.load_state_dict(student.state_dict())
    distiller = Distiller(teacher, student, cls_weight=1.0, box_weight=2.0, landm_weight=3.0, feature_weight=4.0,
                          features=("p3", "s5"), score_threshold=0.0)
    x = torch.randn(2, 3, 64, 64) * 50
    student.eval()
    terms = distiller(x, student(x))
    assert terms.total.item() == pytest.approx(0.0, abs=1e-6)  # the student is the teacher
    with torch.no_grad():
        next(student.context[2].parameters()).add_(0.5)  # changes s5 and the P5 outputs
    terms = distiller(x, student(x))
    assert terms.feature.item() > 0
    expected = terms.cls + 2 * terms.box + 3 * terms.landm + 4 * terms.feature
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not any(p.requires_grad for p in teacher.parameters())
    distiller.close()
    assert not student.context[2]._forward_hooks


def test_distillation_loss_is_the_distillers_total_as_an_extra_term() -> None:
    torch.manual_seed(0)
    student = create_model("featherface_none", width=16, bifpn_repeats=1)
    teacher = create_model("featherface_none", width=16, bifpn_repeats=1)
    cfg = tiny_config(distill_cls=1.0, distill_box=2.0, distill_landm=3.0, distill_feature=4.0,
                      distill_features=("s5",), distill_score_threshold=0.0)
    term = DistillationLoss.from_config(cfg, teacher, student)
    assert isinstance(term, ExtraLoss)
    x = torch.randn(2, 3, 64, 64) * 50
    student.eval()
    loss = term(x, student(x), [])
    terms = term.distiller(x, student(x))
    assert list(loss) == ["distill"] and loss["distill"].item() == pytest.approx(terms.total.item(), rel=1e-6)
    assert terms.feature.item() > 0  # the config's feature term is on
    term.close()
    assert not student.context[2]._forward_hooks


def test_feature_tap_names() -> None:
    model = create_model("featherface_none", width=16, bifpn_repeats=1)
    tap = FeatureTap(model, ("c3", "p4", "s5"))
    model(torch.zeros(1, 3, 64, 64))
    assert tap.maps["c3"].shape[1] == 64 and tap.maps["p4"].shape[1] == 16 and tap.maps["s5"].shape[-1] == 2
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureTap(model, ("q3",))
