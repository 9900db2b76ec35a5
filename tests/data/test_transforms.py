"""Training augmentation: geometry checked against a drawn scene (coloured face squares, landmark dots),
photometric maps against their formulas, determinism, shapes, the real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from featherface.data.labels import ImageLabels, drop_degenerate_boxes, read_label_file
from featherface.data.transforms import (
    FLIP_LANDMARK_ORDER,
    INTERPOLATIONS,
    MEAN_BGR,
    Target,
    TrainTransform,
    _affine_lut,
    _hue_lut,
    horizontal_flip,
    normalize_target,
    pad_to_square,
    photometric_distort,
    random_square_crop,
    resize,
    target_from_labels,
    to_network_input,
)

# ---------------------------------------------------------------------------------------------------------
# A synthetic scene: each face is a filled square of its own colour; each landmark a 5x5 dot whose colour
# says which landmark it is (left eye, right eye, nose, left mouth, right mouth). The last face has no
# landmarks. Landmarks sit on dot centres (pixel c covers [c, c + 1), so its centre is c + 0.5).

BACKGROUND = (128, 128, 128)
FACE_COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)], np.int32)
DOT_COLOURS = np.array([(0, 255, 255), (255, 0, 255), (255, 255, 255), (0, 0, 0), (0, 128, 255)], np.int32)
FACE_BOXES = np.array([[20, 30, 80, 90], [120, 20, 180, 80], [170, 100, 230, 160], [40, 110, 90, 160]], np.float32)
WIDTH, HEIGHT = 250, 180
DOT = 2  # half size: dots are 5x5


def scene_landmarks(box: np.ndarray) -> np.ndarray:
    """(5, 2) dot centres inside `box` (pixel centres), left features at smaller x."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    rel = np.array([[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.35, 0.75], [0.65, 0.75]])
    pixels = np.floor(np.array([x1, y1]) + rel * np.array([w, h]))
    return (pixels + 0.5).astype(np.float32)


def make_scene() -> tuple[np.ndarray, Target]:
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = BACKGROUND
    landmarks = np.full((len(FACE_BOXES), 5, 2), -1.0, np.float32)
    has = np.array([True, True, True, False])
    for k, box in enumerate(FACE_BOXES):
        x1, y1, x2, y2 = box.astype(int)
        image[y1:y2, x1:x2] = FACE_COLOURS[k]
        if has[k]:
            landmarks[k] = scene_landmarks(box)
            for j, (x, y) in enumerate(landmarks[k].astype(int)):
                image[y - DOT:y + DOT + 1, x - DOT:x + DOT + 1] = DOT_COLOURS[j]
    return image, Target(FACE_BOXES.copy(), landmarks, has)


def colour_mask(image: np.ndarray, colour: np.ndarray, tol: int = 0) -> np.ndarray:
    return np.all(np.abs(image.astype(np.int32) - colour) <= tol, axis=2)


def mask_extent(mask: np.ndarray) -> np.ndarray:
    """Continuous xyxy extent of the True pixels."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def identify(image: np.ndarray, box: np.ndarray, tol: int) -> int:
    """Which face colour dominates inside `box`."""
    x1, y1, x2, y2 = np.floor(box).astype(int)
    patch = image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
    counts = [colour_mask(patch, c, tol).sum() for c in FACE_COLOURS]
    return int(np.argmax(counts))


def colour_at(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = np.floor(point).astype(int)
    return image[y, x].astype(np.int32)


def crop_offset(image: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """(left, top) of a crop that is a view of `image`."""
    assert np.shares_memory(image, crop)
    delta = crop.__array_interface__["data"][0] - image.__array_interface__["data"][0]
    top, rest = divmod(delta, image.strides[0])
    return rest // image.strides[1], top


# ---------------------------------------------------------------------------------------------------------
# Target


def test_target_from_labels_converts_xywh_and_validates() -> None:
    labels = ImageLabels(
        "a.jpg",
        boxes=np.array([[10, 20, 30, 40], [1, 2, 3, 4]], np.float32),
        landmarks=np.array([np.arange(10).reshape(5, 2), np.full((5, 2), -1)], np.float32),
        has_landmarks=np.array([True, False]),
        visibility=np.zeros((2, 5), np.float32),
        blur=np.zeros(2, np.float32),
    )
    target = target_from_labels(labels)
    np.testing.assert_array_equal(target.boxes, [[10, 20, 40, 60], [1, 2, 4, 6]])
    np.testing.assert_array_equal(target.landmarks[0], np.arange(10).reshape(5, 2))
    assert np.all(target.landmarks[1] == -1) and target.has_landmarks.tolist() == [True, False]
    assert labels.boxes[0, 2] == 30  # input untouched
    with pytest.raises(ValueError, match=r"landmarks \(N, 5, 2\)"):
        Target(np.zeros((2, 4), np.float32), np.zeros((2, 10), np.float32), np.zeros(2, bool))
    with pytest.raises(ValueError, match="boxes must be float32"):
        Target(np.zeros((1, 4)), np.zeros((1, 5, 2), np.float32), np.zeros(1, bool))


# ---------------------------------------------------------------------------------------------------------
# Crop


def test_crop_keeps_faces_whose_centre_is_inside_and_maps_them_exactly() -> None:
    image, target = make_scene()
    centres = (target.boxes[:, :2] + target.boxes[:, 2:]) / 2
    seen_partial = seen_drop = False
    for seed in range(60):
        crop, out = random_square_crop(image, target, np.random.default_rng(seed))
        left, top = crop_offset(image, crop)
        side = crop.shape[0]
        assert crop.shape == (side, side, 3)
        assert side in {int(s * HEIGHT) for s in (0.3, 0.45, 0.6, 0.8, 1.0)}
        low, high = np.array([left, top]), np.array([left, top]) + side
        expected = np.nonzero(np.all((centres > low) & (centres < high), axis=1))[0]
        # at least one face lies entirely inside the crop
        assert np.any(np.all((target.boxes[:, :2] >= low) & (target.boxes[:, 2:] <= high), axis=1))
        ids = [identify(crop, box, 0) for box in out.boxes]
        assert ids == expected.tolist()
        seen_drop |= len(ids) < len(FACE_BOXES)
        for box, lms, has, k in zip(out.boxes, out.landmarks, out.has_landmarks, ids):
            # the box is exactly the visible part of the face square
            np.testing.assert_array_equal(box, mask_extent(colour_mask(crop, FACE_COLOURS[k]) | _dots_in(crop, box)))
            lo, hi = np.tile(low, 2), np.tile(high, 2)
            np.testing.assert_array_equal(box, np.clip(target.boxes[k], lo, hi) - lo)
            seen_partial |= bool(np.any(box != target.boxes[k] - lo))
            assert has == target.has_landmarks[k]
            if not has:
                assert np.all(lms == -1)
                continue
            original = target.landmarks[k] - low
            inside = np.all((original >= 0) & (original <= side), axis=1)
            np.testing.assert_array_equal(lms, np.clip(original, 0, side))
            for j in np.nonzero(inside)[0]:
                np.testing.assert_array_equal(colour_at(crop, lms[j]), DOT_COLOURS[j])
    assert seen_partial and seen_drop  # the seeds exercised clipping and dropping


def _dots_in(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Landmark-dot pixels inside `box` (dots lie inside their face square)."""
    mask = np.zeros(image.shape[:2], bool)
    x1, y1, x2, y2 = box.astype(int)
    inner = np.zeros_like(mask)
    inner[y1:y2, x1:x2] = True
    for colour in DOT_COLOURS:
        mask |= colour_mask(image, colour)
    return mask & inner


def test_crop_hand_computed_window() -> None:
    # 100x100 image, crop side 50 (scale 0.5): with faces in three quadrants every window keeps exactly
    # the faces whose centre is strictly inside it.
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[5, 5, 15, 15], [60, 10, 80, 30], [40, 40, 60, 60]], np.float32)  # centres 10, (70,20), 50
    target = Target(boxes, np.full((3, 5, 2), -1, np.float32), np.zeros(3, bool))
    for seed in range(20):
        crop, out = random_square_crop(image, target, np.random.default_rng(seed), scales=(0.5,))
        left, top = crop_offset(image, crop)
        assert crop.shape == (50, 50, 3)
        centres = np.array([[10, 10], [70, 20], [50, 50]])
        keep = np.all((centres > [left, top]) & (centres < [left + 50, top + 50]), axis=1)
        assert out.num_faces == keep.sum() >= 1
        expected = np.clip(boxes[keep], [left, top] * 2, [left + 50, top + 50] * 2) - [left, top] * 2
        np.testing.assert_array_equal(out.boxes, expected)
        assert np.all(out.landmarks == -1) and not out.has_landmarks.any()


@pytest.mark.parametrize("scale", [1.2, 1.6, 2.0, 4.0])
def test_crop_zooming_out_places_the_image_in_a_mean_filled_square(scale) -> None:
    image, target = make_scene()
    side = int(scale * HEIGHT)  # larger than the height; larger than the width too from 1.6
    for seed in range(10):
        crop, out = random_square_crop(image, target, np.random.default_rng(seed), scales=(scale,))
        assert crop.shape == (side, side, 3)
        # where the image lies in the square: the one offset at which the scene's pixels reappear
        filled = ~colour_mask(crop, np.array(MEAN_BGR))
        x0, y0, x1, y1 = mask_extent(filled).astype(int)
        top = -y0
        assert y1 - y0 == HEIGHT  # the square covers the whole height
        if side >= WIDTH:
            left = -x0
            assert x1 - x0 == WIDTH
        else:  # narrower than the image: the window is found by its content
            left = next(x for x in range(WIDTH - side + 1) if np.array_equal(crop[y0:y1, :], image[:, x:x + side]))
        np.testing.assert_array_equal(crop[y0:y1, max(0, -left):max(0, -left) + min(WIDTH, side)],
                                      image[:, max(0, left):max(0, left) + min(WIDTH, side)])
        centres = (target.boxes[:, :2] + target.boxes[:, 2:]) / 2
        low = np.array([left, top], np.float32)
        keep = np.all((centres > low) & (centres < low + side), axis=1)
        np.testing.assert_array_equal(out.boxes, np.clip(target.boxes[keep], np.tile(low, 2),
                                                         np.tile(low + side, 2)) - np.tile(low, 2))
        assert [identify(crop, box, 0) for box in out.boxes] == np.nonzero(keep)[0].tolist()


def test_crop_scales_up_to_one_draw_as_before() -> None:
    """Zoom-out support leaves in-image crops as they were: the same draws from the generator, the same window
    (a replica of the sampler before it, for one face), and a view of the image."""
    image = np.zeros((90, 130, 3), np.uint8)
    face = np.array([[50, 30, 62, 44]], np.float32)
    target = Target(face, np.full((1, 5, 2), -1, np.float32), np.zeros(1, bool))
    scales = (0.45, 0.6, 1.0)
    for seed in range(20):
        replica = np.random.default_rng(seed)
        while True:  # the sampler before zoom-out: side, then left in [0, W - side], then top in [0, H - side]
            side = int(scales[int(replica.integers(len(scales)))] * 90)
            left, top = int(replica.integers(130 - side + 1)), int(replica.integers(90 - side + 1))
            if left <= 50 and top <= 30 and 62 <= left + side and 44 <= top + side:
                break
        crop, out = random_square_crop(image, target, np.random.default_rng(seed), scales=scales)
        assert np.shares_memory(crop, image) and crop.shape[0] == side
        assert crop_offset_of_view(image, crop) == (left, top)
        np.testing.assert_array_equal(out.boxes, face - [left, top, left, top])


def crop_offset_of_view(image: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """(left, top) of a crop that is a view of `image`, from the two arrays' memory addresses."""
    offset = crop.__array_interface__["data"][0] - image.__array_interface__["data"][0]
    row, rest = divmod(offset, image.strides[0])
    return rest // image.strides[1], row


def test_crop_failure_returns_the_image_and_padding_makes_it_square() -> None:
    # One face wider than the short side can never lie entirely inside a square crop.
    image = np.full((40, 100, 3), 7, np.uint8)
    target = Target(np.array([[-5, 5, 90, 35]], np.float32), np.full((1, 5, 2), -1, np.float32), np.zeros(1, bool))
    out_image, out = random_square_crop(image, target, np.random.default_rng(0), max_tries=30)
    assert out_image is image
    np.testing.assert_array_equal(out.boxes, [[0, 5, 90, 35]])  # clipped to the image
    padded = pad_to_square(out_image)
    assert padded.shape == (100, 100, 3)
    assert np.all(padded[:40] == 7) and np.all(padded[40:] == MEAN_BGR)
    assert pad_to_square(padded) is padded
    # no faces at all: nothing to crop around
    empty_image, empty = random_square_crop(image, Target.empty(), np.random.default_rng(0))
    assert empty_image is image and empty.num_faces == 0


def test_crop_min_face_filter_at_training_scale() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    boxes = np.array([[10, 10, 110, 110], [150, 150, 155, 155]], np.float32)  # 5 px -> (5 + 1) / 200 * 640 = 19.2
    target = Target(boxes, np.full((2, 5, 2), -1, np.float32), np.zeros(2, bool))
    _, kept = random_square_crop(image, target, np.random.default_rng(0), scales=(1.0,), min_face_px=19.0)
    _, dropped = random_square_crop(image, target, np.random.default_rng(0), scales=(1.0,), min_face_px=19.5)
    assert kept.num_faces == 2 and dropped.num_faces == 1
    _, default = random_square_crop(image, target, np.random.default_rng(0), scales=(1.0,))
    assert default.num_faces == 2  # RetinaFace's threshold (0) drops nothing


def test_crop_rejects_bad_arguments() -> None:
    image, target = make_scene()
    with pytest.raises(ValueError, match="scales"):
        random_square_crop(image, target, np.random.default_rng(0), scales=(4.5,))
    with pytest.raises(ValueError, match=r"HxWx3 uint8.*float32"):
        random_square_crop(image.astype(np.float32), target, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------
# Mirror


def test_mirror_maps_squares_and_swaps_left_right_landmarks() -> None:
    image, target = make_scene()
    flipped, out = horizontal_flip(image, target, np.random.default_rng(0), p=1.0)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    for k in range(len(FACE_BOXES)):
        visible = colour_mask(flipped, FACE_COLOURS[k]) | _dots_in(flipped, out.boxes[k])
        np.testing.assert_array_equal(out.boxes[k], mask_extent(visible))
        x1, y1, x2, y2 = FACE_BOXES[k]
        np.testing.assert_array_equal(out.boxes[k], [WIDTH - x2, y1, WIDTH - x1, y2])
        if not target.has_landmarks[k]:
            assert np.all(out.landmarks[k] == -1) and not out.has_landmarks[k]
            continue
        lms = out.landmarks[k]
        # index 0 is again the eye on the image's left, and it is the face's former right eye
        assert lms[0, 0] < lms[1, 0] and lms[3, 0] < lms[4, 0]
        for j in range(5):
            np.testing.assert_array_equal(colour_at(flipped, lms[j]), DOT_COLOURS[FLIP_LANDMARK_ORDER[j]])
        np.testing.assert_array_equal(lms[0], [WIDTH - target.landmarks[k, 1, 0], target.landmarks[k, 1, 1]])
        np.testing.assert_array_equal(lms[2], [WIDTH - target.landmarks[k, 2, 0], target.landmarks[k, 2, 1]])
    assert FLIP_LANDMARK_ORDER == (1, 0, 2, 4, 3)


def test_mirror_twice_is_identity_and_probability_is_respected() -> None:
    image, target = make_scene()
    once, t1 = horizontal_flip(image, target, np.random.default_rng(0), p=1.0)
    twice, t2 = horizontal_flip(once, t1, np.random.default_rng(0), p=1.0)
    np.testing.assert_array_equal(twice, image)
    np.testing.assert_array_equal(t2.boxes, target.boxes)
    np.testing.assert_array_equal(t2.landmarks, target.landmarks)
    np.testing.assert_array_equal(t2.has_landmarks, target.has_landmarks)
    same, t0 = horizontal_flip(image, target, np.random.default_rng(0), p=0.0)
    assert same is image and t0 is target
    flips = sum(horizontal_flip(image, target, np.random.default_rng(s))[0] is not image for s in range(400))
    assert 160 < flips < 240  # p = 0.5


# ---------------------------------------------------------------------------------------------------------
# Resize, normalisation, network input


def test_resize_nearest_double_keeps_colours_under_points() -> None:
    image, target = make_scene()
    square = pad_to_square(image)
    big, out = resize(square, target, None, size=2 * WIDTH, interpolation=cv2.INTER_NEAREST)
    assert big.shape == (2 * WIDTH, 2 * WIDTH, 3)
    np.testing.assert_array_equal(out.boxes, target.boxes * 2)
    for k in range(3):
        visible = colour_mask(big, FACE_COLOURS[k]) | _dots_in(big, out.boxes[k])
        np.testing.assert_array_equal(out.boxes[k], mask_extent(visible))
        for j in range(5):
            np.testing.assert_array_equal(colour_at(big, out.landmarks[k, j]), DOT_COLOURS[j])
    assert np.all(out.landmarks[3] == -1)
    with pytest.raises(ValueError, match="rng"):
        resize(square, target, None, size=64)


def test_resize_draws_every_interpolation() -> None:
    image, target = make_scene()
    drawn = set()
    square = pad_to_square(image)
    for seed in range(60):
        small, _ = resize(square, target, np.random.default_rng(seed), size=32)
        matches = [m for m in INTERPOLATIONS if np.array_equal(small, cv2.resize(square, (32, 32), interpolation=m))]
        assert matches
        drawn.update(matches)
    assert drawn == set(INTERPOLATIONS)


def test_network_input_and_normalisation() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 1] = (10, 20, 30)
    x = to_network_input(image)
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[:, 0, 1], [10 - 104, 20 - 117, 30 - 123])
    np.testing.assert_array_equal(x[:, 1, 2], [-104, -117, -123])
    points = np.tile(np.array([320, 160], np.float32), (1, 5, 1))
    target = Target(np.array([[64, 32, 128, 640]], np.float32), points, np.array([True]))
    norm = normalize_target(target, 640, 320)
    np.testing.assert_allclose(norm.boxes, [[0.1, 0.1, 0.2, 2.0]])
    np.testing.assert_allclose(norm.landmarks[0], np.tile([0.5, 0.5], (5, 1)))
    without = Target(np.zeros((1, 4), np.float32), np.full((1, 5, 2), -1, np.float32), np.zeros(1, bool))
    none = normalize_target(without, 640, 640)
    assert np.all(none.landmarks == -1)


# ---------------------------------------------------------------------------------------------------------
# Photometric distortion


def test_lookup_tables_match_the_formulas() -> None:
    values = np.arange(256, dtype=np.float64)
    for alpha, beta in ((1.0, 31.7), (1.0, -20.2), (1.37, 0.0), (0.52, 0.0)):
        # RetinaFace: clip(v * alpha + beta, 0, 255) assigned into uint8 (truncation)
        expected = np.trunc(np.clip(values * alpha + beta, 0, 255)).astype(np.uint8)
        np.testing.assert_array_equal(_affine_lut(alpha, beta), expected)
    assert _affine_lut(1.0, 0.0).tolist() == list(range(256))
    np.testing.assert_array_equal(_hue_lut(-18)[:3], [162, 163, 164])
    np.testing.assert_array_equal(_hue_lut(18)[[0, 161, 162, 179]], [18, 179, 0, 17])


def _reference_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Straightforward float implementation of the RetinaFace distortion, same draw order."""

    def convert(a: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(a.astype(np.float64) * alpha + beta, 0, 255).astype(np.uint8)

    img = image.copy()
    contrast_first = bool(rng.integers(2))
    if rng.integers(2):
        img = convert(img, beta=rng.uniform(-32, 32))

    def contrast(a: np.ndarray) -> np.ndarray:
        return convert(a, alpha=rng.uniform(0.5, 1.5)) if rng.integers(2) else a

    def hsv(a: np.ndarray) -> np.ndarray:
        h = cv2.cvtColor(a, cv2.COLOR_BGR2HSV)
        if rng.integers(2):
            h[:, :, 1] = convert(h[:, :, 1], alpha=rng.uniform(0.5, 1.5))
        if rng.integers(2):
            h[:, :, 0] = (h[:, :, 0].astype(int) + int(rng.integers(-18, 19))) % 180
        return cv2.cvtColor(h, cv2.COLOR_HSV2BGR)

    if contrast_first:
        img = hsv(contrast(img))
    else:
        img = contrast(hsv(img))
    return img


def test_photometric_distort_matches_reference_and_is_seeded() -> None:
    image = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    outputs = []
    for seed in range(16):
        out = photometric_distort(image[2:20, 3:30], np.random.default_rng(seed))
        ref = _reference_distort(image[2:20, 3:30], np.random.default_rng(seed))
        assert out.shape == (18, 27, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, ref)
        outputs.append(out)
    assert len({o.tobytes() for o in outputs}) >= 12  # a draw with no change at all has probability 1/16
    again = photometric_distort(image, np.random.default_rng(3))
    np.testing.assert_array_equal(photometric_distort(image, np.random.default_rng(3)), again)
    # the input is not modified
    np.testing.assert_array_equal(image, np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------
# The whole transform


def test_train_transform_geometry_on_the_scene() -> None:
    image, target = make_scene()
    size = 128
    transform = TrainTransform(image_size=size, distort=False)
    flips = []
    for seed in range(40):
        out_image, out = transform.augment(image, target, np.random.default_rng(seed))
        assert out_image.shape == (size, size, 3) and out_image.dtype == np.uint8
        ids = [identify(out_image, box, 40) for box in out.boxes]
        assert len(set(ids)) == len(ids)
        pairs = []  # (landmark index, index of the dot colour found under it)
        for box, lms, has, k in zip(out.boxes, out.landmarks, out.has_landmarks, ids):
            assert has == target.has_landmarks[k]
            # the box is the extent of the (resampled) face square, within interpolation spread
            np.testing.assert_allclose(mask_extent(colour_mask(out_image, FACE_COLOURS[k], 40)), box, atol=1.5)
            if not has:
                assert np.all(lms == -1)
                continue
            assert lms[0, 0] <= lms[1, 0] and lms[3, 0] <= lms[4, 0]
            for j in range(5):
                if np.any(np.isclose(lms[j], 0, atol=1e-3) | np.isclose(lms[j], size, atol=1e-3)):
                    continue  # clamped to the crop border
                distances = np.abs(DOT_COLOURS - colour_at(out_image, lms[j])).max(axis=1)
                assert distances.min() <= 40
                pairs.append((j, int(np.argmin(distances))))
        straight = all(found == j for j, found in pairs)
        mirrored = all(found == FLIP_LANDMARK_ORDER[j] for j, found in pairs)
        assert straight or mirrored, pairs
        if any(j != 2 for j, _ in pairs):
            flips.append(mirrored)
    assert set(flips) == {False, True}


def test_train_transform_outputs_and_determinism() -> None:
    image, target = make_scene()
    transform = TrainTransform(image_size=64)
    x, out = transform(image, target, np.random.default_rng(5))
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert x.min() >= -123 and x.max() <= 255 - 104
    assert out.boxes.dtype == np.float32 and out.num_faces >= 1
    assert np.all(out.boxes >= 0) and np.all(out.boxes <= 1) and np.all(out.boxes[:, 2:] > out.boxes[:, :2])
    lms = out.landmarks[out.has_landmarks]
    assert np.all((lms >= 0) & (lms <= 1))
    assert np.all(out.landmarks[~out.has_landmarks] == -1)
    x2, out2 = transform(image, target, np.random.default_rng(5))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(out.boxes, out2.boxes)
    x3, _ = transform(image, target, np.random.default_rng(6))
    assert not np.array_equal(x, x3)
    with pytest.raises(ValueError, match="flip_p"):
        TrainTransform(flip_p=2.0)


def test_real_image_through_train_transform(widerface_dir: Path) -> None:
    train = widerface_dir / "train"
    images, _ = drop_degenerate_boxes(read_label_file(train / "label.txt"))
    with_landmarks = next(im for im in images if im.has_landmarks.any() and im.num_faces > 3)
    image = cv2.imread(str(train / "images" / with_landmarks.path))
    target = target_from_labels(with_landmarks)
    transform = TrainTransform()
    counts = []
    for seed in range(4):
        x, out = transform(image, target, np.random.default_rng(seed))
        assert x.shape == (3, 640, 640) and x.dtype == np.float32 and np.isfinite(x).all()
        assert -123 <= x.min() and x.max() <= 151
        assert 1 <= out.num_faces <= target.num_faces
        assert np.all((out.boxes >= 0) & (out.boxes <= 1)) and np.all(out.boxes[:, 2:] > out.boxes[:, :2])
        landmarked = out.landmarks[out.has_landmarks]
        assert np.all((landmarked >= 0) & (landmarked <= 1))
        assert np.all(out.landmarks[~out.has_landmarks] == -1)
        # landmarks of a face lie near its box (WIDER landmarks sit on the face)
        for box, lm in zip(out.boxes[out.has_landmarks], landmarked):
            w, h = box[2:] - box[:2]
            assert np.all(lm >= box[:2] - [w, h]) and np.all(lm <= box[2:] + [w, h])
        counts.append(out.num_faces)
    assert len(set(counts)) > 1  # different crops
