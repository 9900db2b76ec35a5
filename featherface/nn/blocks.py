"""Small convolution blocks shared by the FeatherFace trunk.

* :class:`ConvBNAct` - k x k convolution without bias, BatchNorm, LeakyReLU (MobileNetV1 stem).
* :class:`DepthwiseSeparable` - MobileNetV1 block: depthwise 3x3 + BN + LeakyReLU, then pointwise
  1x1 + BN + LeakyReLU (Howard et al., "MobileNets", 2017).
* :class:`SeparableConvBN` - the EfficientDet BiFPN block: depthwise 3x3 (no bias), pointwise 1x1
  (with bias), BatchNorm (momentum 0.01, eps 1e-3), no activation (Tan et al., "EfficientDet", 2020).
* :func:`channel_shuffle` / :class:`ChannelShuffle` - the parameter-free ShuffleNet permutation
  (Zhang et al., "ShuffleNet", 2018).

All tensors are NCHW.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBNAct", "DepthwiseSeparable", "SeparableConvBN", "ChannelShuffle", "channel_shuffle"]


class ConvBNAct(nn.Module):
    """Convolution (no bias) -> BatchNorm2d -> LeakyReLU.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: square kernel size k; padding is k // 2 ("same" for stride 1,
            ceil(H / stride) outputs for k = 3 and stride 2).
        stride: convolution stride.
        groups: convolution groups (``in_channels`` for a depthwise convolution).
        negative_slope: LeakyReLU slope (0 gives a ReLU).

    Shapes:
        (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)) for odd k.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise 3x3 ConvBNAct (with ``stride``) then pointwise 1x1 ConvBNAct.

    Shapes:
        (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    Parameters:
        9 C_in + C_in C_out convolution weights, 2 (C_in + C_out) BatchNorm affine parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, negative_slope=negative_slope)
        self.pw = ConvBNAct(in_channels, out_channels, 1, 1, negative_slope=negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SeparableConvBN(nn.Module):
    """BiFPN separable convolution: depthwise 3x3 (no bias, zero padding 1) -> pointwise 1x1 (bias) -> BN.

    BatchNorm uses the TensorFlow EfficientDet settings (PyTorch momentum 0.01, eps 1e-3). No activation.

    Shapes:
        (B, C, H, W) -> (B, C, H, W).
    Parameters:
        9 C + C^2 + C + 2 C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.pw = nn.Conv2d(channels, channels, 1, bias=True)
        self.bn = nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(self.dw(x)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle, in the FeatherFace / "alternative" ShuffleNet convention.

    The channels are viewed as a (C / groups, groups) matrix and transposed, so output channel
    ``g * (C / groups) + j`` is input channel ``j * groups + g``: the output gathers the channels
    with stride ``groups``. With 2 groups and C = 6: [0, 1, 2, 3, 4, 5] -> [0, 2, 4, 1, 3, 5].
    This is the permutation FeatherFace's SSH applies (and its trained weights expect); it is the
    inverse of the original ShuffleNet permutation (Zhang et al., 2018), i.e. ShuffleNet's shuffle
    with C / groups groups. Both interleave the channels of the concatenated SSH branches.

    Args:
        x: (B, C, H, W), C divisible by ``groups``.
        groups: number of groups (>= 1).

    Returns:
        (B, C, H, W), a permutation of the channels of ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f"channel_shuffle expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if groups < 1 or c % groups != 0:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible into {groups} groups")
    return x.reshape(b, c // groups, groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ChannelShuffle(nn.Module):
    """Module wrapper of :func:`channel_shuffle` (no parameters)."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"ChannelShuffle: groups must be >= 1, got {groups}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
