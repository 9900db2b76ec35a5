"""`FaceDetector`: golden parity with the V1 checkpoint, input handling, batching, resize policy, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.detection_asserts import assert_same_detections_up_to_ties
from featherface.inference.detector import (
    PRIOR_CACHE_SIZE,
    WIDER_PROTOCOL,
    DetectorSettings,
    FaceDetector,
    to_wider_rows,
)
from featherface.inference.images import MEAN_BGR, ImageError, resize_long_side, to_tensor
from featherface.models.checkpoints import CheckpointError, save_checkpoint
from featherface.models.registry import create_model
from featherface.inference.postprocess import Detections

PARADE = "0--Parade/0_Parade_marchingband_1_465.jpg"


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def v1(v1_weights: Path) -> FaceDetector:
    """The V1 checkpoint with the WIDER evaluation protocol, on the CPU."""
    return FaceDetector.from_pretrained("featherface_v1", v1_weights, settings=WIDER_PROTOCOL, device="cpu")


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict[str, np.ndarray]:
    path = golden_dir / "featherface_v1" / "outputs.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def val_images(widerface_dir: Path) -> Path:
    return widerface_dir / "val" / "images"


@pytest.fixture(scope="module")
def meeting(val_images: Path) -> np.ndarray:
    """The first `11--Meeting` val image in sorted order (1024x713, several large faces), BGR."""
    first = sorted((val_images / "11--Meeting").glob("*.jpg"))[0]
    image = cv2.imread(str(first), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def small(meeting: np.ndarray) -> np.ndarray:
    """The meeting image with its long side at 320 px (320x223): a few confident faces, a fast forward."""
    return resize_long_side(meeting, 320)[0]


@pytest.fixture(scope="module")
def tiny() -> FaceDetector:
    """A seeded, randomly initialised small FeatherFace (C = 16, one BiFPN cell) for structure tests."""
    torch.manual_seed(0)
    return FaceDetector(create_model("featherface_none", width=16, bifpn_repeats=1), device="cpu")


def assert_same_detections(a: Detections, b: Detections, atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for x, y in ((a.boxes, b.boxes), (a.scores, b.scores), (a.landmarks, b.landmarks)):
        if atol == 0.0:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------ golden parity


def test_parade_matches_golden(v1: FaceDetector, val_images: Path, golden: dict[str, np.ndarray]) -> None:
    dets = v1(val_images / PARADE)
    want = golden["parade_dets"]
    assert len(want) == 750
    assert_same_detections_up_to_ties(
        (dets.boxes, dets.scores, dets.landmarks), (want[:, :4], want[:, 4], golden["parade_landmarks"])
    )


def test_meeting_333x250_matches_golden(
    v1: FaceDetector, meeting: np.ndarray, golden: dict[str, np.ndarray]
) -> None:
    image = cv2.resize(meeting, (333, 250), interpolation=cv2.INTER_LINEAR)
    # The reconstruction of the golden input is exact: same image, same resize, same mean.
    np.testing.assert_array_equal(to_tensor(image).numpy(), golden["meeting_333x250_input"][0])
    dets = v1(image)
    want = golden["meeting_333x250_dets"]
    assert len(want) == 7
    assert_same_detections_up_to_ties(
        (dets.boxes, dets.scores, dets.landmarks), (want[:, :4], want[:, 4], golden["meeting_333x250_landmarks"])
    )


def test_random_noise_has_no_detection(v1: FaceDetector, golden: dict[str, np.ndarray]) -> None:
    x = golden["random_input"][0]  # (3, 240, 320), BGR minus the mean
    pixels = x.transpose(1, 2, 0) + np.asarray(MEAN_BGR, np.float32)
    image = np.rint(pixels).astype(np.uint8)
    np.testing.assert_array_equal(image, pixels)  # integer noise in 0..254: the uint8 image is exact
    np.testing.assert_array_equal(to_tensor(image).numpy(), x)
    assert golden["random_dets"].shape == (0, 5)
    dets = v1(image)
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.scores.shape == (0,) and dets.landmarks.shape == (0, 5, 2)


# ----------------------------------------------------------------------------------------- input handling


def test_batch_equals_one_by_one(v1_weights: Path, small: np.ndarray) -> None:
    """Sizes 223x320 (x3, split into chunks of 2) and 160x240 (x1), in mixed order.

    Not bit-identical: the CPU convolution kernels depend on the batch size, so outputs differ by float
    rounding (measured: 3e-5 px on boxes); the detection sets are the same.
    """
    detector = FaceDetector.from_pretrained(
        "featherface_v1", v1_weights, device="cpu", score_threshold=0.3, batch_size=2
    )
    other = np.ascontiguousarray(small[40:200, 50:290])
    flipped = np.ascontiguousarray(small[:, ::-1])
    batch = [small, other, flipped, small]
    together = detector(batch)
    assert isinstance(together, list) and len(together) == 4
    alone = [detector(image) for image in batch]
    assert [len(d) for d in alone] == [len(d) for d in together]
    assert min(len(d) for d in alone) >= 3
    for a, b in zip(together, alone):
        assert_same_detections(a, b, atol=1e-3)
    # Same-size images 0, 2, 3 run as chunks [0, 2] and [3]: the lone chunk is bit-identical to a lone call.
    assert_same_detections(together[3], alone[3])
    assert detector([]) == []


def test_box_voting_moves_boxes_and_keeps_scores(v1: FaceDetector, small: np.ndarray) -> None:
    plain = v1(small)
    voted = FaceDetector(v1.model, v1.settings.updated(box_voting=True), device="cpu")(small)
    assert len(voted) == len(plain) > 3 and torch.equal(voted.scores, plain.scores)
    moved = (voted.boxes - plain.boxes).abs().amax(dim=1)
    assert moved.max() > 0.1 and moved.median() < 5.0  # means of near-duplicates: small moves
    assert not torch.equal(voted.landmarks, plain.landmarks)


def test_path_and_array_inputs_agree(v1: FaceDetector, small: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "small.png"  # lossless, so the decoded array equals `small`
    cv2.imwrite(str(path), small)
    from_path = v1(path)
    assert len(from_path) > 0
    assert_same_detections(from_path, v1(small))
    assert_same_detections(from_path, v1(str(path)))


def test_color_orders_and_channel_layouts(tiny: FaceDetector) -> None:
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    reference = tiny(bgr)
    assert len(reference) > 0
    assert_same_detections(tiny(np.ascontiguousarray(bgr[:, :, ::-1]), color="rgb"), reference)
    bgra = np.concatenate([bgr, rng.integers(0, 256, size=(48, 64, 1), dtype=np.uint8)], axis=2)
    assert_same_detections(tiny(bgra), reference)
    rgba = np.concatenate([bgr[:, :, ::-1], bgra[:, :, 3:]], axis=2)
    assert_same_detections(tiny(rgba, color="rgb"), reference)
    assert_same_detections(tiny(bgr.astype(np.float32) / 255.0), reference)  # float in [0, 1]

    gray = bgr[:, :, 0].copy()
    gray_as_bgr = tiny(np.repeat(gray[:, :, None], 3, axis=2))
    assert_same_detections(tiny(gray), gray_as_bgr)
    assert_same_detections(tiny(gray[:, :, None]), gray_as_bgr)


def test_outputs_are_cpu_tensors_by_decreasing_score(tiny: FaceDetector) -> None:
    image = np.random.default_rng(4).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    dets = tiny(image)
    assert isinstance(dets, Detections)
    n = len(dets)
    assert n > 0
    assert dets.boxes.shape == (n, 4) and dets.scores.shape == (n,) and dets.landmarks.shape == (n, 5, 2)
    assert dets.boxes.device.type == "cpu" and dets.boxes.dtype == torch.float32
    assert bool((dets.scores[:-1] >= dets.scores[1:]).all())
    assert bool((dets.scores > tiny.settings.score_threshold).all())
    assert n <= tiny.settings.max_detections
    assert not tiny.model.training


def test_priors_cache_is_bounded(tiny: FaceDetector) -> None:
    images = [np.zeros((8 + i, 8, 3), np.uint8) for i in range(PRIOR_CACHE_SIZE + 4)]
    tiny(images)
    assert len(tiny._priors) == PRIOR_CACHE_SIZE
    assert (8 + PRIOR_CACHE_SIZE + 3, 8) in tiny._priors  # the most recent sizes are kept
    assert (8, 8) not in tiny._priors


# ------------------------------------------------------------------------------------------ resize policy


def test_long_side_maps_boxes_back_to_original_pixels(v1_weights: Path, small: np.ndarray) -> None:
    """A 2x nearest-neighbour upscale, run with long_side = the original width: the network sees exactly
    `small` (INTER_LINEAR halving of pixel-doubled data is exact), so every coordinate doubles exactly."""
    base = FaceDetector.from_pretrained("featherface_v1", v1_weights, device="cpu", score_threshold=0.3)
    upscaled = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    assert np.array_equal(resize_long_side(upscaled, small.shape[1])[0], small)
    resized = FaceDetector(base.model, base.settings, device="cpu", long_side=small.shape[1])
    want = base(small)
    got = resized(upscaled)
    assert len(want) >= 3
    assert len(got) == len(want)
    assert torch.equal(got.boxes, 2 * want.boxes)
    assert torch.equal(got.landmarks, 2 * want.landmarks)
    assert torch.equal(got.scores, want.scores)


def test_long_side_uses_separate_x_and_y_factors(v1_weights: Path, meeting: np.ndarray) -> None:
    """1024x713 -> 320x223: sx = 3.2, sy = 713 / 223; detections are those of the resized copy, rescaled."""
    base = FaceDetector.from_pretrained("featherface_v1", v1_weights, device="cpu", score_threshold=0.3)
    resized = FaceDetector(base.model, base.settings, device="cpu", long_side=320)
    got = resized(meeting)
    small, (sx, sy) = resize_long_side(meeting, 320)
    assert small.shape[:2] == (223, 320) and sx == 3.2 and sy == 713 / 223
    want = base(small)
    assert len(got) == len(want) >= 3
    factors = torch.tensor([sx, sy, sx, sy])
    torch.testing.assert_close(got.boxes, want.boxes * factors, atol=1e-3, rtol=1e-6)
    torch.testing.assert_close(got.landmarks, want.landmarks * factors[:2], atol=1e-3, rtol=1e-6)


# ------------------------------------------------------------------------------------------- WIDER rows


def test_to_wider_rows_truncates_like_the_reference() -> None:
    dets = Detections(
        boxes=torch.tensor([[10.7, 20.2, 30.9, 40.99], [-3.7, -0.5, 5.2, 7.0]]),
        scores=torch.tensor([0.9, 0.25]),
        landmarks=torch.zeros(2, 5, 2),
    )
    rows = to_wider_rows(dets)
    assert rows.dtype == np.float64 and rows.shape == (2, 5)
    # x = int(x1), w = int(x2) - int(x1): int() truncates towards zero (int(-3.7) = -3).
    np.testing.assert_array_equal(rows[:, :4], [[10, 20, 20, 20], [-3, 0, 8, 7]])
    np.testing.assert_array_equal(rows[:, 4], np.float32([0.9, 0.25]).astype(np.float64))
    empty = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))
    assert to_wider_rows(empty).shape == (0, 5)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_image_inputs_are_named(tiny: FaceDetector, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        tiny(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file"):
        tiny(empty)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match=r"corrupt\.jpg: not a decodable image"):
        tiny(corrupt)
    good = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ImageError, match=r"image 1: expected shape .* got \(16, 16, 2\)"):
        tiny([good, np.zeros((16, 16, 2), np.uint8)])
    with pytest.raises(ImageError, match="image 0: unsupported dtype int32"):
        tiny(np.zeros((16, 16, 3), np.int32))
    nan = np.full((16, 16, 3), 0.5, np.float32)
    nan[3, 4, 1] = np.nan
    with pytest.raises(ImageError, match="image 0: float image contains NaN"):
        tiny(nan)


def test_bad_weights(v1_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing_here.pth"):
        FaceDetector.from_pretrained("featherface_v1", tmp_path / "nothing_here.pth")
    # V1 (C = 56, R = 2) into the C = 52, R = 3 trunk: another architecture.
    with pytest.raises(CheckpointError) as info:
        FaceDetector.from_pretrained("featherface_none", v1_weights, device="cpu")
    message = str(info.value)
    assert str(v1_weights) in message
    assert "missing keys" in message and "neck.cells.2." in message
    assert "shape mismatches" in message and "checkpoint (56, 1, 3, 3) vs model (52, 1, 3, 3)" in message
    # A fork state dict records no architecture.
    with pytest.raises(CheckpointError, match="name the model .*featherface_v1"):
        FaceDetector.from_pretrained(None, v1_weights)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        FaceDetector.from_pretrained("featherface_v1", garbage)


def test_checkpoint_of_ours_rebuilds_its_architecture(tmp_path: Path, tiny: FaceDetector) -> None:
    path = save_checkpoint(tmp_path / "tiny.pt", tiny.model)
    rebuilt = FaceDetector.from_pretrained(None, path, device="cpu")
    assert rebuilt.model.config == tiny.model.config
    image = np.random.default_rng(5).integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
    assert_same_detections(rebuilt(image), tiny(image))


def test_settings_are_validated(tiny: FaceDetector) -> None:
    with pytest.raises(ValueError, match="unknown detector setting 'threshold' .*did you mean 'score_threshold'"):
        FaceDetector(tiny.model, device="cpu", threshold=0.3)
    for bad in (
        {"score_threshold": 1.0},
        {"nms_iou": 0.0},
        {"pre_nms_top_k": 0},
        {"max_detections": 0},
        {"batch_size": 0},
        {"long_side": 16},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DetectorSettings(**bad)
    detector = FaceDetector(tiny.model, WIDER_PROTOCOL, device="cpu", max_detections=5)
    assert detector.settings.max_detections == 5 and detector.settings.score_threshold == 0.02
    assert WIDER_PROTOCOL.max_detections == 750  # the shared protocol object is untouched
    image = np.random.default_rng(6).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert len(detector(image)) == 5


def test_what_users_pass_by_mistake_is_named(tiny: FaceDetector, tmp_path: Path) -> None:
    """Issue 15: cv2.imread's None, the bytes of a file and a folder each get a message that says what to do."""
    missing = cv2.imread(str(tmp_path / "missing.jpg"))
    with pytest.raises(ImageError, match=r"got None instead of an image \(cv2\.imread returns None"):
        tiny(missing)
    with pytest.raises(ImageError, match=r"image 1: got None instead of an image"):
        tiny([np.zeros((16, 16, 3), np.uint8), None])
    with pytest.raises(ImageError, match=r"got the bytes of a file, not an image: pass the file's path"):
        tiny(b"\xff\xd8\xff\xe0")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is a folder, not an image file"):
        tiny(tmp_path)


def test_large_image_warns_once_with_the_long_side_hint(tiny: FaceDetector, monkeypatch, caplog) -> None:
    import featherface.inference.images as images_mod

    monkeypatch.setattr(images_mod, "large_image_warning",  # a tiny stand-in threshold: 20x20 counts as large
                        lambda h, w, long_side, where: None if h * w <= 400 or long_side else f"{where} is large")
    detector = FaceDetector(tiny.model, device="cpu")
    with caplog.at_level("WARNING", logger="featherface.inference.images"):
        detector([np.zeros((16, 16, 3), np.uint8), np.zeros((24, 24, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["image 1 is large (further large images are not reported)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="featherface.inference.images"):
        FaceDetector(tiny.model, device="cpu", long_side=32)(np.zeros((24, 24, 3), np.uint8))
    assert not caplog.records
