"""Box conversions, areas, IoU (against hand values and torchvision), NMS (hand cases and a loop reference), box
voting (hand case, a loop reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from featherface.ops.boxes import (
    box_area,
    box_iou,
    cxcywh_to_xyxy,
    nms,
    suppression_owner,
    vote,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)


def test_conversions_by_hand() -> None:
    xyxy = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    torch.testing.assert_close(xyxy_to_xywh(xyxy), torch.tensor([[10.0, 20.0, 20.0, 40.0]]))
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), torch.tensor([[20.0, 40.0, 20.0, 40.0]]))
    torch.testing.assert_close(xywh_to_xyxy(torch.tensor([[10.0, 20.0, 20.0, 40.0]])), xyxy)
    torch.testing.assert_close(cxcywh_to_xyxy(torch.tensor([[20.0, 40.0, 20.0, 40.0]])), xyxy)


def test_conversion_round_trips_keep_batch_dims() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes = torch.rand(2, 3, 7, 4, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    assert xyxy_to_cxcywh(boxes).dtype == torch.float64


def test_area_and_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    assert box_area(a).tolist() == [4.0]
    assert box_area(a, offset=1).tolist() == [9.0]
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))
    # "+1": areas 9 and 9, intersection 2 x 2.
    torch.testing.assert_close(box_iou(a, b, offset=1), torch.tensor([[4 / 14, 0.0]]))


def test_iou_matches_torchvision_and_broadcasts() -> None:
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 9, 2, generator=generator)
    boxes1 = torch.cat((xy, xy + torch.rand(2, 9, 2, generator=generator)), -1)
    xy = torch.rand(2, 5, 2, generator=generator)
    boxes2 = torch.cat((xy, xy + torch.rand(2, 5, 2, generator=generator)), -1)
    iou = box_iou(boxes1, boxes2)
    assert iou.shape == (2, 9, 5)
    for k in range(2):
        torch.testing.assert_close(iou[k], torchvision.ops.box_iou(boxes1[k], boxes2[k]))
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 4\)"):
        box_iou(torch.zeros(4), torch.zeros(3, 4))


def test_nms_hand_case() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: best of the cluster
            [1.0, 1.0, 11.0, 11.0],  # 1: IoU with 0 = 81 / 119 = 0.68 -> suppressed
            [20.0, 20.0, 30.0, 30.0],  # 2: alone -> kept
            [0.0, 0.0, 10.0, 6.0],  # 3: IoU with 0 = 0.6 -> suppressed
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # Visiting order 3, 0, 1, 2: 3 first; IoU(0, 3) = 0.6 removes 0; IoU(1, 3) = 45 / 115 = 0.39 keeps 1; 2 kept.
    assert nms(boxes, scores, 0.4).tolist() == [3, 1, 2]
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.4).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]  # 0.68 and 0.6 both <= 0.7


def test_nms_pixel_offset_changes_the_decision() -> None:
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 3.5]])
    scores = torch.tensor([0.9, 0.8])
    # Continuous IoU 31.5 / 81 = 0.389 <= 0.4 keeps both; "+1" IoU 45 / 100 = 0.45 suppresses box 1.
    assert nms(boxes, scores, 0.4).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4, offset=1).tolist() == [0]


def test_nms_iou_equal_to_threshold_is_kept() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.0]])  # IoU = 40 / 100, float32(0.4)
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.4).tolist() == [0, 1]
    # The numpy reference (float32 throughout) keeps it too: 0.4f <= 0.4.
    assert np.float32(40) / np.float32(100) <= 0.4


def test_nms_ties_are_stable() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[50.0, 50.0, 60.0, 60.0]] * 2)
    scores = torch.tensor([0.5, 0.5, 0.5, 0.7, 0.7])
    assert nms(boxes, scores, 0.4).tolist() == [3, 0]


def test_nms_empty_and_bad_shapes() -> None:
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.4)
    assert keep.shape == (0,) and keep.dtype == torch.int64
    with pytest.raises(ValueError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.4)


def _reference_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """The greedy "+1" NMS of the RetinaFace evaluation scripts, written out as a loop."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= thresh]
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_loop_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(300, 2, generator=generator) * 200
    boxes = torch.cat((xy, xy + 5 + torch.rand(300, 2, generator=generator) * 40), 1)
    scores = torch.rand(300, generator=generator)
    dets = torch.cat((boxes, scores[:, None]), 1).numpy()
    expected = _reference_nms(dets, 0.4)
    assert len(expected) < 300  # the case exercises suppression
    assert nms(boxes, scores, 0.4, offset=1).tolist() == expected


def test_box_voting_hand_case() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: survivor
            [2.0, 0.0, 12.0, 10.0],  # 1: IoU with 0 = 80 / 120 = 0.67 -> suppressed by 0
            [20.0, 20.0, 30.0, 30.0],  # 2: survivor
            [20.0, 22.0, 30.0, 32.0],  # 3: IoU with 2 = 0.67 -> suppressed by 2
            [1.0, 0.0, 11.0, 10.0],  # 4: IoU 0.82 with 0 and 0.82 with 1 -> suppressed by 0 (1 is gone)
        ]
    )
    scores = torch.tensor([0.9, 0.6, 0.8, 0.2, 0.3])
    keep = nms(boxes, scores, 0.4)
    assert keep.tolist() == [0, 2]
    owner = suppression_owner(boxes, scores, keep, 0.4)
    assert owner.tolist() == [0, 0, 1, 1, 0]
    merged = vote(boxes, scores, owner, 2)
    # Survivor 0: weights 0.9, 0.6, 0.3 on x1 = 0, 2, 1 -> (0 + 1.2 + 0.3) / 1.8 = 0.8333; x2 = 10.8333.
    # Survivor 2: weights 0.8, 0.2 on y1 = 20, 22 -> 20.4; y2 = 30.4.
    torch.testing.assert_close(merged, torch.tensor([[1.5 / 1.8, 0.0, 10 + 1.5 / 1.8, 10.0],
                                                     [20.0, 20.4, 30.0, 30.4]]))


def test_box_voting_leaves_lone_survivors_and_cut_boxes_alone() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [50.0, 51.0, 60.0, 61.0]])
    scores = torch.tensor([0.9, 0.5, 0.4])
    keep = nms(boxes, scores, 0.4)[:1]  # a keep-k cut after the first survivor
    owner = suppression_owner(boxes, scores, keep, 0.4)
    assert owner.tolist() == [0, -1, -1]  # box 2 belongs to the cut survivor 1, not to 0
    assert torch.equal(vote(boxes, scores, owner, 1), boxes[:1])


@pytest.mark.parametrize("seed", [0, 1])
def test_box_voting_matches_loop_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(200, 2, generator=generator, dtype=torch.float64) * 100
    boxes = torch.cat((xy, xy + 5 + torch.rand(200, 2, generator=generator, dtype=torch.float64) * 30), 1)
    scores = torch.rand(200, generator=generator, dtype=torch.float64)
    # The loop: visit by decreasing score; a survivor takes every remaining box it overlaps by IoU > 0.4.
    order = torch.argsort(scores, descending=True).tolist()
    expected, alive = [], set(order)
    for i in order:
        if i not in alive:
            continue
        iou = box_iou(boxes[i : i + 1], boxes, offset=1)[0]
        group = [j for j in order if j in alive and (j == i or iou[j] > 0.4)]
        alive -= set(group)
        weights = scores[group]
        expected.append((boxes[group] * weights[:, None]).sum(0) / weights.sum())
    keep = nms(boxes, scores, 0.4, offset=1)
    owner = suppression_owner(boxes, scores, keep, 0.4, offset=1)
    assert len(expected) == keep.numel() < 150  # the case exercises suppression
    torch.testing.assert_close(vote(boxes, scores, owner, keep.numel()), torch.stack(expected))
