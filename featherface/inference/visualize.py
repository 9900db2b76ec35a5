"""Drawing detections on images: boxes, scores and the five landmarks.

Pure functions on numpy arrays: the input image is never modified; a new annotated ``(H, W, 3)`` uint8 BGR array is
returned. Line thickness, text size and landmark radius scale with the image so that the drawing is legible on a
64 px thumbnail and on a 4K frame alike.

Landmark colours (BGR) follow the order of :class:`~featherface.inference.postprocess.Detections` (left eye, right eye,
nose, left and right mouth corners) and the colours of the RetinaFace demo: red, yellow, magenta, green, blue.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from featherface.inference.images import ImageError
from featherface.inference.postprocess import Detections

__all__ = ["BOX_COLOR", "LANDMARK_COLORS", "auto_thickness", "draw_detections"]

log = logging.getLogger(__name__)

#: Box and score-label colour (BGR).
BOX_COLOR: tuple[int, int, int] = (0, 255, 0)
#: One BGR colour per landmark: left eye, right eye, nose, left mouth corner, right mouth corner.
LANDMARK_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),
    (0, 255, 255),
    (255, 0, 255),
    (0, 255, 0),
    (255, 0, 0),
)
_TEXT_COLOR: tuple[int, int, int] = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def auto_thickness(height: int, width: int) -> int:
    """Line thickness in pixels for an image of ``height x width`` pixels: 1 up to ~500 px on the short side,
    then one more pixel per 500 px (2 at 1080p, 4 at 4K)."""
    return max(1, int(round(min(height, width) / 500.0)))


def _as_numpy(dets: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = dets.boxes.detach().cpu().numpy().astype(np.float64, copy=False)
    scores = dets.scores.detach().cpu().numpy().astype(np.float64, copy=False)
    landmarks = dets.landmarks.detach().cpu().numpy().astype(np.float64, copy=False)
    n = boxes.shape[0] if boxes.ndim == 2 else -1
    if boxes.shape != (n, 4) or scores.shape != (n,) or landmarks.shape != (n, 5, 2):
        raise ValueError(
            "draw_detections: expected boxes (N, 4), scores (N,), landmarks (N, 5, 2), got "
            f"{boxes.shape}, {scores.shape}, {landmarks.shape}"
        )
    return boxes, scores, landmarks


def draw_detections(
    image_bgr: np.ndarray,
    dets: Detections,
    *,
    score_fmt: str | None = "{:.2f}",
    thickness: int | None = None,
) -> np.ndarray:
    """Draw detections on a copy of an image.

    Args:
        image_bgr: ``(H, W, 3)`` uint8 BGR image (left untouched).
        dets: detections in pixels of this image (boxes ``(N, 4)`` xyxy, scores ``(N,)``, landmarks ``(N, 5, 2)``;
            tensors on any device).
        score_fmt: format of the score label drawn above each box (``None``: no label).
        thickness: box line thickness in pixels (``None``: :func:`auto_thickness` of the image size).

    Returns:
        A new ``(H, W, 3)`` uint8 array with boxes, score labels and landmark dots. Detections with a non-finite
        coordinate are left out (logged at debug level).

    Raises:
        ImageError: the image is not an ``(H, W, 3)`` uint8 array.
        ValueError: inconsistent detection shapes, a bad ``score_fmt`` or ``thickness < 1``.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 \
            or image_bgr.shape[2] != 3 or image_bgr.shape[0] < 1 or image_bgr.shape[1] < 1:
        shape = getattr(image_bgr, "shape", None)
        dtype = getattr(image_bgr, "dtype", type(image_bgr).__name__)
        raise ImageError(f"draw_detections: expected an (H, W, 3) uint8 BGR image, got shape {shape} dtype {dtype}")
    height, width = image_bgr.shape[:2]
    if thickness is None:
        thickness = auto_thickness(height, width)
    elif isinstance(thickness, bool) or not isinstance(thickness, int) or thickness < 1:
        raise ValueError(f"draw_detections: thickness must be a positive integer or None, got {thickness!r}")
    if score_fmt is not None:
        try:
            score_fmt.format(0.5)
        except (ValueError, IndexError, KeyError) as err:
            raise ValueError(f"draw_detections: score_fmt {score_fmt!r} cannot format a float: {err}") from None
    boxes, scores, landmarks = _as_numpy(dets)

    canvas = image_bgr.copy()
    radius = thickness + 1
    font_scale = 0.35 * thickness + 0.05
    text_thickness = max(1, thickness // 2)
    for i in range(boxes.shape[0]):
        if not (np.isfinite(boxes[i]).all() and np.isfinite(landmarks[i]).all() and np.isfinite(scores[i])):
            log.debug("draw_detections: detection %d has non-finite values, not drawn", i)
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, thickness, cv2.LINE_8)
        for (x, y), color in zip(landmarks[i], LANDMARK_COLORS):
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, color, -1, cv2.LINE_AA)
        if score_fmt is not None:
            text = score_fmt.format(float(scores[i]))
            (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, text_thickness)
            # Label above the box, or just inside it when the box touches the top edge.
            top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
            cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + baseline + 2), BOX_COLOR, -1)
            cv2.putText(canvas, text, (x1 + 1, top + th + 1), _FONT, font_scale, _TEXT_COLOR, text_thickness,
                        cv2.LINE_AA)
    return canvas
