"""BiFPN neck cut to three levels (P3, P4, P5), as used by FeatherFace.

Tan, Pang, Le, "EfficientDet: Scalable and Efficient Object Detection", CVPR 2020: a bidirectional
cell with fast normalised fusion, ``out = sum_i relu(w_i) x_i / (sum_j relu(w_j) + 1e-4)``.

One cell (``C`` channels everywhere)::

    P4td  = Sep(swish(w0 P4  + w1 up(P5)))                  fusion weights (2,)
    P3out = Sep(swish(w0 P3  + w1 up(P4td)))                fusion weights (2,)
    P4out = Sep(swish(w0 P4' + w1 P4td + w2 down(P3out)))   fusion weights (3,)
    P5out = Sep(swish(w0 P5' + w1 down(P4out)))             fusion weights (3,), see below

``Sep`` is :class:`~featherface.nn.blocks.SeparableConvBN`; ``up`` is nearest-neighbour resizing to
the exact size of the finer map (``F.interpolate(size=...)``, so odd sizes such as 21 <- 11 work);
``down`` is a 3x3 / stride 2 max pool with TensorFlow "same" padding, where the padding is filled
with **zeros** (not -inf), which is what the reference implementation does (zylo117's
``MaxPool2dStaticSamePadding``) and what the FeatherFace checkpoints were trained with. Its output
size is ``ceil(H / 2)``, which matches the backbone's stride-2 3x3 convolutions.

The first cell takes the backbone maps (C3, C4, C5 with their own channel counts) and projects each
to ``C`` with a 1x1 convolution (bias) + BN (momentum 0.01, eps 1e-3). For the bottom-up pass it
uses *separate* projections of C4 and C5 (P4', P5'). Later cells take (P3, P4, P5) at ``C``
channels and use P4' = P4, P5' = P5.

The P5 output fusion holds three weights although only two inputs are fused: it is the P5 node of
the five-level EfficientDet cell (which also receives an upsampled P6) cut to three levels. The
third weight takes part in the normaliser only. It is kept because the FeatherFace checkpoints
carry it and their outputs depend on it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from featherface.nn.blocks import SeparableConvBN

__all__ = ["BiFPN", "BiFPNCell", "Projection", "fast_normalized_fusion", "tf_same_max_pool2d", "resize_nearest"]


def fast_normalized_fusion(weights: torch.Tensor, inputs: Sequence[torch.Tensor], eps: float = 1e-4) -> torch.Tensor:
    """Fast normalised fusion: ``sum_i relu(w_i) x_i / (sum_j relu(w_j) + eps)``.

    Args:
        weights: (K,) raw fusion weights, K >= len(inputs); entries beyond ``len(inputs)`` only
            enter the normaliser.
        inputs: tensors of one shape (B, C, H, W).
        eps: added to the normaliser.

    Returns:
        (B, C, H, W).
    """
    if weights.dim() != 1 or weights.shape[0] < len(inputs):
        raise ValueError(f"fusion weights of shape {tuple(weights.shape)} cannot fuse {len(inputs)} inputs")
    w = torch.relu(weights)
    w = w / (w.sum(dim=0) + eps)
    out = w[0] * inputs[0]
    for i in range(1, len(inputs)):
        out = out + w[i] * inputs[i]
    return out


def tf_same_max_pool2d(x: torch.Tensor) -> torch.Tensor:
    """3x3 / stride 2 max pool with TensorFlow "same" padding, padded with zeros.

    TensorFlow pads ``(ceil(n / 2) - 1) * 2 + 3 - n`` per axis, the smaller half on the top / left:
    (0, 1) for an even n, (1, 1) for an odd n, i.e. ``(n % 2, 1)``, so the output has ``ceil(n / 2)``
    rows / columns. The parity is computed from the shape, so the padding follows the input size also
    in a traced / ONNX graph with dynamic H, W (one ``Pad`` whose amounts are computed, not a constant).

    Args:
        x: (B, C, H, W).

    Returns:
        (B, C, ceil(H / 2), ceil(W / 2)).
    """
    h, w = x.shape[-2], x.shape[-1]
    return F.max_pool2d(F.pad(x, [w % 2, 1, h % 2, 1]), 3, 2)


def resize_nearest(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour resize of ``x`` (B, C, h, w) to the spatial size of ``like`` (B, C', H, W)."""
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class Projection(nn.Sequential):
    """1x1 convolution with bias + BatchNorm (momentum 0.01, eps 1e-3): (B, C_in, H, W) -> (B, C, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, momentum=0.01, eps=1e-3)


class BiFPNCell(nn.Module):
    """One three-level BiFPN cell (see the module docstring).

    Args:
        channels: C, the channels of every output.
        in_channels: for the first cell, the channels of (C3, C4, C5); ``None`` for a later cell
            whose inputs already have ``channels`` channels.
        eps: fusion normaliser epsilon.

    Shapes:
        (P3 (B, c3, H3, W3), P4 (B, c4, H4, W4), P5 (B, c5, H5, W5)) -> three maps with C channels
        and the same spatial sizes, where H4 = ceil(H3 / 2) and H5 = ceil(H4 / 2) (same for W).
    """

    def __init__(self, channels: int, in_channels: Sequence[int] | None = None, eps: float = 1e-4) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.first = in_channels is not None
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.proj_p3 = Projection(c3, channels)
            self.proj_p4 = Projection(c4, channels)
            self.proj_p5 = Projection(c5, channels)
            self.proj_p4_bottom_up = Projection(c4, channels)
            self.proj_p5_bottom_up = Projection(c5, channels)
        self.weight_p4_td = nn.Parameter(torch.ones(2))
        self.weight_p3_out = nn.Parameter(torch.ones(2))
        self.weight_p4_out = nn.Parameter(torch.ones(3))
        self.weight_p5_out = nn.Parameter(torch.ones(3))
        self.sep_p4_td = SeparableConvBN(channels)
        self.sep_p3_out = SeparableConvBN(channels)
        self.sep_p4_out = SeparableConvBN(channels)
        self.sep_p5_out = SeparableConvBN(channels)

    def forward(
        self, features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = features
        if self.first:
            p3, p4, p5 = self.proj_p3(c3), self.proj_p4(c4), self.proj_p5(c5)
        else:
            p3, p4, p5 = c3, c4, c5
        p4_td = self.sep_p4_td(
            F.silu(fast_normalized_fusion(self.weight_p4_td, [p4, resize_nearest(p5, p4)], self.eps))
        )
        p3_out = self.sep_p3_out(
            F.silu(fast_normalized_fusion(self.weight_p3_out, [p3, resize_nearest(p4_td, p3)], self.eps))
        )
        if self.first:
            p4, p5 = self.proj_p4_bottom_up(c4), self.proj_p5_bottom_up(c5)
        p4_out = self.sep_p4_out(
            F.silu(fast_normalized_fusion(self.weight_p4_out, [p4, p4_td, tf_same_max_pool2d(p3_out)], self.eps))
        )
        p5_out = self.sep_p5_out(
            F.silu(fast_normalized_fusion(self.weight_p5_out, [p5, tf_same_max_pool2d(p4_out)], self.eps))
        )
        return p3_out, p4_out, p5_out


class BiFPN(nn.Module):
    """``repeats`` BiFPN cells; the first projects the backbone maps to ``channels``.

    Args:
        in_channels: channels of (C3, C4, C5), e.g. (64, 128, 256) for MobileNetV1-0.25.
        channels: C.
        repeats: number of cells R (>= 1).

    Shapes:
        (C3, C4, C5) -> (P3, P4, P5), each with C channels and the spatial size of its input.

    Parameters at C = 52, R = 3: 84,010.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, repeats: int) -> None:
        super().__init__()
        if repeats < 1:
            raise ValueError(f"BiFPN needs at least one cell, got repeats={repeats}")
        if len(in_channels) != 3:
            raise ValueError(f"BiFPN takes three input levels, got in_channels={tuple(in_channels)}")
        self.cells = nn.ModuleList(
            [BiFPNCell(channels, tuple(in_channels) if i == 0 else None) for i in range(repeats)]
        )

    def forward(
        self, features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for cell in self.cells:
            features = cell(features)
        return features
