"""Reading user images and turning them into network inputs.

Everything the detector accepts ends up as an ``(H, W, 3)`` uint8 **BGR** array: grayscale images are
replicated to three channels, RGBA / BGRA lose their alpha channel, RGB arrays are flipped when the caller says
they are RGB. The network input is that array minus the mean :data:`~featherface.inference.settings.MEAN_BGR`
(104, 117, 123), as float32 CHW (DESIGN.md section 1): :func:`to_network_input` (numpy, with a batch axis) and
:func:`to_tensor` (torch).

Importing this module does not import torch (only :func:`to_tensor` needs it), so the torch-free runtime
(:mod:`featherface.inference.onnx`) shares these functions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import cv2
import numpy as np

from featherface.inference.settings import MEAN_BGR

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: What the detectors accept as one image: a path or an array (see :func:`load_image`).
ImageInput = Union[str, os.PathLike, np.ndarray]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ColorOrder = Literal["bgr", "rgb"]

#: Above this many pixels, an image run at its original size gets a warning suggesting ``long_side``: an
#: 8000x6000 photo (48 MP) took 82 s and 5 GB on a CPU.
LARGE_IMAGE_PIXELS: int = 16_000_000
#: Peak memory per input pixel at the original size (measured: 5 GB for 48 MP), for the warning's estimate.
BYTES_PER_PIXEL: float = 110.0
#: The ``long_side`` the large-image warning suggests.
SUGGESTED_LONG_SIDE: int = 1920


class ImageError(ValueError):
    """An image that cannot be read or has an unusable shape or dtype."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into an ``(H, W, 3)`` uint8 BGR array.

    Decoded like ``cv2.imread(path, cv2.IMREAD_COLOR)``, the call of the RetinaFace / FeatherFace evaluation
    scripts and of :mod:`featherface.data.dataset`: the EXIF orientation is applied (a phone picture comes out
    the way viewers show it), grayscale is replicated to three channels, alpha is dropped, CMYK JPEGs are
    converted and 16-bit images are reduced to 8 bits.

    Raises:
        FileNotFoundError: the path does not exist, or is a folder.
        ImageError: the file is empty or not a decodable image.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, not an image file: pass its images (featherface.inference.images."
                                "list_images lists them), or give the folder to `featherface detect`")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt or unsupported format)")
    return to_bgr(image, "bgr", where=str(path))


def to_bgr(image: np.ndarray, color: ColorOrder = "bgr", where: str = "image") -> np.ndarray:
    """An ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array as contiguous ``(H, W, 3)`` uint8 BGR.

    Args:
        image: the array; uint8, or uint16 (scaled down by 257), or float in [0, 1] (scaled by 255; values a
            little outside are clipped, but a float image in 0..255 or a mean-subtracted one is refused rather
            than silently turned white or black).
        color: the channel order of a 3- or 4-channel input (``"bgr"`` or ``"rgb"``).
        where: how to name the image in error messages.

    Raises:
        ImageError: naming ``where`` and the unusable shape, dtype, value range or colour order.
    """
    if color not in ("bgr", "rgb"):
        raise ImageError(f"{where}: color must be 'bgr' or 'rgb', got {color!r}")
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{where}: {_not_an_array(image)}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(
            f"{where}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}"
            + (" (channels first? use image.transpose(1, 2, 0))" if image.ndim == 3 and image.shape[0] in (1, 3, 4)
               else "")
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"{where}: empty image of shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageError(f"{where}: float image contains NaN or infinity")
        low, high = float(image.min()), float(image.max())
        if low < -0.5 or high > 1.5:
            raise ImageError(
                f"{where}: float images must hold values in [0, 1], got [{low:g}, {high:g}] "
                "(pass a 0..255 image as uint8, e.g. image.astype(np.uint8))"
            )
        image = np.clip(image.astype(np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{where}: unsupported dtype {image.dtype} (use uint8, uint16 or float in [0, 1])")
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if color == "rgb":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def _not_an_array(image: object) -> str:
    """Why ``image`` is not an image array, and what to pass instead."""
    if image is None:
        return ("got None instead of an image (cv2.imread returns None when it cannot read a file: check the path, "
                "or pass the path itself to get the reason)")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return ("got the bytes of a file, not an image: pass the file's path, or decode the bytes first with "
                "cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)")
    if hasattr(image, "__array_interface__") or hasattr(image, "__array__"):
        return (f"expected a numpy array, got {type(image).__name__}: convert it with np.asarray(image) "
                "(a PIL image is RGB: pass color='rgb')")
    return f"expected a numpy array, got {type(image).__name__}"


def load_image(image: ImageInput, color: ColorOrder = "bgr", where: str = "image") -> tuple[np.ndarray, str]:
    """One detector input (a path, decoded by :func:`read_image`, or an array, converted by :func:`to_bgr`) as an
    ``(H, W, 3)`` uint8 BGR array, with its name for messages (the path, else ``where``)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image), str(image)
    return to_bgr(image, color, where=where), where


def as_image_list(images: object) -> tuple[bool, list]:
    """``(single, [images])``: one path or array becomes a list of one; a list (any iterable) is kept as a list.

    Raises:
        ImageError: ``None``, bytes, or anything that is neither an image nor an iterable of images.
    """
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        return True, [images]
    if images is None or isinstance(images, (bytes, bytearray, memoryview)):
        raise ImageError(f"image: {_not_an_array(images)}")
    try:
        return False, list(images)  # type: ignore[call-overload]
    except TypeError:
        raise ImageError(f"image: {_not_an_array(images)} (or an image path, or a list of images)") from None


def large_image_warning(height: int, width: int, long_side: int | None, where: str = "image") -> str | None:
    """A warning for an image so large that running it at its original size takes minutes and gigabytes
    (more than :data:`LARGE_IMAGE_PIXELS` with ``long_side`` None); ``None`` when it is fine."""
    pixels = int(height) * int(width)
    if long_side is not None or pixels <= LARGE_IMAGE_PIXELS:
        return None
    gigabytes = pixels * BYTES_PER_PIXEL / 1e9
    return (f"{where} is {width}x{height} ({pixels / 1e6:.0f} megapixels) and runs at its original size: expect "
            f"about {gigabytes:.0f} GB of memory and minutes on a CPU. Resize it with long_side={SUGGESTED_LONG_SIDE} "
            f"(command line: --long-side {SUGGESTED_LONG_SIDE}); small faces may then be missed")


class LargeImageNotice:
    """A detector's large-image warning, given once: ``notice(height, width, long_side, where)`` logs and returns
    :func:`large_image_warning`'s message the first time an image is too large, ``None`` otherwise (later large
    images are not reported)."""

    def __init__(self) -> None:
        self.given = False

    def __call__(self, height: int, width: int, long_side: int | None, where: str) -> str | None:
        if self.given:
            return None
        message = large_image_warning(height, width, long_side, where)
        if message:
            log.warning("%s (further large images are not reported)", message)
            self.given = True
        return message


def resize_long_side(image: np.ndarray, long_side: int | None) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize so that the longer side is ``long_side`` pixels (``None``: keep the original size).

    Returns:
        the resized image and ``(sx, sy)``, the factors from resized pixels back to original pixels.
    """
    if long_side is None:
        return image, (1.0, 1.0)
    if long_side < 32:
        raise ValueError(f"long_side must be at least 32 pixels, got {long_side}")
    height, width = image.shape[:2]
    ratio = long_side / max(height, width)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized, (width / new_w, height / new_h)


def fit_and_pad(
    image: np.ndarray, size: tuple[int, int], pad_value: Sequence[float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``(H, W, 3)`` ``image`` to fit inside ``size = (H', W')`` (aspect ratio kept, no resize when it
    already fits) and pad it at the bottom and right with ``pad_value`` to exactly ``(H', W')``.

    Returns:
        the ``(H', W', 3)`` image and ``(sx, sy)`` from its pixels back to the original ones (padding at the
        bottom and right does not move the origin).
    """
    height, width = image.shape[:2]
    target_h, target_w = size
    sx = sy = 1.0
    if height > target_h or width > target_w:
        ratio = min(target_h / height, target_w / width)
        new_w, new_h = max(1, min(target_w, round(width * ratio))), max(1, min(target_h, round(height * ratio)))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        sx, sy = width / new_w, height / new_h
        height, width = new_h, new_w
    if (height, width) != (target_h, target_w):
        image = cv2.copyMakeBorder(
            image, 0, target_h - height, 0, target_w - width, cv2.BORDER_CONSTANT, value=tuple(pad_value)
        )
    return image, (sx, sy)


def to_network_input(image: np.ndarray, mean: Sequence[float] = MEAN_BGR) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR -> ``(1, 3, H, W)`` float32 network input: minus ``mean``, no scaling."""
    out = np.empty((1, 3, *image.shape[:2]), np.float32)
    # One pass: the uint8 CHW view minus the per-channel mean, written as float32.
    np.subtract(image.transpose(2, 0, 1), np.asarray(mean, np.float32)[:, None, None], out=out[0], dtype=np.float32)
    return out


def to_tensor(image: np.ndarray, mean: Sequence[float] = MEAN_BGR) -> "torch.Tensor":
    """``(H, W, 3)`` uint8 BGR -> ``(3, H, W)`` float32 network input (:func:`to_network_input` as a tensor)."""
    import torch  # this module must import without torch (the torch-free runtime uses it)

    return torch.from_numpy(to_network_input(image, mean)[0])


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted, by suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
