"""Tests of featherface.inference.visualize: drawing boxes, scores and landmarks on a copy of the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featherface.inference.images import ImageError
from featherface.inference.postprocess import Detections
from featherface.inference.visualize import BOX_COLOR, LANDMARK_COLORS, auto_thickness, draw_detections


def _dets(boxes, scores, landmarks) -> Detections:
    return Detections(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float32).reshape(-1),
        torch.tensor(landmarks, dtype=torch.float32).reshape(-1, 5, 2),
    )


#: One face: box (20, 30)-(80, 90), landmarks well apart inside it.
POINTS = [[30.0, 45.0], [70.0, 45.0], [50.0, 60.0], [35.0, 78.0], [65.0, 78.0]]
ONE = _dets([[20.0, 30.0, 80.0, 90.0]], [0.87], [POINTS])


def _image(height: int = 120, width: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)  # dark noise: drawn colours stand out


def test_input_untouched_and_new_array() -> None:
    image = _image()
    before = image.copy()
    out = draw_detections(image, ONE)
    np.testing.assert_array_equal(image, before)
    assert out is not image and not np.shares_memory(out, image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_box_edges_and_landmark_colours() -> None:
    out = draw_detections(_image(), ONE, score_fmt=None, thickness=1)
    # Axis-aligned edges at integer coordinates: the edge pixels carry the box colour exactly.
    for y, x in ((60, 20), (60, 80), (30, 50), (90, 50)):
        assert tuple(out[y, x]) == BOX_COLOR, (y, x, out[y, x])
    # Each landmark dot is filled with its own colour at its centre; the five colours are distinct.
    assert len(set(LANDMARK_COLORS)) == 5
    for (x, y), color in zip(POINTS, LANDMARK_COLORS):
        assert tuple(out[int(y), int(x)]) == color
    # Far from the box nothing changes.
    np.testing.assert_array_equal(out[100:, :], _image()[100:, :])


def test_score_label_drawn_above_box_only_when_asked() -> None:
    image = _image()
    with_label = draw_detections(image, ONE, thickness=1)
    without = draw_detections(image, ONE, score_fmt=None, thickness=1)
    above = (slice(10, 29), slice(20, 60))  # the strip just above the box's top edge
    np.testing.assert_array_equal(without[above], image[above])
    assert (with_label[above] != image[above]).any()
    # The label background is the box colour.
    assert (with_label[above] == np.array(BOX_COLOR, np.uint8)).all(axis=-1).sum() > 50


def test_label_inside_box_at_top_edge() -> None:
    dets = _dets([[10.0, 0.0, 60.0, 50.0]], [0.5], [POINTS])
    out = draw_detections(_image(), dets, thickness=1)
    assert out.shape == (120, 100, 3)
    assert (out[1:12, 12:40] == np.array(BOX_COLOR, np.uint8)).all(axis=-1).sum() > 50


def test_empty_detections_give_an_equal_copy() -> None:
    image = _image()
    empty = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))
    out = draw_detections(image, empty)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_non_finite_detection_skipped_and_others_drawn() -> None:
    dets = _dets(
        [[float("nan"), 0.0, 10.0, 10.0], [20.0, 30.0, 80.0, 90.0]],
        [0.9, 0.8],
        [POINTS, POINTS],
    )
    out = draw_detections(_image(), dets, score_fmt=None, thickness=1)
    assert tuple(out[60, 20]) == BOX_COLOR


def test_boxes_outside_the_image_are_fine() -> None:
    dets = _dets([[-50.0, -40.0, 500.0, 400.0]], [0.9], [[[-5.0, -5.0]] * 5])
    out = draw_detections(_image(), dets)
    assert out.shape == (120, 100, 3)


def test_auto_thickness_scales_with_image() -> None:
    assert auto_thickness(48, 64) == 1
    assert auto_thickness(480, 640) == 1
    assert auto_thickness(1080, 1920) == 2
    assert auto_thickness(2160, 3840) == 4


def test_thicker_lines_cover_more_pixels() -> None:
    image = np.zeros((120, 100, 3), np.uint8)
    thin = draw_detections(image, ONE, score_fmt=None, thickness=1)
    thick = draw_detections(image, ONE, score_fmt=None, thickness=3)
    assert (thick.any(axis=-1)).sum() > 2 * (thin.any(axis=-1)).sum()


def test_tensors_of_other_dtypes() -> None:
    dets = Detections(ONE.boxes.double(), ONE.scores.half(), ONE.landmarks.double())
    np.testing.assert_array_equal(draw_detections(_image(), dets), draw_detections(_image(), ONE))


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32),
     np.zeros((0, 10, 3), np.uint8), [[0, 0, 0]]],
)
def test_bad_image_raises_naming_shape(image) -> None:
    with pytest.raises(ImageError, match=r"\(H, W, 3\) uint8"):
        draw_detections(image, ONE)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="thickness"):
        draw_detections(_image(), ONE, thickness=0)
    with pytest.raises(ValueError, match="score_fmt"):
        draw_detections(_image(), ONE, score_fmt="{:d}")
    bad = Detections(torch.zeros(2, 4), torch.zeros(3), torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match=r"boxes \(N, 4\)"):
        draw_detections(_image(), bad)
