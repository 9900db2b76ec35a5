"""SSH context module with modulated deformable 3x3 convolutions, followed by a channel shuffle.

* SSH: Najibi et al., "SSH: Single Stage Headless Face Detector", ICCV 2017 (the RetinaFace variant:
  a 3x3 branch with C/2 channels, and 5x5 / 7x7 receptive fields built from stacked 3x3 convs with
  C/4 channels, the 7x7 branch reusing the first 3x3 of the 5x5 branch).
* Modulated deformable convolution: Zhu et al., "Deformable ConvNets v2", CVPR 2019. An offset
  convolution (3x3 -> 2 k^2 channels) and a modulator convolution (3x3 -> k^2 channels), both with
  bias and zero-initialised (so the module starts as a plain convolution with mask 1), mask =
  2 sigmoid(modulator); the main weight has no bias. Computed by
  :func:`featherface.nn.deform.deform_conv2d_by_sampling` (10x faster on the CPU) in eager mode and by
  :func:`torchvision.ops.deform_conv2d` while tracing or exporting (it maps to the ONNX ``DeformConv`` node).
* FeatherFace (Kim et al., Electronics 14(3):517, 2025) uses deformable convs in every SSH 3x3 and a
  parameter-free channel shuffle with 2 groups after the concatenation.
* ``conv="odconv"`` replaces every deformable 3x3 by an ODConv 3x3 (:class:`ODConvBN`; Li et al., ICLR 2022):
  the per-pixel sampling offsets give way to per-image kernel, spatial, channel and filter attentions, and the
  offset / modulator convolutions (about 23% of FeatherFace's parameters) free room for candidate kernels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from featherface.nn.blocks import channel_shuffle
from featherface.nn.deform import deform_conv2d_by_sampling
from featherface.nn.odconv import ODConv2d

__all__ = ["CONV_KINDS", "IMPLEMENTATIONS", "ModulatedDeformConv2d", "DeformConvBN", "ODConvBN", "PlainConvBN", "SSH"]

#: How :class:`ModulatedDeformConv2d` computes the deformable convolution.
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "sampling", "torchvision")
#: The 3x3 convolution of the SSH branches: DCNv2 (FeatherFace), ODConv, or a plain conv (the control arm).
CONV_KINDS: tuple[str, ...] = ("deformable", "odconv", "plain")


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 convolution with its own offset and modulator convolutions.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: k (square).
        stride: stride of the offset, modulator and main convolutions.
        padding: zero padding (default k // 2).
        impl: ``auto`` (``sampling`` in eager mode, ``torchvision`` while tracing / exporting),
            ``sampling`` or ``torchvision``; all give the same result up to float rounding.

    Attributes:
        weight: (C_out, C_in, k, k) main kernel, no bias.
        offset_conv: Conv2d C_in -> 2 k^2 (bias), zero-initialised; channel 2 i (2 i + 1) is the
            row (column) offset of kernel tap i, in input pixels (torchvision's layout).
        mask_conv: Conv2d C_in -> k^2 (bias), zero-initialised; mask = 2 sigmoid(mask_conv(x)).

    Shapes:
        (B, C_in, H, W) -> (B, C_out, H_out, W_out), H_out = floor((H + 2 p - k) / s) + 1.

    MACs (see :mod:`featherface.models.summary`): the offset / mask convolutions are counted as
    convolutions; this module's own work is :meth:`extra_macs`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"ModulatedDeformConv2d: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
        self.impl = impl
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        taps = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, stride, self.padding, bias=True)
        self.mask_conv = nn.Conv2d(in_channels, taps, kernel_size, stride, self.padding, bias=True)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offset / modulator convolutions; main weight as ``nn.Conv2d`` (kaiming uniform, a = sqrt 5)."""
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        nn.init.zeros_(self.mask_conv.weight)
        nn.init.zeros_(self.mask_conv.bias)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.mask_conv(x))
        if self._use_sampling():
            return deform_conv2d_by_sampling(x, offset, self.weight, mask, self.stride, self.padding)
        return deform_conv2d(
            x, offset, self.weight, None, stride=self.stride, padding=self.padding, mask=mask
        )

    def _use_sampling(self) -> bool:
        if self.impl != "auto":
            return self.impl == "sampling"
        exporting = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
        return not (exporting or torch.compiler.is_exporting())

    def extra_macs(self, input_shape: torch.Size | tuple[int, ...]) -> int:
        """Multiply-accumulates of the deformable sampling and the main convolution, per batch.

        Convention: every sampled value costs 4 MACs (bilinear interpolation of 4 neighbours) plus 1
        (the modulation mask); the main convolution costs C_out C_in k^2 per output position. The
        offset and modulator convolutions are not included (they are ordinary ``nn.Conv2d`` and are
        counted by the convolution hook).
        """
        b, _, h, w = (int(v) for v in input_shape)
        k, s, p = self.kernel_size, self.stride, self.padding
        positions = ((h + 2 * p - k) // s + 1) * ((w + 2 * p - k) // s + 1)
        samples = self.in_channels * k * k * positions
        return b * (samples * 5 + self.out_channels * samples)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class DeformConvBN(nn.Module):
    """ModulatedDeformConv2d 3x3 -> BatchNorm2d -> optional LeakyReLU.

    Args:
        in_channels, out_channels: channel counts.
        negative_slope: LeakyReLU slope, or ``None`` for no activation.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float | None) -> None:
        super().__init__()
        self.conv = ModulatedDeformConv2d(in_channels, out_channels, 3)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = nn.Identity() if negative_slope is None else nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ODConvBN(nn.Module):
    """ODConv 3x3 (:class:`~featherface.nn.odconv.ODConv2d`, padding 1, ``unit_neutral_gain`` on unless told
    otherwise: kernels on the scale of a plain conv's) -> BatchNorm2d -> optional LeakyReLU.

    Args:
        in_channels, out_channels: channel counts.
        negative_slope: LeakyReLU slope, or ``None`` for no activation.
        **odconv_kwargs: ``kernel_num``, ``reduction``, ``min_channel``, ... of :class:`ODConv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float | None, **odconv_kwargs: Any) -> None:
        super().__init__()
        odconv_kwargs.setdefault("unit_neutral_gain", True)
        self.conv = ODConv2d(in_channels, out_channels, 3, padding=1, **odconv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = nn.Identity() if negative_slope is None else nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class PlainConvBN(nn.Module):
    """Conv2d 3x3 (padding 1, no bias) -> BatchNorm2d -> optional LeakyReLU: the SSH conv without adaptivity."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = nn.Identity() if negative_slope is None else nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _conv_bn(kind: str, in_channels: int, out_channels: int, negative_slope: float | None,
             conv_kwargs: dict[str, Any]) -> nn.Module:
    if kind == "odconv":
        return ODConvBN(in_channels, out_channels, negative_slope, **conv_kwargs)
    if conv_kwargs:
        raise ValueError(f"SSH: conv={kind!r} takes no conv options, got {sorted(conv_kwargs)}")
    if kind == "deformable":
        return DeformConvBN(in_channels, out_channels, negative_slope)
    return PlainConvBN(in_channels, out_channels, negative_slope)


class SSH(nn.Module):
    """Deformable SSH context module + channel shuffle, C -> C.

    Branches (every conv a :class:`DeformConvBN`, or an :class:`ODConvBN` with ``conv="odconv"``)::

        a = conv3x3(x)                         C   -> C/2, no activation
        r = conv5x5_reduce(x)                  C   -> C/4, LeakyReLU
        b = conv5x5(r)                         C/4 -> C/4, no activation
        c = conv7x7(conv7x7_reduce(r))         C/4 -> C/4 (LeakyReLU) -> C/4, no activation
        out = channel_shuffle(relu(cat[a, b, c]), shuffle_groups)

    Args:
        channels: C, divisible by 4.
        negative_slope: LeakyReLU slope of the reduce convs (0.1 in RetinaFace / FeatherFace for
            C <= 64).
        shuffle_groups: channel-shuffle groups (1 disables the shuffle).
        conv: ``"deformable"``, ``"odconv"`` or ``"plain"`` (:data:`CONV_KINDS`).
        conv_kwargs: options of the ODConv (``kernel_num``, ``reduction``, ``min_channel``).

    Shapes:
        (B, C, H, W) -> (B, C, H, W).
    Parameters at C = 52: 57,855.
    """

    def __init__(self, channels: int, negative_slope: float = 0.1, shuffle_groups: int = 2,
                 conv: str = "deformable", conv_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if conv not in CONV_KINDS:
            raise ValueError(f"SSH: conv must be one of {CONV_KINDS}, got {conv!r}")
        if channels % 4 != 0:
            raise ValueError(f"SSH needs a channel count divisible by 4, got {channels}")
        if channels % shuffle_groups != 0:
            raise ValueError(f"SSH: {channels} channels are not divisible into {shuffle_groups} shuffle groups")
        half, quarter = channels // 2, channels // 4
        self.channels = channels
        self.shuffle_groups = shuffle_groups
        kw = dict(conv_kwargs or {})
        self.conv3x3 = _conv_bn(conv, channels, half, None, kw)
        self.conv5x5_reduce = _conv_bn(conv, channels, quarter, negative_slope, kw)
        self.conv5x5 = _conv_bn(conv, quarter, quarter, None, kw)
        self.conv7x7_reduce = _conv_bn(conv, quarter, quarter, negative_slope, kw)
        self.conv7x7 = _conv_bn(conv, quarter, quarter, None, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv3x3(x)
        r = self.conv5x5_reduce(x)
        b = self.conv5x5(r)
        c = self.conv7x7(self.conv7x7_reduce(r))
        out = torch.relu(torch.cat([a, b, c], dim=1))
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        return out
