"""Prior matching: hand-computed cases, a loop reference on random cases, target encoding, batching."""

from __future__ import annotations

import pytest
import torch

from featherface.ops.box_coding import decode_boxes, decode_landmarks, encode_boxes
from featherface.ops.boxes import box_iou, cxcywh_to_xyxy
from featherface.ops.matching import MatchResult, match_batch, match_priors
from featherface.ops.priors import make_priors

# Three vertical strips spanning the full height: x intervals [0, .5], [.25, .75], [.5, 1] (y in [0, 1]).
# With ground truth also spanning y in [0, 1], every IoU is the 1-D interval IoU in x.
STRIPS = torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0]])


def _match(boxes: list[list[float]], priors: torch.Tensor = STRIPS, **kwargs) -> MatchResult:
    gt = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = gt.shape[0]
    return match_priors(gt, torch.zeros(n, 10), torch.zeros(n, dtype=torch.bool), priors, **kwargs)


def _assert_match(result: MatchResult, matched: list[int]) -> None:
    expected = torch.tensor(matched)
    assert result.matched_gt.tolist() == matched
    assert result.labels.tolist() == (expected >= 0).long().tolist()
    assert result.labels.dtype == torch.int64 and result.matched_gt.dtype == torch.int64


def test_threshold_keeps_priors_at_or_above_035():
    # GT x in [.125, .5]: IoU with the strips .375/.5 = .75, .25/.625 = .4, 0.
    _assert_match(_match([[0.125, 0.0, 0.5, 1.0]]), [0, 0, -1])
    # GT x in [0, .5]: IoU 1, .25/.75 = 1/3 (< .35: background), 0.
    _assert_match(_match([[0.0, 0.0, 0.5, 1.0]]), [0, -1, -1])


def test_threshold_edge_is_inclusive():
    # IoU of the middle strip is exactly float32(0.4) (.25 / .625, all exact in binary).
    _assert_match(_match([[0.125, 0.0, 0.5, 1.0]], iou_threshold=0.4), [0, 0, -1])
    _assert_match(_match([[0.125, 0.0, 0.5, 1.0]], iou_threshold=0.41), [0, -1, -1])


def test_gt_below_threshold_is_forced_onto_its_best_prior():
    # GT x in [.25, .75], y in [0, .3]: IoU with the middle strip .15/.5 = .3 (in [.2, .35): forced), the
    # others .075/.575 = .13.
    result = _match([[0.25, 0.0, 0.75, 0.3]])
    _assert_match(result, [-1, 0, -1])
    # The forced prior regresses that GT.
    expected = encode_boxes(torch.tensor([0.25, 0.0, 0.75, 0.3]), STRIPS[1])
    torch.testing.assert_close(result.loc_targets[1], expected)
    assert torch.all(result.loc_targets[[0, 2]] == 0)


def test_gt_under_forcing_floor_is_unmatched():
    # y in [0, .15]: best IoU .075/.5 = .15 < .2.
    _assert_match(_match([[0.25, 0.0, 0.75, 0.15]]), [-1, -1, -1])
    # Floor edge, inclusive: y in [0, .25] gives exactly .125/.5 = .25.
    _assert_match(_match([[0.25, 0.0, 0.75, 0.25]], force_min_iou=0.25), [-1, 0, -1])
    _assert_match(_match([[0.25, 0.0, 0.75, 0.25]], force_min_iou=0.26), [-1, -1, -1])


def test_no_gt_reaching_the_floor_means_all_background_even_with_a_low_threshold():
    # IoU .15 with the middle strip: above iou_threshold=.1 but no GT reaches the .2 floor, and the reference
    # then returns all background.
    _assert_match(_match([[0.25, 0.0, 0.75, 0.15]], iou_threshold=0.1), [-1, -1, -1])
    # With the floor lowered the same prior is a face.
    _assert_match(_match([[0.25, 0.0, 0.75, 0.15]], iou_threshold=0.1, force_min_iou=0.1), [-1, 0, -1])


def test_two_gts_forcing_the_same_prior_later_wins():
    top, bottom = [0.25, 0.0, 0.75, 0.3], [0.25, 0.7, 0.75, 1.0]  # both IoU .3 with the middle strip only
    for boxes in ([top, bottom], [bottom, top]):
        result = _match(boxes)
        _assert_match(result, [-1, 1, -1])
        torch.testing.assert_close(result.loc_targets[1], encode_boxes(torch.tensor(boxes[1]), STRIPS[1]))


def test_forcing_overrides_a_better_overlap():
    # GT0 = the middle strip (IoU 1 there, 1/3 elsewhere), GT1 x in [.3, .7] (IoU .8 there, .2/.7 elsewhere).
    # Both have the middle strip as best prior: the later GT1 takes it although GT0 overlaps it fully; the
    # outer strips keep GT0 at IoU 1/3 < .35, so GT0 ends with no prior at all (as in the reference).
    _assert_match(_match([[0.25, 0.0, 0.75, 1.0], [0.3, 0.0, 0.7, 1.0]]), [-1, 1, -1])


def test_each_prior_takes_its_best_gt():
    # GT0 x in [.125, .5]: IoU .75, .4, 0; GT1 x in [.25, .625]: IoU .4, .75, .125/.75.
    _assert_match(_match([[0.125, 0.0, 0.5, 1.0], [0.25, 0.0, 0.625, 1.0]]), [0, 1, -1])


def test_gt_under_the_floor_does_not_steal_a_forced_prior():
    # GT1 (a tiny box inside the middle strip, IoU .01/.5 = .02 < .2) has the same best prior as GT0. The
    # reference's forcing loop would hand that prior to GT1; here it stays with GT0 (documented deviation).
    result = _match([[0.25, 0.0, 0.75, 1.0], [0.45, 0.45, 0.55, 0.55]])
    _assert_match(result, [-1, 0, -1])


def test_ties_go_to_the_lowest_index():
    # The same box twice: each prior's best GT is the first (argmax tie), the forced prior the second (later wins).
    _assert_match(_match([[0.125, 0.0, 0.5, 1.0], [0.125, 0.0, 0.5, 1.0]]), [1, 0, -1])


def test_empty_gt_is_all_background():
    result = match_priors(torch.zeros(0, 4), torch.zeros(0, 10), torch.zeros(0, dtype=torch.bool), STRIPS)
    _assert_match(result, [-1, -1, -1])
    assert result.loc_targets.shape == (3, 4) and torch.all(result.loc_targets == 0)
    assert result.landm_targets.shape == (3, 10) and torch.all(result.landm_targets == 0)
    assert result.landm_mask.dtype == torch.bool and not result.landm_mask.any()


def _random_faces(gen: torch.Generator, n: int, max_side: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.rand(n, 2, generator=gen) * 0.9
    wh = torch.rand(n, 2, generator=gen) * max_side + 0.005
    boxes = torch.cat((xy, xy + wh), dim=1)
    points = xy[:, None, :] + torch.rand(n, 5, 2, generator=gen) * wh[:, None, :]
    return boxes, points.reshape(n, 10)


def test_targets_decode_back_to_the_ground_truth():
    gen = torch.Generator().manual_seed(0)
    priors = make_priors(96, 96)
    boxes, landmarks = _random_faces(gen, 6)
    has = torch.tensor([True, False, True, True, False, True])
    result = match_priors(boxes, landmarks, has, priors)
    pos = result.labels == 1
    assert pos.sum() >= 6  # random faces of 0.5% - 40% of the side: several priors each
    gt = result.matched_gt[pos]
    torch.testing.assert_close(decode_boxes(result.loc_targets[pos], priors[pos]), boxes[gt], atol=1e-6, rtol=0)
    assert torch.equal(result.landm_mask, pos & has[result.matched_gt.clamp(min=0)])
    lm = result.landm_mask
    assert lm.any() and (pos & ~lm).any()
    torch.testing.assert_close(
        decode_landmarks(result.landm_targets[lm], priors[lm]), landmarks[result.matched_gt[lm]], atol=1e-6, rtol=0
    )
    assert torch.all(result.landm_targets[~lm] == 0) and torch.all(result.loc_targets[~pos] == 0)


def _loop_reference(boxes: torch.Tensor, priors: torch.Tensor, thr: float = 0.35, floor: float = 0.2) -> list[int]:
    """The rules written as plain loops (with the deviation: GTs under the floor never force)."""
    iou = box_iou(boxes.double(), cxcywh_to_xyxy(priors.double())).tolist()  # (N, P)
    n, p = len(iou), len(iou[0]) if iou else priors.shape[0]
    if n == 0:
        return [-1] * p
    best_gt, best_iou = [], []
    for j in range(p):
        column = [iou[i][j] for i in range(n)]
        best = max(range(n), key=lambda i: (column[i], -i))  # highest IoU, lowest index on ties
        best_gt.append(best)
        best_iou.append(column[best])
    any_valid = False
    for i in range(n):
        best_prior = max(range(p), key=lambda j: (iou[i][j], -j))
        if iou[i][best_prior] >= floor:
            any_valid = True
            best_gt[best_prior] = i  # later GTs overwrite
            best_iou[best_prior] = 2.0
    return [g if any_valid and v >= thr else -1 for g, v in zip(best_gt, best_iou)]


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_loop_reference_on_random_cases(seed: int):
    gen = torch.Generator().manual_seed(seed)
    priors = make_priors(64, 96)
    n = int(torch.randint(1, 12, (), generator=gen))
    boxes, landmarks = _random_faces(gen, n, max_side=0.6)
    # Near-duplicates (a crowd) make several GTs share a best prior; float64 so that IoU ties and thresholds
    # agree with the float64 loop exactly.
    boxes = torch.cat((boxes, boxes[:3] + 0.004)).double()
    landmarks = torch.cat((landmarks, landmarks[:3]))
    n = boxes.shape[0]
    result = match_priors(boxes, landmarks.double(), torch.ones(n, dtype=torch.bool), priors.double())
    assert result.matched_gt.tolist() == _loop_reference(boxes, priors)


def test_dtype_and_device_follow_inputs():
    boxes = torch.tensor([[0.125, 0.0, 0.5, 1.0]], dtype=torch.float64)
    result = match_priors(boxes, torch.zeros(1, 10), torch.ones(1, dtype=torch.bool), STRIPS)
    assert result.loc_targets.dtype == torch.float64 and result.landm_targets.dtype == torch.float64
    assert result.loc_targets.device == STRIPS.device


def test_match_batch_stacks_per_image_results():
    gen = torch.Generator().manual_seed(1)
    priors = make_priors(64, 64)
    b0, l0 = _random_faces(gen, 3)
    b2, l2 = _random_faces(gen, 2)
    targets = [
        {"boxes": b0, "landmarks": l0, "has_landmarks": torch.tensor([True, False, True])},
        {
            "boxes": torch.zeros(0, 4),
            "landmarks": torch.zeros(0, 10),
            "has_landmarks": torch.zeros(0, dtype=torch.bool),
        },
        {"boxes": b2},  # no landmark keys: no face has landmarks
    ]
    batch = match_batch(targets, priors)
    assert batch.labels.shape == (3, priors.shape[0]) and batch.loc_targets.shape == (3, priors.shape[0], 4)
    singles = [
        match_priors(b0, l0, targets[0]["has_landmarks"], priors),
        match_priors(torch.zeros(0, 4), torch.zeros(0, 10), torch.zeros(0, dtype=torch.bool), priors),
        match_priors(b2, torch.zeros(2, 10), torch.zeros(2, dtype=torch.bool), priors),
    ]
    for field in MatchResult._fields:
        assert torch.equal(getattr(batch, field), torch.stack([getattr(s, field) for s in singles])), field
    assert batch.labels[0].sum() > 0 and batch.labels[2].sum() > 0 and batch.labels[1].sum() == 0
    assert batch.matched_gt[2].max() <= 1  # per-image indices, not offsets into the concatenation
    assert not batch.landm_mask[2].any()


def test_bad_input_is_named():
    priors = make_priors(64, 64)
    with pytest.raises(ValueError, match="gt_boxes must have shape"):
        match_priors(torch.zeros(2, 5), torch.zeros(2, 10), torch.zeros(2, dtype=torch.bool), priors)
    with pytest.raises(ValueError, match=r"gt_landmarks must have shape \(2, 10\)"):
        match_priors(torch.zeros(2, 4), torch.zeros(3, 10), torch.zeros(2, dtype=torch.bool), priors)
    with pytest.raises(ValueError, match="priors must have shape"):
        match_priors(torch.zeros(2, 4), torch.zeros(2, 10), torch.zeros(2, dtype=torch.bool), priors[:, :2])
    with pytest.raises(ValueError, match="iou_threshold"):
        match_priors(torch.zeros(1, 4), torch.zeros(1, 10), torch.zeros(1, dtype=torch.bool), priors, iou_threshold=0)
    with pytest.raises(KeyError, match=r"targets\[1\] has no 'boxes'"):
        match_batch([{"boxes": torch.zeros(0, 4)}, {"box": torch.zeros(0, 4)}], priors)
    with pytest.raises(ValueError, match=r"targets\[0\]\['has_landmarks'\] must have shape \(1,\)"):
        bad = {"boxes": torch.zeros(1, 4), "landmarks": torch.zeros(1, 10), "has_landmarks": torch.zeros(2)}
        match_batch([bad], priors)
    with pytest.raises(KeyError, match="no 'has_landmarks'"):
        match_batch([{"boxes": torch.zeros(1, 4), "landmarks": torch.zeros(1, 10)}], priors)
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must have shape \(N, 4\)"):
        match_batch([{"boxes": torch.zeros(4)}], priors)
    with pytest.raises(ValueError, match="targets is empty"):
        match_batch([], priors)
