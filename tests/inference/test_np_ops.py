"""The numpy post-processing (featherface.inference.np_ops) against the torch ops, on seeded and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featherface.inference import np_ops as npo
from featherface.inference.detector import to_wider_rows as torch_wider_rows
from featherface.inference.postprocess import Detections, detect_from_outputs, face_scores
from featherface.inference.settings import DetectorSettings
from featherface.ops.box_coding import decode_boxes, decode_landmarks
from featherface.ops.boxes import nms as torch_nms
from featherface.ops.priors import make_priors


@pytest.mark.parametrize("size", [(640, 640), (481, 353), (37, 61), (1, 1)])
def test_priors_equal_torch_bit_for_bit(size):
    assert np.array_equal(npo.make_priors(*size), make_priors(*size).numpy())


def test_priors_custom_levels_and_errors():
    ours = npo.make_priors(50, 70, ((10,), (20, 40, 60)), (4, 16))
    assert np.array_equal(ours, make_priors(50, 70, ((10,), (20, 40, 60)), (4, 16)).numpy())
    # hand value: first prior of the second level, cell (0, 0), stride 16: centre 8 px, side 20 px
    first = ours[13 * 18]
    np.testing.assert_allclose(first, [8 / 70, 8 / 50, 20 / 70, 20 / 50], rtol=1e-7)
    with pytest.raises(ValueError, match="min_sizes"):
        npo.make_priors(10, 10, ((16,),), (8, 16))


def test_decoding_matches_torch():
    rng = np.random.default_rng(0)
    priors = npo.make_priors(96, 128)
    loc = rng.normal(0, 1, (len(priors), 4)).astype(np.float32)
    lmk = rng.normal(0, 1, (len(priors), 10)).astype(np.float32)
    np.testing.assert_allclose(
        npo.decode_boxes(loc, priors), decode_boxes(torch.from_numpy(loc), torch.from_numpy(priors)).numpy(),
        rtol=0, atol=1e-6,
    )
    assert np.array_equal(
        npo.decode_landmarks(lmk, priors), decode_landmarks(torch.from_numpy(lmk), torch.from_numpy(priors)).numpy()
    )
    # by hand: zero offsets give the prior itself
    box = npo.decode_boxes(np.zeros((1, 4), np.float32), np.array([[0.5, 0.5, 0.2, 0.4]], np.float32))
    np.testing.assert_allclose(box, [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)


def test_face_scores_match_torch_softmax():
    logits = (np.random.default_rng(1).standard_normal((20000, 2)) * 4).astype(np.float32)
    ours = npo.face_scores(logits)
    ref = face_scores(torch.from_numpy(logits)).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=3e-7, atol=0)
    np.testing.assert_allclose(npo.face_scores(np.array([[0.0, 0.0], [0.0, np.log(3.0)]], np.float32)), [0.5, 0.75],
                               rtol=1e-6)


def test_select_candidates_strict_and_stable():
    scores = np.array([0.3, 0.9, 0.5, 0.9, 0.02, 0.5], np.float32)
    assert npo.select_candidates(scores, 0.02, None).tolist() == [1, 3, 2, 5, 0]
    assert npo.select_candidates(scores, 0.02, 3).tolist() == [1, 3, 2]
    assert npo.select_candidates(scores, 0.95, 10).tolist() == []


def test_nms_plus_one_convention_by_hand():
    # 10x10-pixel boxes ("+1": x1..x2 inclusive is 10 px) shifted by 4 px: inter 6*10 = 60, union 140 -> 0.4286
    boxes = np.array([[0, 0, 9, 9], [4, 0, 13, 9]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert npo.nms(boxes, scores, 0.4, offset=1).tolist() == [0]
    # continuous: widths 9, inter 5*9 = 45, union 117 -> 0.3846, kept
    assert npo.nms(boxes, scores, 0.4, offset=0).tolist() == [0, 1]
    # ties keep index order; limit stops early with the same prefix
    tied = np.array([[0, 0, 9, 9], [100, 0, 109, 9], [200, 0, 209, 9]], np.float32)
    assert npo.nms(tied, np.full(3, 0.5, np.float32), 0.4, offset=1).tolist() == [0, 1, 2]
    assert npo.nms(tied, np.full(3, 0.5, np.float32), 0.4, offset=1, limit=2).tolist() == [0, 1]
    assert npo.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_nms_matches_torch_with_many_ties(offset):
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 200, (400, 2))
    wh = rng.uniform(5, 60, (400, 2))
    boxes = np.concatenate((xy, xy + wh), axis=1).astype(np.float32)
    scores = rng.integers(0, 8, 400).astype(np.float32) / 8  # many exact ties
    ours = npo.nms(boxes, scores, 0.4, offset=offset)
    ref = torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4, offset=offset).numpy()
    assert ours.tolist() == ref.tolist()


def _random_outputs(seed: int, height: int, width: int, spread: float):
    """Priors and random head outputs (loc, scores, landmarks) of a ``height x width`` input, float32."""
    rng = np.random.default_rng(seed)
    priors = npo.make_priors(height, width)
    p = len(priors)
    loc = rng.normal(0, spread, (p, 4)).astype(np.float32)
    lmk = rng.normal(0, spread, (p, 10)).astype(np.float32)
    scores = npo.face_scores(rng.normal(0, 2, (p, 2)).astype(np.float32))
    return priors, loc, scores, lmk


def test_detect_from_outputs_matches_torch_postprocess():
    height, width = 120, 88
    priors, loc, scores, lmk = _random_outputs(3, height, width, spread=0.5)
    settings = DetectorSettings(score_threshold=0.3, nms_iou=0.4, pre_nms_top_k=300, max_detections=40,
                                box_voting=False)
    ours = npo.detect_from_outputs(loc, scores, lmk, priors, (height, width), settings, scale=(1.5, 2.0))
    ref = detect_from_outputs(
        torch.from_numpy(loc), torch.from_numpy(scores), torch.from_numpy(lmk), torch.from_numpy(priors),
        (height, width), score_threshold=0.3, pre_nms_top_k=300, nms_iou=0.4, keep_top_k=40, scale=(1.5, 2.0),
    )
    assert len(ours) == len(ref) == 40
    assert np.array_equal(ours.scores, ref.scores.numpy())
    np.testing.assert_allclose(ours.boxes, ref.boxes.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.landmarks, ref.landmarks.numpy(), rtol=0, atol=1e-4)


def test_box_voting_matches_torch_postprocess():
    height, width = 96, 128
    priors, loc, scores, lmk = _random_outputs(4, height, width, spread=0.3)
    settings = DetectorSettings(score_threshold=0.3, nms_iou=0.4, pre_nms_top_k=400, max_detections=30,
                                box_voting=False)
    plain = npo.detect_from_outputs(loc, scores, lmk, priors, (height, width), settings)
    voted = npo.detect_from_outputs(loc, scores, lmk, priors, (height, width), settings.updated(box_voting=True))
    ref = detect_from_outputs(
        torch.from_numpy(loc), torch.from_numpy(scores), torch.from_numpy(lmk), torch.from_numpy(priors),
        (height, width), score_threshold=0.3, pre_nms_top_k=400, nms_iou=0.4, keep_top_k=30, box_voting=True,
    )
    assert np.array_equal(voted.scores, plain.scores) and np.array_equal(voted.scores, ref.scores.numpy())
    assert np.abs(voted.boxes - plain.boxes).max() > 0.5  # the voting moved boxes
    np.testing.assert_allclose(voted.boxes, ref.boxes.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(voted.landmarks, ref.landmarks.numpy(), rtol=0, atol=1e-4)


def test_to_wider_rows_by_hand_and_like_api():
    dets = npo.RuntimeDetections(
        np.array([[10.7, -4.7, 30.2, 20.9], [0.0, 0.0, 5.5, 5.5]], np.float32),
        np.array([0.9, 0.25], np.float32),
        np.zeros((2, 5, 2), np.float32),
    )
    rows = npo.to_wider_rows(dets)
    np.testing.assert_allclose(rows, [[10, -4, 20, 24, np.float32(0.9)], [0, 0, 5, 5, 0.25]])
    torch_dets = Detections(torch.from_numpy(dets.boxes), torch.from_numpy(dets.scores),
                            torch.from_numpy(dets.landmarks))
    assert np.array_equal(rows, torch_wider_rows(torch_dets))
    assert npo.to_wider_rows(npo.RuntimeDetections.empty()).shape == (0, 5)
