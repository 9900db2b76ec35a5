"""Post-processing: hand-made cases (threshold, top-k, NMS, keep-k, rescale, batch) and the V1 golden outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featherface.ops.priors import make_priors
from featherface.inference.postprocess import Detections, detect_batch, detect_from_outputs, face_scores, select_candidates

GOLDEN_TAGS = ("parade", "meeting_333x250", "random")

# Four priors on a 100 x 200 (H x W) input, in normalised (cx, cy, w, h). With zero offsets the decoded
# boxes are the priors: in pixels 0: (10, 10, 30, 30); 1: (12, 10, 32, 30) (IoU with 0 = 360/440 = 0.82);
# 2: (100, 50, 140, 90); 3: (150, 10, 190, 50).
PRIORS = torch.tensor(
    [
        [20 / 200, 20 / 100, 20 / 200, 20 / 100],
        [22 / 200, 20 / 100, 20 / 200, 20 / 100],
        [120 / 200, 70 / 100, 40 / 200, 40 / 100],
        [170 / 200, 30 / 100, 40 / 200, 40 / 100],
    ]
)
SIZE = (100, 200)


def _outputs(scores: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros(4, 4), torch.tensor(scores), torch.zeros(4, 10)


def test_hand_case() -> None:
    loc, scores, landm = _outputs([0.9, 0.95, 0.5, 0.02])
    dets = detect_from_outputs(loc, scores, landm, PRIORS, SIZE)
    # 3 is not strictly above 0.02; 1 outscores 0, which it suppresses.
    torch.testing.assert_close(dets.boxes, torch.tensor([[12.0, 10, 32, 30], [100, 50, 140, 90]]))
    torch.testing.assert_close(dets.scores, torch.tensor([0.95, 0.5]))
    # Zero landmark offsets put all five points on the prior centre.
    assert dets.landmarks.shape == (2, 5, 2)
    torch.testing.assert_close(dets.landmarks[0], torch.tensor([[22.0, 20.0]] * 5))
    torch.testing.assert_close(dets.to_dets()[:, 4], dets.scores)
    assert len(dets) == 2


def test_top_k_limits() -> None:
    loc, scores, landm = _outputs([0.9, 0.8, 0.5, 0.6])
    # Top 2 before NMS: 0 and 1, and 1 is suppressed by 0.
    dets = detect_from_outputs(loc, scores, landm, PRIORS, SIZE, pre_nms_top_k=2)
    assert dets.scores.tolist() == pytest.approx([0.9])
    # All into NMS, keep 2 afterwards: 0 then 3.
    dets = detect_from_outputs(loc, scores, landm, PRIORS, SIZE, keep_top_k=2)
    assert dets.scores.tolist() == pytest.approx([0.9, 0.6])
    dets = detect_from_outputs(loc, scores, landm, PRIORS, SIZE, pre_nms_top_k=None, keep_top_k=None, nms_iou=0.9)
    assert len(dets) == 4


def test_select_candidates_is_strict_and_stable() -> None:
    scores = torch.tensor([0.3, 0.02, 0.5, 0.3, 0.021])
    assert select_candidates(scores, 0.02, None).tolist() == [2, 0, 3, 4]
    assert select_candidates(scores, 0.02, 2).tolist() == [2, 0]


def test_no_detections_gives_empty_shapes() -> None:
    loc, scores, landm = _outputs([0.01, 0.0, 0.02, 0.015])
    dets = detect_from_outputs(loc, scores, landm, PRIORS, SIZE)
    assert dets.boxes.shape == (0, 4) and dets.scores.shape == (0,) and dets.landmarks.shape == (0, 5, 2)
    assert dets.to_dets().shape == (0, 5)
    assert len(dets) == 0


def test_rescale_to_original_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 4, generator=generator) * 0.5
    landm = torch.randn(4, 10, generator=generator)
    scores = torch.tensor([0.9, 0.7, 0.5, 0.3])
    plain = detect_from_outputs(loc, scores, landm, PRIORS, SIZE, nms_iou=1.0)
    scaled = detect_from_outputs(loc, scores, landm, PRIORS, SIZE, nms_iou=1.0, scale=(2.0, 0.5))
    torch.testing.assert_close(scaled.boxes, plain.boxes * torch.tensor([2.0, 0.5, 2.0, 0.5]))
    torch.testing.assert_close(scaled.landmarks, plain.landmarks * torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(scaled.scores, plain.scores)


def test_rescale_happens_before_the_plus_one_nms() -> None:
    # Boxes 0 and 1 of 10 x 10 px, 2 px apart: "+1" IoU = 99 / 143 = 0.692 > 0.68 suppresses 1. At scale 10 they
    # are 100 x 100 px, 20 px apart: "+1" IoU = 8181 / 12221 = 0.669 keeps it, as in the reference (rescale, then NMS).
    priors = torch.tensor([[10 / 100, 10 / 100, 10 / 100, 10 / 100], [12 / 100, 10 / 100, 10 / 100, 10 / 100]])
    loc, landm, scores = torch.zeros(2, 4), torch.zeros(2, 10), torch.tensor([0.9, 0.8])
    assert len(detect_from_outputs(loc, scores, landm, priors, (100, 100), nms_iou=0.68)) == 1
    assert len(detect_from_outputs(loc, scores, landm, priors, (100, 100), nms_iou=0.68, scale=(10, 10))) == 2


def test_batch_matches_single_images() -> None:
    generator = torch.Generator().manual_seed(1)
    priors = make_priors(64, 48)
    p = priors.shape[0]
    loc = torch.randn(3, p, 4, generator=generator) * 0.3
    logits = torch.randn(3, p, 2, generator=generator) * 2
    landm = torch.randn(3, p, 10, generator=generator)
    scores = face_scores(logits)
    torch.testing.assert_close(scores, torch.softmax(logits, -1)[..., 1])
    scales = [(1.0, 1.0), (2.0, 2.0), (0.5, 1.5)]
    batch = detect_batch(loc, scores, landm, priors, (64, 48), scales=scales)
    assert len(batch) == 3
    for b, dets in enumerate(batch):
        single = detect_from_outputs(loc[b], scores[b], landm[b], priors, (64, 48), scale=scales[b])
        assert len(dets) > 0
        for name in ("boxes", "scores", "landmarks"):
            assert torch.equal(getattr(dets, name), getattr(single, name))
    same = detect_batch(loc, scores, landm, priors, (64, 48), scales=(2.0, 2.0))
    assert torch.equal(same[1].boxes, batch[1].boxes)


def test_float64_follows_inputs() -> None:
    loc, scores, landm = _outputs([0.9, 0.95, 0.5, 0.02])
    dets = detect_from_outputs(loc.double(), scores.double(), landm.double(), PRIORS.double(), SIZE)
    assert dets.boxes.dtype == torch.float64 and dets.landmarks.dtype == torch.float64
    assert dets.boxes.shape == (2, 4)


def test_bad_input_names_the_problem() -> None:
    loc, scores, landm = _outputs([0.9, 0.95, 0.5, 0.02])
    with pytest.raises(ValueError, match="scores must have shape"):
        detect_from_outputs(loc, torch.zeros(4, 2), landm, PRIORS, SIZE)
    with pytest.raises(ValueError, match="priors must have shape"):
        detect_from_outputs(loc, scores, landm, PRIORS[:3], SIZE)
    with pytest.raises(ValueError, match="image_size"):
        detect_from_outputs(loc, scores, landm, PRIORS, (0, 10))
    with pytest.raises(ValueError, match="scale"):
        detect_from_outputs(loc, scores, landm, PRIORS, SIZE, scale=(1.0, -1.0))
    with pytest.raises(ValueError, match="keep_top_k"):
        detect_from_outputs(loc, scores, landm, PRIORS, SIZE, keep_top_k=0)
    batch = (loc[None].repeat(2, 1, 1), scores[None].repeat(2, 1), landm[None].repeat(2, 1, 1))
    with pytest.raises(ValueError, match="scales has 1 entries"):
        detect_batch(*batch, PRIORS, SIZE, scales=[(1.0, 1.0)])
    with pytest.raises(ValueError, match="not the logits"):
        detect_batch(batch[0], torch.zeros(2, 4, 2), batch[2], PRIORS, SIZE)


def _golden(golden_dir, tag: str) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "featherface_v1" / "outputs.npz") as data:
        return {key: data[f"{tag}_{key}"] for key in ("input", "loc", "conf", "landm", "priors", "dets", "landmarks")}


@pytest.mark.parametrize("tag", GOLDEN_TAGS)
def test_golden_detections(golden_dir, tag: str) -> None:
    g = _golden(golden_dir, tag)
    height, width = g["input"].shape[2:]
    dets = detect_from_outputs(
        torch.from_numpy(g["loc"][0]),
        torch.from_numpy(g["conf"][0, :, 1]),
        torch.from_numpy(g["landm"][0]),
        make_priors(int(height), int(width)),
        (int(height), int(width)),
    )
    expected = torch.from_numpy(g["dets"])
    assert isinstance(dets, Detections)
    assert dets.to_dets().shape == expected.shape
    # Same detections in the same order (scores are copied, so they match exactly), boxes within 1e-3 px.
    assert torch.equal(dets.scores, expected[:, 4])
    torch.testing.assert_close(dets.boxes, expected[:, :4], rtol=0, atol=1e-3)
    torch.testing.assert_close(dets.landmarks.reshape(-1, 10), torch.from_numpy(g["landmarks"]), rtol=0, atol=1e-3)


def test_golden_needs_the_plus_one_nms(golden_dir) -> None:
    """Plain continuous-IoU NMS does not reproduce the reference on the parade image."""
    g = _golden(golden_dir, "parade")
    height, width = g["input"].shape[2:]
    dets = detect_from_outputs(
        torch.from_numpy(g["loc"][0]),
        torch.from_numpy(g["conf"][0, :, 1]),
        torch.from_numpy(g["landm"][0]),
        torch.from_numpy(g["priors"]),
        (int(height), int(width)),
        nms_offset=0.0,
    )
    assert set(dets.scores.tolist()) != set(g["dets"][:, 4].tolist())
