"""ECA + spatial attention: the attention block of the FeatherFace fork's ``eca_cbam`` model.

Channel gate (ECA; Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020) followed by a spatial gate (the spatial half of CBAM; Woo et al., ECCV 2018),
applied one after the other, multiplicatively, with no residual::

    w_c = sigmoid(conv1d_k(GAP(x)))                        (B, C, 1, 1), one 1-D conv across channels
    x'  = x * w_c
    w_s = sigmoid(conv7x7([mean_c(x'), max_c(x')]))        (B, 1, H, W)
    out = x' * w_s

The 1-D kernel size adapts to the width: ``k = int(|log2(C) / gamma + beta / gamma|)``, made odd by
adding 1 when even (gamma = 2, beta = 1: k = 3 at C = 52 or 64, k = 5 at C = 128 or 256). Neither
convolution has a bias and there is no batch norm, so a block holds ``k + 2 * 7 * 7`` parameters.

The spatial gate's input is [channel mean, channel max], in that order (the fork's; CBAM's own code
and :class:`featherface.nn.cbam.SpatialAttention` use [max, mean]). The fork's trained weights depend
on it: with ``featherface_eca_cbam_fork.pth`` on the 233 offline WIDER val images (original size),
[mean, max] gives Easy / Medium / Hard AP 80.84 / 83.19 / 74.02, [max, mean] 44.50 / 43.05 / 46.70.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ECASAM", "EfficientChannelGate", "MeanMaxSpatialGate", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA's adaptive kernel size ``int(|log2(C) / gamma + beta / gamma|)``, rounded up to an odd number."""
    if channels < 1:
        raise ValueError(f"ECA needs at least one channel, got {channels}")
    k = int(abs(math.log2(channels) / gamma + beta / gamma))
    return k if k % 2 else k + 1


class EfficientChannelGate(nn.Module):
    """ECA channel gate: (B, C, H, W) -> (B, C, H, W), ``x * sigmoid(conv1d_k(mean_hw(x)))``.

    Args:
        channels: C.
        kernel_size: k of the 1-D convolution across channels (odd); default :func:`eca_kernel_size`.
        gamma, beta: the adaptive kernel size's constants (used when ``kernel_size`` is None).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2.0, beta: float = 1.0) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, beta) if kernel_size is None else int(kernel_size)
        if k < 1 or k % 2 != 1:
            raise ValueError(f"ECA kernel size must be a positive odd number, got {k}")
        self.channels = channels
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights, (B, C, H, W) -> (B, C, 1, 1) in (0, 1)."""
        pooled = x.mean(dim=(2, 3))[:, None, :]  # (B, 1, C): channels are the 1-D conv's length axis
        return torch.sigmoid(self.conv(pooled))[:, 0, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.conv.kernel_size[0]}"


class MeanMaxSpatialGate(nn.Module):
    """Spatial gate: (B, C, H, W) -> (B, C, H, W), ``x * sigmoid(conv([mean_c x, max_c x]))``, no BN.

    Args:
        kernel_size: k of the 2 -> 1 convolution (odd; 7 in the fork).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"spatial gate kernel size must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial weights, (B, C, H, W) -> (B, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # mean first
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ECASAM(nn.Module):
    """ECA channel gate, then the mean/max spatial gate, no residual.

    Args:
        channels: C.
        eca_kernel: k of the ECA convolution (default: adaptive, :func:`eca_kernel_size`).
        gamma, beta: the adaptive kernel size's constants.
        spatial_kernel: k of the spatial convolution.

    Shapes:
        (B, C, H, W) -> (B, C, H, W). Parameters: ``k + 2 * spatial_kernel ** 2``.
    """

    def __init__(
        self,
        channels: int,
        eca_kernel: int | None = None,
        gamma: float = 2.0,
        beta: float = 1.0,
        spatial_kernel: int = 7,
    ) -> None:
        super().__init__()
        self.channel_gate = EfficientChannelGate(channels, eca_kernel, gamma, beta)
        self.spatial_gate = MeanMaxSpatialGate(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
