"""Image loading and conversion (`featherface.inference.images`): every accepted layout ends up as (H, W, 3) uint8 BGR."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from featherface.inference.images import (
    MEAN_BGR,
    ImageError,
    list_images,
    read_image,
    resize_long_side,
    to_bgr,
    to_tensor,
)


@pytest.fixture()
def bgr() -> np.ndarray:
    """A seeded (6, 8, 3) uint8 BGR image."""
    return np.random.default_rng(0).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def _jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `image` with an EXIF APP1 segment holding only the Orientation tag (0x0112)."""
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    data = buf.tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + app1 + data[2:]  # right after the SOI marker


# ------------------------------------------------------------------------------------------------ read_image


def test_read_image_png_is_exact(tmp_path: Path, bgr: np.ndarray) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), bgr)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, bgr)
    np.testing.assert_array_equal(read_image(str(path)), bgr)  # str paths too


def test_read_image_grayscale_rgba_and_16_bit(tmp_path: Path, bgr: np.ndarray) -> None:
    gray = bgr[:, :, 0].copy()
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, axis=2))

    alpha = np.full((6, 8, 1), 7, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), np.concatenate([bgr, alpha], axis=2))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), bgr)

    deep = (bgr.astype(np.uint16) << 8) + 200  # 16-bit; the top byte is the 8-bit value
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(read_image(tmp_path / "d.png"), bgr)


def test_read_image_applies_exif_orientation(tmp_path: Path) -> None:
    """Orientation 6 (rotate 90 degrees clockwise to display): a 40x80 landscape JPEG is read as 80x40 portrait,
    like ``cv2.imread(path, cv2.IMREAD_COLOR)`` in the reference evaluation scripts."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = 255  # left half white
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(image, 6))
    out = read_image(path)
    assert out.shape == (80, 40, 3)
    # Rotated clockwise, the white left half becomes the top half.
    assert out[:35].mean() > 240 and out[45:].mean() < 15
    np.testing.assert_array_equal(out, cv2.imread(str(path), cv2.IMREAD_COLOR))


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(missing)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file"):
        read_image(empty)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg" * 10)
    with pytest.raises(ImageError, match=r"corrupt\.jpg: not a decodable image"):
        read_image(corrupt)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path)  # a folder is not an image


# --------------------------------------------------------------------------------------------------- to_bgr


def test_to_bgr_layouts(bgr: np.ndarray) -> None:
    gray = bgr[:, :, 1].copy()
    expected_gray = np.stack([gray, gray, gray], axis=2)
    np.testing.assert_array_equal(to_bgr(gray), expected_gray)
    np.testing.assert_array_equal(to_bgr(gray[:, :, None]), expected_gray)
    np.testing.assert_array_equal(to_bgr(bgr), bgr)
    rgb = bgr[:, :, ::-1]
    out = to_bgr(rgb, "rgb")
    np.testing.assert_array_equal(out, bgr)
    assert out.flags.c_contiguous
    alpha = np.full((6, 8, 1), 3, np.uint8)
    np.testing.assert_array_equal(to_bgr(np.concatenate([bgr, alpha], axis=2)), bgr)
    np.testing.assert_array_equal(to_bgr(np.concatenate([rgb, alpha], axis=2), "rgb"), bgr)
    # Non-contiguous views are fine.
    np.testing.assert_array_equal(to_bgr(bgr[:, ::-1]), bgr[:, ::-1])
    np.testing.assert_array_equal(to_bgr(gray[::-1]), expected_gray[::-1])


def test_to_bgr_dtypes() -> None:
    np.testing.assert_array_equal(to_bgr(np.array([[0, 257, 65535, 514]], np.uint16))[0, :, 0], [0, 1, 255, 2])
    floats = np.array([[0.0, 1.0, 0.5, 0.2, -0.01, 1.01]], np.float32)
    # round(v * 255), clipped: 0, 255, 128 (127.5 rounds up), 51, 0, 255
    np.testing.assert_array_equal(to_bgr(floats)[0, :, 2], [0, 255, 128, 51, 0, 255])
    np.testing.assert_array_equal(to_bgr(floats.astype(np.float16))[0, :2, 0], [0, 255])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 5, 2), np.uint8), r"got \(4, 5, 2\)"),
        (np.zeros((2, 4, 5, 3), np.uint8), r"got \(2, 4, 5, 3\)"),
        (np.zeros((0, 5, 3), np.uint8), "empty image"),
        (np.zeros((4, 5, 3), np.int32), "unsupported dtype int32"),
        (np.zeros((4, 5, 3), bool), "unsupported dtype bool"),
        (np.full((4, 5, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 5, 3), np.inf, np.float64), "infinity"),
        (np.full((4, 5, 3), 200.0, np.float32), r"values in \[0, 1\], got \[200, 200\]"),
        (np.full((4, 5, 3), -104.0, np.float32), r"values in \[0, 1\]"),
        ([[1, 2], [3, 4]], "expected a numpy array, got list"),
    ],
)
def test_to_bgr_rejects(image: object, message: str) -> None:
    with pytest.raises(ImageError, match=message) as info:
        to_bgr(image, where="frame 7")  # type: ignore[arg-type]
    assert str(info.value).startswith("frame 7: ")


def test_to_bgr_rejects_unknown_color_order(bgr: np.ndarray) -> None:
    for image in (bgr, bgr[:, :, 0]):  # checked for grayscale too
        with pytest.raises(ImageError, match="color must be 'bgr' or 'rgb', got 'RGB'"):
            to_bgr(image, "RGB")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ resize, tensor, listing


def test_resize_long_side() -> None:
    image = np.zeros((50, 100, 3), np.uint8)
    same, scale = resize_long_side(image, None)
    assert same is image and scale == (1.0, 1.0)
    out, scale = resize_long_side(image, 200)
    assert out.shape == (100, 200, 3) and scale == (0.5, 0.5)
    out, scale = resize_long_side(np.zeros((300, 101, 3), np.uint8), 150)
    assert out.shape == (150, 50, 3)  # 101 * 0.5 = 50.5 -> 50
    assert scale == (101 / 50, 300 / 150)
    with pytest.raises(ValueError, match="at least 32"):
        resize_long_side(image, 16)


def test_resize_long_side_is_inter_linear() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    out, _ = resize_long_side(image, 64)
    np.testing.assert_array_equal(out, cv2.resize(image, (64, 48), interpolation=cv2.INTER_LINEAR))


def test_to_tensor_subtracts_the_bgr_mean() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[1, 2] = (200, 10, 123)  # B, G, R
    x = to_tensor(image)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    assert x[:, 1, 2].tolist() == [96.0, -107.0, 0.0]
    assert x[:, 0, 0].tolist() == [-v for v in MEAN_BGR]


def test_list_images(tmp_path: Path) -> None:
    for rel in ("b/2.JPG", "b/1.png", "a/x.jpeg", "a/notes.txt", "c.webp", "deep/er/z.bmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()  # a folder named like an image is not an image
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/x.jpeg", "b/1.png", "b/2.JPG", "c.webp", "deep/er/z.bmp"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")


# --------------------------------------------------------------------------- what users pass by mistake (issue 15)


def test_a_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is a folder, not an image file: pass its images"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, r"got None instead of an image \(cv2\.imread returns None when it cannot read a file"),
        (b"\xff\xd8\xff", r"got the bytes of a file, not an image: .*cv2\.imdecode\(np\.frombuffer"),
        (42, r"expected a numpy array, got int \(or an image path, or a list of images\)"),
    ],
)
def test_as_image_list_refuses_what_is_not_an_image(value: object, message: str) -> None:
    from featherface.inference.images import as_image_list

    with pytest.raises(ImageError, match=message):
        as_image_list(value)


def test_as_image_list_keeps_singles_and_lists(bgr: np.ndarray, tmp_path: Path) -> None:
    from featherface.inference.images import as_image_list

    assert as_image_list(bgr)[0] is True and as_image_list(str(tmp_path))[0] is True
    single, batch = as_image_list(x for x in (bgr, bgr))
    assert single is False and len(batch) == 2
    with pytest.raises(ImageError, match="image 1: got None instead of an image"):
        to_bgr(None, where="image 1")  # type: ignore[arg-type]


def test_large_image_warning_threshold() -> None:
    from featherface.inference.images import LARGE_IMAGE_PIXELS, large_image_warning

    assert large_image_warning(4000, 4000, None) is None  # 16.0 MP: at the limit
    assert LARGE_IMAGE_PIXELS == 16_000_000
    message = large_image_warning(6000, 8000, None, where="big.jpg")
    assert message is not None
    assert message.startswith("big.jpg is 8000x6000 (48 megapixels) and runs at its original size: expect about 5 GB")
    assert "long_side=1920 (command line: --long-side 1920)" in message
    assert large_image_warning(6000, 8000, 1920) is None  # resized: nothing to say
