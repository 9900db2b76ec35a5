"""Training augmentation of RetinaFace / FeatherFace, as pure functions of an image, a target and an RNG.

The recipe (DESIGN.md section 4) is the one of RetinaFace (Deng et al., CVPR 2020) as implemented in
biubug6/Pytorch_Retinaface ``data/data_augment.py``, which FeatherFace trains with unchanged:

1. :func:`random_square_crop`: a square of side ``int(s * min(W, H))``, ``s`` drawn from
   ``(0.3, 0.45, 0.6, 0.8, 1.0)``, at a random position inside the image; accepted when at least one face lies entirely
   inside it and at least one face has its centre strictly inside it; faces whose centre is inside are
   kept, their boxes clipped to the square, their landmarks shifted and clamped to it. Up to 250 tries;
   when all fail the image comes back unchanged (and is padded to a square in step 3, as RetinaFace does).
2. :func:`photometric_distort`: brightness, contrast, saturation and hue jitter, contrast randomly
   before or after the HSV changes.
3. :func:`pad_to_square`: only changes a non-square image (a failed crop): pads right and bottom with the
   mean colour (104, 117, 123), which is zero after mean subtraction.
4. :func:`horizontal_flip`: with probability 0.5, mirrors the image, the boxes and the landmarks and
   swaps left/right eye and left/right mouth corner.
5. :func:`resize`: to ``size x size`` with an interpolation drawn from linear, cubic, area, nearest,
   Lanczos-4.
6. :func:`to_network_input` (float32 CHW BGR minus the mean) and :func:`normalize_target` (coordinates
   divided by the image size, so in [0, 1]).

The order is RetinaFace's: pad before mirror, so the content of a padded image is left-aligned or, when
mirrored, right-aligned.

Coordinates are continuous pixels: a box ``(x1, y1, x2, y2)`` covers ``x1 <= x < x2``; the pixel of
column ``c`` spans ``[c, c + 1)``, so its centre is ``c + 0.5``; mirroring maps ``x`` to ``W - x``.
Labels in the WIDER ``x y w h`` form become ``(x, y, x + w, y + h)`` (as in RetinaFace).

Faces without landmarks (``has_landmarks`` False) keep the sentinel value ``-1`` in every landmark
coordinate through every step (RetinaFace shifts and clamps them like real points and masks them in the
loss; here they are left untouched, so the sentinel is exact).

Deliberate differences from biubug6 (all documented where they occur):
- the crop position is uniform over all ``W - side + 1`` positions (biubug6's ``randrange(W - side)``
  never touches the right/bottom edge unless the crop is as wide as the image);
- biubug6 has a "face larger than 16 px at training scale" filter after the crop whose threshold is in
  fact ``0`` (``min(w + 1, h + 1) / side * 640 > 0`` always holds), so it drops nothing; here that
  threshold is the ``min_face_px`` argument, default 0 (same behaviour, no face dropped);
- when the crop fails, boxes are clipped to the image (biubug6 leaves them as labelled; WIDER train boxes
  lie inside their images, so this changes nothing on the real data);
- scales above 1 zoom out (not in biubug6): the square is larger than the short side and covers the whole
  image along any side shorter than itself; the part outside the image is filled with the mean colour before
  the photometric distortion, which therefore jitters the fill too. Scales up to 1 draw exactly as before.

The randomness comes only from the ``numpy.random.Generator`` passed in, so a sample is a deterministic
function of (image, target, generator state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from featherface.data.labels import ImageLabels
from featherface.inference import images as inference_images
from featherface.inference.settings import MEAN_BGR as _MEAN_BGR

__all__ = [
    "MEAN_BGR",
    "CROP_SCALES",
    "MAX_CROP_SCALE",
    "INTERPOLATIONS",
    "Target",
    "target_from_labels",
    "random_square_crop",
    "photometric_distort",
    "pad_to_square",
    "horizontal_flip",
    "resize",
    "to_network_input",
    "normalize_target",
    "TrainTransform",
]

#: Per-channel mean subtracted from BGR images (RetinaFace / FeatherFace).
MEAN_BGR: tuple[int, int, int] = tuple(int(v) for v in _MEAN_BGR)  # (104, 117, 123), the fill colour of a crop
#: Crop side as a fraction of the short image side (RetinaFace ``PRE_SCALES``).
CROP_SCALES: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
MAX_CROP_SCALE = 4.0
"""Largest crop side / short image side: above 1 the crop zooms out (see :func:`random_square_crop`)."""
#: Interpolations drawn uniformly by :func:`resize` (RetinaFace ``_resize_subtract_mean``).
INTERPOLATIONS: tuple[int, ...] = (
    cv2.INTER_LINEAR,
    cv2.INTER_CUBIC,
    cv2.INTER_AREA,
    cv2.INTER_NEAREST,
    cv2.INTER_LANCZOS4,
)
#: Landmark index permutation of a horizontal mirror: (left eye, right eye, nose, left mouth, right mouth)
#: -> (right eye, left eye, nose, right mouth, left mouth).
FLIP_LANDMARK_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
#: Value of every landmark coordinate of a face without landmarks.
NO_LANDMARK: float = -1.0


@dataclass(frozen=True, eq=False)
class Target:
    """The faces of one image.

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` (pixels, or [0, 1] after :func:`normalize_target`).
        landmarks: (N, 5, 2) float32 ``x, y`` in the same units (left eye, right eye, nose, left mouth
            corner, right mouth corner); ``-1`` everywhere for faces without landmarks.
        has_landmarks: (N,) bool.
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    has_landmarks: np.ndarray

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.shape != (n, 4) or self.landmarks.shape != (n, 5, 2) or self.has_landmarks.shape != (n,):
            raise ValueError(
                "Target: expected boxes (N, 4), landmarks (N, 5, 2), has_landmarks (N,), got "
                f"{self.boxes.shape}, {self.landmarks.shape}, {self.has_landmarks.shape}"
            )
        for name, dtype in (("boxes", np.float32), ("landmarks", np.float32), ("has_landmarks", np.bool_)):
            if getattr(self, name).dtype != dtype:
                raise ValueError(f"Target: {name} must be {np.dtype(dtype).name}, got {getattr(self, name).dtype}")

    @property
    def num_faces(self) -> int:
        """N."""
        return int(self.boxes.shape[0])

    def select(self, keep: np.ndarray) -> "Target":
        """The faces where the (N,) bool mask (or index array) `keep` selects."""
        return Target(self.boxes[keep], self.landmarks[keep], self.has_landmarks[keep])

    @staticmethod
    def empty() -> "Target":
        """A target with no faces."""
        return Target(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), bool))


def target_from_labels(labels: ImageLabels) -> Target:
    """An `ImageLabels` (boxes ``x y w h``) as a pixel `Target` (boxes ``x1 y1 x2 y2``)."""
    boxes = labels.boxes.astype(np.float32, copy=True)
    boxes[:, 2:] += boxes[:, :2]
    landmarks = labels.landmarks.astype(np.float32, copy=True)
    has = labels.has_landmarks.astype(bool, copy=True)
    landmarks[~has] = NO_LANDMARK
    return Target(boxes, landmarks, has)


def _check_image(image: np.ndarray, func: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"{func}: expected an HxWx3 uint8 BGR image, got shape {shape} dtype {dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{func}: empty image of shape {image.shape}")


def random_square_crop(
    image: np.ndarray,
    target: Target,
    rng: np.random.Generator,
    scales: Sequence[float] = CROP_SCALES,
    max_tries: int = 250,
    min_face_px: float = 0.0,
    output_size: int = 640,
) -> tuple[np.ndarray, Target]:
    """RetinaFace's random square crop.

    Each try draws a scale ``s`` from `scales` and a top-left corner uniformly over every position where
    a square of side ``int(s * min(W, H))`` fits. The try is accepted when (a) at least one face box lies
    entirely inside the square, (b) at least one face has its box centre strictly inside it and (c) after
    the filter below at least one face remains. Kept faces: centre strictly inside; their boxes are
    clipped to the square, and their landmarks shifted and clamped to ``[0, side]`` (faces without
    landmarks keep ``-1``). Filter: a kept face whose clipped box, scaled to `output_size`, has
    ``min(w + 1, h + 1) <= min_face_px`` (biubug6's ``+1`` convention) is dropped; biubug6's threshold is
    0, which drops nothing.

    A scale above 1 zooms out (not in RetinaFace; SCRFD, Guo et al. 2021, widens the crop range to 2.0 to
    train on more small faces): along an image side shorter than the square, the corner is drawn over the
    positions where the square covers that whole side; the part of the square outside the image is filled
    with `MEAN_BGR`, and boxes are clipped to the image as well as to the square.

    When no try succeeds (or there are no faces), the image comes back unchanged, as in RetinaFace; its
    boxes are clipped to the image. :func:`pad_to_square` then makes it square.

    Args:
        image: (H, W, 3) uint8 BGR.
        target: pixel coordinates of `image`.
        rng: the only source of randomness.
        scales: crop side / short image side, each in (0, MAX_CROP_SCALE].
        max_tries: tries before giving up.
        min_face_px: see the filter above, in pixels at `output_size`.
        output_size: the side the crop will be resized to (only used by the filter).

    Returns:
        (the crop: (side, side, 3) uint8, a view of `image` unless it zooms out; the target in crop pixels).
    """
    _check_image(image, "random_square_crop")
    if not scales or any(not 0.0 < s <= MAX_CROP_SCALE for s in scales):
        raise ValueError(f"random_square_crop: scales must be non-empty, each in (0, {MAX_CROP_SCALE}], "
                         f"got {tuple(scales)}")
    if max_tries < 1:
        raise ValueError(f"random_square_crop: max_tries must be >= 1, got {max_tries}")
    height, width = image.shape[:2]
    boxes = target.boxes
    if target.num_faces > 0:
        short = min(width, height)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        for _ in range(max_tries):
            side = int(scales[int(rng.integers(len(scales)))] * short)
            if side < 1:
                continue
            left = _crop_corner(width, side, rng)
            top = _crop_corner(height, side, rng)
            low = np.array([left, top], np.float32)
            high = low + side
            inside = np.all((boxes[:, :2] >= low) & (boxes[:, 2:] <= high), axis=1)
            if not inside.any():
                continue
            keep = np.all((centres > low) & (centres < high), axis=1)
            if not keep.any():
                continue
            kept = target.select(keep)
            visible_low = np.maximum(low, 0.0)  # the square, or the image where the square leaves it (zoom-out)
            visible_high = np.minimum(high, np.array([width, height], np.float32))
            new_boxes = np.concatenate(
                (np.maximum(kept.boxes[:, :2], visible_low) - low, np.minimum(kept.boxes[:, 2:], visible_high) - low),
                axis=1,
            ).astype(np.float32)
            new_landmarks = np.clip(kept.landmarks - low, 0.0, float(side)).astype(np.float32)
            new_landmarks[~kept.has_landmarks] = NO_LANDMARK
            scaled = (new_boxes[:, 2:] - new_boxes[:, :2] + 1.0) / side * output_size
            big = scaled.min(axis=1) > min_face_px
            if not big.any():
                continue
            crop = _square(image, left, top, side)
            return crop, Target(new_boxes, new_landmarks, kept.has_landmarks.copy()).select(big)
    clipped = target.boxes.copy()
    np.clip(clipped[:, 0::2], 0.0, float(width), out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0.0, float(height), out=clipped[:, 1::2])
    return image, Target(clipped, target.landmarks.copy(), target.has_landmarks.copy())


def _crop_corner(extent: int, side: int, rng: np.random.Generator) -> int:
    """The crop's first pixel along an image side of `extent` pixels: uniform over the positions where the square
    fits inside (``side <= extent``) or covers the whole side (negative offsets)."""
    if side <= extent:
        return int(rng.integers(extent - side + 1))
    return extent - side + int(rng.integers(side - extent + 1))


def _square(image: np.ndarray, left: int, top: int, side: int, fill: Sequence[int] = MEAN_BGR) -> np.ndarray:
    """``image[top:top + side, left:left + side]``: a view when inside the image, else a copy filled with
    colour `fill` where the square leaves it."""
    height, width = image.shape[:2]
    if left >= 0 and top >= 0 and left + side <= width and top + side <= height:
        return image[top:top + side, left:left + side]
    out = np.empty((side, side, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


def _affine_lut(alpha: float, beta: float) -> np.ndarray:
    """(256,) uint8 table of ``clip(v * alpha + beta, 0, 255)`` truncated to an integer.

    The truncation (not rounding) is RetinaFace's: it assigns the clipped float array into a uint8 one.
    """
    values = np.arange(256, dtype=np.float64) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


def _hue_lut(delta: int) -> np.ndarray:
    """(256,) uint8 table of ``(h + delta) mod 180`` (OpenCV's 8-bit hue is in [0, 180))."""
    return ((np.arange(256, dtype=np.int64) + delta) % 180).astype(np.uint8)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RetinaFace's photometric distortion; returns a new (H, W, 3) uint8 BGR image.

    A fair coin picks the order: either brightness, contrast, then HSV (saturation, hue), or brightness,
    HSV, then contrast. Each of the four changes is applied with probability 1/2:

    - brightness: ``v + beta``, ``beta ~ U(-32, 32)``;
    - contrast: ``v * alpha``, ``alpha ~ U(0.5, 1.5)``;
    - saturation (HSV S channel): ``s * alpha``, ``alpha ~ U(0.5, 1.5)``;
    - hue (OpenCV 8-bit H in [0, 180)): ``(h + d) mod 180``, ``d`` an integer in [-18, 18].

    Values are clipped to [0, 255] and truncated to integers after each change, as in RetinaFace; the
    per-value maps are applied through 256-entry lookup tables (identical results, much faster).
    """
    _check_image(image, "photometric_distort")
    out = image
    contrast_first = bool(rng.integers(2))

    def brightness(img: np.ndarray) -> np.ndarray:
        if rng.integers(2):
            img = cv2.LUT(img, _affine_lut(1.0, rng.uniform(-32, 32)))
        return img

    def contrast(img: np.ndarray) -> np.ndarray:
        if rng.integers(2):
            img = cv2.LUT(img, _affine_lut(rng.uniform(0.5, 1.5), 0.0))
        return img

    def hsv(img: np.ndarray) -> np.ndarray:
        table = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # (256, 3): H, S, V
        if rng.integers(2):
            table[:, 1] = _affine_lut(rng.uniform(0.5, 1.5), 0.0)
        if rng.integers(2):
            table[:, 0] = _hue_lut(int(rng.integers(-18, 19)))
        hsv_img = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), table.reshape(256, 1, 3))
        return cv2.cvtColor(hsv_img, cv2.COLOR_HSV2BGR)

    out = brightness(out)
    if contrast_first:
        out = contrast(out)
        out = hsv(out)
    else:
        out = hsv(out)
        out = contrast(out)
    return out


def pad_to_square(image: np.ndarray, fill: Sequence[int] = MEAN_BGR) -> np.ndarray:
    """Pad a (H, W, 3) image on the right or bottom to (L, L, 3), ``L = max(H, W)``, with colour `fill`.

    The content stays at the top-left, so target coordinates do not change. A square image is returned
    as is.
    """
    _check_image(image, "pad_to_square")
    height, width = image.shape[:2]
    if height == width:
        return image
    return _square(image, 0, 0, max(height, width), fill)


def horizontal_flip(
    image: np.ndarray, target: Target, rng: np.random.Generator, p: float = 0.5
) -> tuple[np.ndarray, Target]:
    """With probability `p`, mirror left-right.

    ``x -> W - x`` for boxes (``x1' = W - x2``, ``x2' = W - x1``) and landmarks, and the landmark
    order becomes (right eye, left eye, nose, right mouth, left mouth) so index 0 is again the eye on
    the image's left. Faces without landmarks keep ``-1``. One draw from `rng` whatever `p` is.

    Returns:
        (image, a contiguous copy when mirrored; target).
    """
    _check_image(image, "horizontal_flip")
    if rng.random() >= p:
        return image, target
    width = image.shape[1]
    flipped = cv2.flip(image, 1)
    boxes = np.stack(
        (width - target.boxes[:, 2], target.boxes[:, 1], width - target.boxes[:, 0], target.boxes[:, 3]), axis=1
    ).astype(np.float32)
    landmarks = target.landmarks[:, FLIP_LANDMARK_ORDER].copy()
    landmarks[:, :, 0] = width - landmarks[:, :, 0]
    landmarks[~target.has_landmarks] = NO_LANDMARK
    return flipped, Target(boxes, landmarks, target.has_landmarks.copy())


def resize(
    image: np.ndarray,
    target: Target,
    rng: np.random.Generator | None,
    size: int = 640,
    interpolation: int | None = None,
) -> tuple[np.ndarray, Target]:
    """Resize a square image to (size, size, 3) and scale the target to match.

    Args:
        image: (L, L, 3) uint8 (non-square images are accepted, each axis scaled separately).
        rng: draws the interpolation from :data:`INTERPOLATIONS` when `interpolation` is None.
        interpolation: a fixed ``cv2.INTER_*`` flag instead.

    Returns:
        ((size, size, 3) uint8, target in pixels of the resized image).
    """
    _check_image(image, "resize")
    if size < 1:
        raise ValueError(f"resize: size must be >= 1, got {size}")
    if interpolation is None:
        if rng is None:
            raise ValueError("resize: give an rng or a fixed interpolation")
        interpolation = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    height, width = image.shape[:2]
    out = cv2.resize(image, (size, size), interpolation=interpolation)
    scale = np.array([size / width, size / height], np.float32)
    boxes = (target.boxes * np.tile(scale, 2)).astype(np.float32)
    landmarks = (target.landmarks * scale).astype(np.float32)
    landmarks[~target.has_landmarks] = NO_LANDMARK
    return out, Target(boxes, landmarks, target.has_landmarks.copy())


def to_network_input(image: np.ndarray, mean: Sequence[float] = MEAN_BGR) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (3, H, W) float32 BGR minus `mean` (no std scaling)."""
    _check_image(image, "to_network_input")
    return inference_images.to_network_input(image, mean)[0]


def normalize_target(target: Target, width: int, height: int) -> Target:
    """Pixel coordinates divided by the image `width` / `height` (RetinaFace's loss units, [0, 1]).

    Landmarks of faces without landmarks stay ``-1``.
    """
    scale = np.array([1.0 / width, 1.0 / height], np.float32)
    boxes = (target.boxes * np.tile(scale, 2)).astype(np.float32)
    landmarks = (target.landmarks * scale).astype(np.float32)
    landmarks[~target.has_landmarks] = NO_LANDMARK
    return Target(boxes, landmarks, target.has_landmarks.copy())


@dataclass(frozen=True)
class TrainTransform:
    """The full training augmentation: crop -> distort -> pad -> mirror -> resize -> normalise.

    Attributes:
        image_size: output side S (640 in RetinaFace / FeatherFace).
        scales, max_tries, min_face_px: see :func:`random_square_crop` (``min_face_px`` at size S).
        distort: apply :func:`photometric_distort` (turn off to check geometry).
        flip_p: mirror probability.
        interpolation: None draws it per sample (RetinaFace); a ``cv2.INTER_*`` flag fixes it.
    """

    image_size: int = 640
    scales: tuple[float, ...] = CROP_SCALES
    max_tries: int = 250
    min_face_px: float = 0.0
    distort: bool = True
    flip_p: float = 0.5
    interpolation: int | None = None

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"TrainTransform: image_size must be >= 1, got {self.image_size}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"TrainTransform: flip_p must be in [0, 1], got {self.flip_p}")

    def augment(self, image: np.ndarray, target: Target, rng: np.random.Generator) -> tuple[np.ndarray, Target]:
        """Geometry and colour only: ((S, S, 3) uint8 BGR, target in pixels of that image)."""
        image, target = random_square_crop(
            image, target, rng, self.scales, self.max_tries, self.min_face_px, self.image_size
        )
        if self.distort:
            image = photometric_distort(image, rng)
        image = pad_to_square(image)
        image, target = horizontal_flip(image, target, rng, self.flip_p)
        return resize(image, target, rng, self.image_size, self.interpolation)

    def __call__(self, image: np.ndarray, target: Target, rng: np.random.Generator) -> tuple[np.ndarray, Target]:
        """((3, S, S) float32 BGR minus the mean; target normalised to [0, 1] by S)."""
        image, target = self.augment(image, target, rng)
        return to_network_input(image), normalize_target(target, self.image_size, self.image_size)
