"""CBAM: Convolutional Block Attention Module.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018. Channel attention
then spatial attention, applied multiplicatively, no residual (FeatherFace's attention block)::

    m_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))        (B, C, 1, 1)
    x'  = x * m_c
    m_s = sigmoid(BN(conv7x7([max_c(x'), mean_c(x')])))    (B, 1, H, W)
    out = x' * m_s

MLP: Linear(C, C // r) with bias -> ReLU -> Linear(C // r, C) with bias; the spatial conv has no
bias and its BN uses momentum 0.01, eps 1e-5 (the CBAM authors' code). Parameters:
``2 C (C // r) + C // r + C`` + ``2 k^2`` + 2.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]


class ChannelAttention(nn.Module):
    """CBAM channel gate: (B, C, H, W) -> (B, C, H, W), ``x * sigmoid(MLP(avg) + MLP(max))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"CBAM reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3)))
        mx = self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial gate: (B, C, H, W) -> (B, C, H, W), ``x * sigmoid(BN(conv([max_c x, mean_c x])))``."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"CBAM spatial kernel size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel then spatial attention, no residual.

    Args:
        channels: C.
        reduction: MLP reduction r (hidden width max(1, C // r)).
        spatial_kernel: k of the spatial convolution.

    Shapes:
        (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
