"""Box and landmark coding against priors (the SSD / RetinaFace parameterisation).

Conventions:
- priors: ``(..., 4)`` as ``(cx, cy, w, h)`` normalised by the input size (see :mod:`featherface.ops.priors`).
- boxes: ``(..., 4)`` as ``(x1, y1, x2, y2)`` in the **same normalised units** as the priors (divide pixels by
  ``W, H, W, H`` before encoding, multiply after decoding).
- landmarks: ``(..., 10)`` as ``(x0, y0, x1, y1, ..., x4, y4)`` for the five points (left eye, right eye, nose,
  left mouth corner, right mouth corner), normalised likewise.
- offsets: what the heads regress, ``(..., 4)`` for boxes, ``(..., 10)`` for landmarks.

With variances ``(v0, v1)`` = (0.1, 0.2) (Liu et al., "SSD", ECCV 2016; Deng et al., "RetinaFace", CVPR 2020):

    t_cx = (g_cx - p_cx) / (v0 * p_w)        t_w = log(g_w / p_w) / v1
    t_lx = (g_lx - p_cx) / (v0 * p_w)        (each landmark point, likewise for y with p_cy, p_h)

Leading dimensions broadcast (e.g. offsets ``(B, P, 4)`` with priors ``(P, 4)``); device and dtype follow the
inputs. The floating-point operation order of decoding follows the reference implementation, so decoded
boxes match it bit for bit in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from featherface.inference.settings import VARIANCES

__all__ = ["VARIANCES", "encode_boxes", "decode_boxes", "encode_landmarks", "decode_landmarks"]


def _check_last(name: str, tensor: Tensor, size: int, func: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{func}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() == 0 or tensor.shape[-1] != size:
        raise ValueError(f"{func}: {name} must have shape (..., {size}), got {tuple(tensor.shape)}")


def _check_variances(variances: Sequence[float], func: str) -> tuple[float, float]:
    if len(variances) != 2 or any(v <= 0 for v in variances):
        raise ValueError(f"{func}: variances must be two positive numbers, got {tuple(variances)!r}")
    return float(variances[0]), float(variances[1])


def encode_boxes(boxes: Tensor, priors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Encode ``(..., 4)`` xyxy boxes against ``(..., 4)`` cxcywh priors (broadcast) into ``(..., 4)`` offsets.

    Boxes of zero width or height give ``-inf`` size offsets (as ``log(0)``); filter them out beforehand.
    """
    _check_last("boxes", boxes, 4, "encode_boxes")
    _check_last("priors", priors, 4, "encode_boxes")
    v0, v1 = _check_variances(variances, "encode_boxes")
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = boxes[..., 2:] - boxes[..., :2]
    t_centre = (centre - priors[..., :2]) / (v0 * priors[..., 2:])
    t_size = torch.log(size / priors[..., 2:]) / v1
    return torch.cat((t_centre, t_size), dim=-1)


def decode_boxes(offsets: Tensor, priors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Decode ``(..., 4)`` offsets against ``(..., 4)`` cxcywh priors (broadcast) into ``(..., 4)`` xyxy boxes,
    in the normalised units of the priors."""
    _check_last("offsets", offsets, 4, "decode_boxes")
    _check_last("priors", priors, 4, "decode_boxes")
    v0, v1 = _check_variances(variances, "decode_boxes")
    centre = priors[..., :2] + offsets[..., :2] * v0 * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(offsets[..., 2:] * v1)
    top_left = centre - size / 2
    return torch.cat((top_left, top_left + size), dim=-1)


def encode_landmarks(landmarks: Tensor, priors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Encode ``(..., 10)`` landmark points against ``(..., 4)`` cxcywh priors into ``(..., 10)`` offsets.

    Only ``variances[0]`` is used (points have a position, no size).
    """
    _check_last("landmarks", landmarks, 10, "encode_landmarks")
    _check_last("priors", priors, 4, "encode_landmarks")
    v0, _ = _check_variances(variances, "encode_landmarks")
    points = landmarks.unflatten(-1, (5, 2))  # (..., 5, 2)
    offsets = (points - priors[..., None, :2]) / (v0 * priors[..., None, 2:])
    return offsets.flatten(-2)


def decode_landmarks(offsets: Tensor, priors: Tensor, variances: Sequence[float] = VARIANCES) -> Tensor:
    """Decode ``(..., 10)`` offsets against ``(..., 4)`` cxcywh priors into ``(..., 10)`` points
    ``(x0, y0, ..., x4, y4)`` in the normalised units of the priors."""
    _check_last("offsets", offsets, 10, "decode_landmarks")
    _check_last("priors", priors, 4, "decode_landmarks")
    v0, _ = _check_variances(variances, "decode_landmarks")
    points = priors[..., None, :2] + offsets.unflatten(-1, (5, 2)) * v0 * priors[..., None, 2:]
    return points.flatten(-2)
