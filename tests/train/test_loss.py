"""Multibox loss: hand-computed values, hard-negative mining, empty / landmark-free targets, gradients, a fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from featherface.train.loss import LossTerms, MultiBoxLoss, hard_negative_mask
from featherface.ops.matching import match_batch
from featherface.ops.priors import make_priors

# One face prior at the image centre and two far away (IoU 0 with the face below).
PRIORS = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]])
FACE = torch.tensor([[0.4, 0.4, 0.6, 0.6]])  # exactly the first prior: box offsets 0
# Landmark offsets are (point - centre) / (0.1 * 0.2): points .01 and .04 away give offsets .5 and 2.
POINTS = torch.tensor([[0.51, 0.5, 0.54, 0.46, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])


def _target(boxes: torch.Tensor, landmarks: torch.Tensor | None = None, has: bool = True) -> dict[str, torch.Tensor]:
    n = boxes.shape[0]
    landmarks = torch.zeros(n, 10) if landmarks is None else landmarks
    return {"boxes": boxes, "landmarks": landmarks, "has_landmarks": torch.full((n,), has)}


def _empty_target() -> dict[str, torch.Tensor]:
    return _target(torch.zeros(0, 4))


def _hand_outputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loc = torch.tensor([[[0.5, -2.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0], [-5.0, 5.0, 5.0, -5.0]]], dtype=dtype)
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [math.log(3.0), 0.0]]], dtype=dtype)
    landm = torch.zeros(1, 3, 10, dtype=dtype)
    landm[0, 1:] = 7.0  # background priors: must not count
    return loc, logits, landm


def test_hand_computed_loss():
    terms = MultiBoxLoss()(_hand_outputs(), [_target(FACE, POINTS)], PRIORS)
    assert isinstance(terms, LossTerms)
    # Box: smoothL1(.5) + smoothL1(-2) = .125 + 1.5 over one face prior.
    expected_loc = 1.625
    # Class: 1 face prior + min(7 * 1, P - 1 = 2) = 2 negatives:
    # face (0, 0): ln 2; background (0, ln 3): ln(1 + 3) = ln 4; background (ln 3, 0): ln(1 + 1/3).
    expected_cls = math.log(2.0) + math.log(4.0) + math.log(4.0 / 3.0)
    # Landmarks: targets (.5, 0, 2, -2, 0...) against zero predictions: .125 + 1.5 + 1.5.
    expected_landm = 3.125
    assert terms.num_pos.item() == 1
    assert terms.loc.item() == pytest.approx(expected_loc, abs=1e-5)
    assert terms.cls.item() == pytest.approx(expected_cls, abs=1e-5)
    assert terms.landm.item() == pytest.approx(expected_landm, abs=1e-4)
    assert terms.total.item() == pytest.approx(2 * expected_loc + expected_cls + expected_landm, abs=1e-4)
    weighted = MultiBoxLoss(loc_weight=0.5, landm_weight=3.0)(_hand_outputs(), [_target(FACE, POINTS)], PRIORS)
    assert weighted.total.item() == pytest.approx(0.5 * expected_loc + expected_cls + 3 * expected_landm, abs=1e-4)


def test_hard_negative_mask_counts_and_picks_the_highest():
    gen = torch.Generator().manual_seed(0)
    loss = torch.rand(4, 20, generator=gen)
    positive = torch.zeros(4, 20, dtype=torch.bool)
    positive[0, [3, 11]] = True  # 2 faces: 14 negatives
    positive[1, 5] = True  # 1 face: 7 negatives
    positive[2, :3] = True  # 3 faces: 7 * 3 = 21 -> P - 1 = 19, but only 17 negatives exist
    # row 3: no face
    mask = hard_negative_mask(loss, positive, neg_pos_ratio=7, min_negatives=0)
    assert mask.sum(dim=1).tolist() == [14, 7, 17, 0]
    assert not (mask & positive).any()
    for row, count in ((0, 14), (1, 7)):
        negatives = loss[row].masked_fill(positive[row], -1.0)
        expected = negatives.topk(count).indices
        assert set(mask[row].nonzero().flatten().tolist()) == set(expected.tolist())
    # A floor for images without faces (and only a floor: rows with faces keep 7 per face).
    floored = hard_negative_mask(loss, positive, neg_pos_ratio=7, min_negatives=5)
    assert floored.sum(dim=1).tolist() == [14, 7, 17, 5]
    assert set(floored[3].nonzero().flatten().tolist()) == set(loss[3].topk(5).indices.tolist())


def test_hard_negative_count_is_clamped_to_p_minus_1():
    loss = torch.arange(10.0).repeat(2, 1)
    positive = torch.zeros(2, 10, dtype=torch.bool)
    positive[0, 0] = True  # 1 face, 9 negatives: 7 kept
    positive[1, 0] = True  # ratio 20: 20 -> P - 1 = 9 = all negatives
    assert hard_negative_mask(loss[:1], positive[:1], 7).sum().item() == min(7 * 1, 10 - 1) == 7
    assert hard_negative_mask(loss[1:], positive[1:], 20).sum().item() == min(20 * 1, 10 - 1) == 9


def test_loss_keeps_exactly_7_negatives_per_face_prior():
    # Two faces on a 64 x 64 input; only the kept negatives may receive a classification gradient.
    priors = make_priors(64, 64)
    faces = torch.tensor([[0.1, 0.1, 0.35, 0.35], [0.55, 0.5, 0.9, 0.95]])
    gen = torch.Generator().manual_seed(3)
    p = priors.shape[0]
    logits = torch.randn(1, p, 2, generator=gen).requires_grad_()
    outputs = (torch.zeros(1, p, 4), logits, torch.zeros(1, p, 10))
    terms = MultiBoxLoss()(outputs, [_target(faces)], priors)
    terms.cls.backward()
    num_pos = terms.num_pos.item()
    assert num_pos >= 2
    touched = logits.grad[0].abs().sum(dim=1) > 0
    assert touched.sum().item() == num_pos + min(7 * num_pos, p - 1)
    # And the value is the sum of the face CEs and of the 7 * num_pos largest background CEs.
    labels = match_batch([_target(faces)], priors).labels[0]
    ce = F.cross_entropy(logits[0].detach(), labels, reduction="none")
    expected = ce[labels == 1].sum() + ce[labels == 0].topk(7 * num_pos).values.sum()
    assert terms.cls.item() == pytest.approx(expected.item() / num_pos, rel=1e-5)


def _reference_loss(outputs, targets, priors, ratio=7):
    """The RetinaFace reference formulation: double argsort ranks, F.cross_entropy on the selection."""
    loc, logits, landm = outputs
    m = match_batch(targets, priors)
    pos = m.labels > 0
    n = max(pos.sum().item(), 1)
    n_l = max(m.landm_mask.sum().item(), 1)
    loss_l = F.smooth_l1_loss(loc[pos], m.loc_targets[pos], reduction="sum") / n
    loss_lm = F.smooth_l1_loss(landm[m.landm_mask], m.landm_targets[m.landm_mask], reduction="sum") / n_l
    ce = F.cross_entropy(logits.reshape(-1, 2), m.labels.reshape(-1), reduction="none").view(pos.shape)
    ce = ce.detach().masked_fill(pos, 0.0)
    rank = ce.argsort(dim=1, descending=True).argsort(dim=1)
    num_neg = (ratio * pos.sum(dim=1, keepdim=True)).clamp(max=pos.shape[1] - 1)
    keep = pos | (rank < num_neg)
    loss_c = F.cross_entropy(logits[keep], m.labels[keep], reduction="sum") / n
    return loss_l, loss_c, loss_lm


def test_agrees_with_the_reference_formulation_on_a_random_batch():
    gen = torch.Generator().manual_seed(7)
    priors = make_priors(96, 128)
    p = priors.shape[0]
    targets = []
    for n, has in ((3, True), (1, False), (5, True)):
        xy = torch.rand(n, 2, generator=gen) * 0.7
        boxes = torch.cat((xy, xy + 0.05 + torch.rand(n, 2, generator=gen) * 0.25), dim=1)
        targets.append(_target(boxes, torch.rand(n, 10, generator=gen), has))
    outputs = tuple(torch.randn(3, p, k, generator=gen) for k in (4, 2, 10))
    terms = MultiBoxLoss(min_negatives=0)(outputs, targets, priors)
    loss_l, loss_c, loss_lm = _reference_loss(outputs, targets, priors)
    torch.testing.assert_close(terms.loc, loss_l)
    torch.testing.assert_close(terms.cls, loss_c)
    torch.testing.assert_close(terms.landm, loss_lm)
    torch.testing.assert_close(terms.total, 2 * loss_l + loss_c + loss_lm)


def test_empty_targets_give_finite_loss_without_box_terms():
    gen = torch.Generator().manual_seed(1)
    outputs = tuple(torch.randn(2, 3, k, generator=gen).requires_grad_() for k in (4, 2, 10))
    terms = MultiBoxLoss()(outputs, [_empty_target(), _empty_target()], PRIORS)
    assert terms.num_pos.item() == 0
    assert terms.loc.item() == 0.0 and terms.landm.item() == 0.0
    # Default floor: min(7, P - 1) = 2 hardest negatives per image, normalised by max(num_pos, 1) = 1.
    ce = F.softplus(outputs[1][..., 1] - outputs[1][..., 0]).detach()  # background CE
    assert terms.cls.item() == pytest.approx(ce.topk(2, dim=1).values.sum().item(), rel=1e-6)
    terms.total.backward()
    for tensor in outputs:
        assert torch.isfinite(tensor.grad).all()
    assert torch.all(outputs[0].grad == 0) and torch.all(outputs[2].grad == 0)
    # The reference's behaviour: an image without faces keeps no negatives at all.
    reference = MultiBoxLoss(min_negatives=0)(outputs, [_empty_target(), _empty_target()], PRIORS)
    assert reference.total.item() == 0.0


def test_batch_with_an_empty_image():
    gen = torch.Generator().manual_seed(2)
    outputs = tuple(torch.randn(2, 3, k, generator=gen) for k in (4, 2, 10))
    both = MultiBoxLoss()(outputs, [_target(FACE, POINTS), _empty_target()], PRIORS)
    alone = MultiBoxLoss()(tuple(o[:1] for o in outputs), [_target(FACE, POINTS)], PRIORS)
    assert both.loc.item() == pytest.approx(alone.loc.item()) and both.landm.item() == pytest.approx(alone.landm.item())
    ce_empty = F.softplus(outputs[1][1, :, 1] - outputs[1][1, :, 0]).topk(2).values.sum()
    assert both.cls.item() == pytest.approx(alone.cls.item() + ce_empty.item(), rel=1e-6)


def test_faces_without_landmarks_have_no_landmark_loss():
    loc, logits, landm = _hand_outputs()
    landm = landm.clone().requires_grad_()
    terms = MultiBoxLoss()((loc, logits, landm), [_target(FACE, POINTS, has=False)], PRIORS)
    assert terms.landm.item() == 0.0
    assert terms.loc.item() == pytest.approx(1.625)
    terms.total.backward()
    assert torch.all(landm.grad == 0)
    # Landmark-free targets (no keys at all) behave the same.
    bare = MultiBoxLoss()((loc, logits, landm), [{"boxes": FACE}], PRIORS)
    assert bare.landm.item() == 0.0 and bare.total.item() == pytest.approx(terms.total.item())


def test_gradients_reach_exactly_the_selected_priors():
    loc, logits, landm = (t.clone().requires_grad_() for t in _hand_outputs())
    MultiBoxLoss()((loc, logits, landm), [_target(FACE, POINTS)], PRIORS).total.backward()
    assert loc.grad[0, 0].abs().sum() > 0 and torch.all(loc.grad[0, 1:] == 0)
    assert landm.grad[0, 0].abs().sum() > 0 and torch.all(landm.grad[0, 1:] == 0)
    assert torch.all(logits.grad[0].abs().sum(dim=1) > 0)  # the face and both kept negatives
    # d(ln 2 CE)/d logits of the face prior at (0, 0): softmax - onehot = (.5, -.5).
    torch.testing.assert_close(logits.grad[0, 0], torch.tensor([0.5, -0.5]))
    # Box offsets (.5, -2, 0, 0) -> smooth L1 gradient (.5, -1, 0, 0), weighted by 2.
    torch.testing.assert_close(loc.grad[0, 0], torch.tensor([1.0, -2.0, 0.0, 0.0]))


def test_dtypes_follow_outputs():
    f64 = torch.float64
    target = _target(torch.tensor([[0.4, 0.4, 0.6, 0.6]], dtype=f64))
    target["landmarks"] = torch.tensor([[0.51, 0.5, 0.54, 0.46, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]], dtype=f64)
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]], dtype=f64)
    terms = MultiBoxLoss()(_hand_outputs(f64), [target], priors)
    assert terms.total.dtype == torch.float64
    expected = 2 * 1.625 + math.log(32.0 / 3.0) + 3.125
    assert terms.total.item() == pytest.approx(expected, abs=1e-9)
    half = MultiBoxLoss()(tuple(t.bfloat16() for t in _hand_outputs()), [_target(FACE, POINTS)], PRIORS)
    assert half.total.dtype == torch.float32 and torch.isfinite(half.total)


def test_sanity_fit_on_free_outputs():
    torch.manual_seed(0)
    priors = make_priors(64, 64)
    p = priors.shape[0]
    faces = torch.tensor([[0.1, 0.15, 0.4, 0.5], [0.55, 0.5, 0.8, 0.8]])
    # Five points inside each face, at fractions (.3, .3), (.7, .3), (.5, .5), (.35, .75), (.65, .75) of it.
    fractions = torch.tensor([0.3, 0.3, 0.7, 0.3, 0.5, 0.5, 0.35, 0.75, 0.65, 0.75])
    points = faces[:, :2].repeat(1, 5) + fractions * (faces[:, 2:] - faces[:, :2]).repeat(1, 5)
    targets = [_target(faces, points)]
    params = [torch.nn.Parameter(0.1 * torch.randn(1, p, k)) for k in (4, 2, 10)]
    optimiser = torch.optim.Adam(params, lr=0.05)
    criterion = MultiBoxLoss()
    first = criterion(tuple(params), targets, priors).total.item()
    for _ in range(200):
        optimiser.zero_grad()
        loss = criterion(tuple(params), targets, priors).total
        loss.backward()
        optimiser.step()
    last = criterion(tuple(params), targets, priors)
    assert last.total.item() < 0.02 * first
    assert last.loc.item() < 0.01 and last.landm.item() < 0.01


def test_bad_input_is_named():
    outputs = _hand_outputs()
    criterion = MultiBoxLoss()
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        criterion(outputs, [_empty_target(), _empty_target()], PRIORS)
    with pytest.raises(ValueError, match=r"priors must have shape \(3, 4\)"):
        criterion(outputs, [_empty_target()], PRIORS[:2])
    with pytest.raises(ValueError, match=r"logits must have shape \(B, P, 2\)"):
        criterion((outputs[0], outputs[1][..., :1], outputs[2]), [_empty_target()], PRIORS)
    with pytest.raises(ValueError, match="disagree"):
        criterion((outputs[0], outputs[1][:, :2], outputs[2]), [_empty_target()], PRIORS)
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        MultiBoxLoss(neg_pos_ratio=0)
    with pytest.raises(ValueError, match="min_negatives"):
        MultiBoxLoss(min_negatives=-1)
