"""The ODConv block placed at FeatherFace's attention sites.

Sites (DESIGN.md section 1): after the backbone's C3 / C4 / C5 (64 / 128 / 256 channels, before the
BiFPN) and after each BiFPN output P3 / P4 / P5 (C = 52 channels, before the SSH). The block is a
zero-initialised residual around a depthwise 3x3 ODConv (Li, Zhou, Yao, "Omni-Dimensional Dynamic
Convolution", ICLR 2022)::

    y = x + scale[c] * ODConv_dw3x3(x)        scale (C,), zeros at init -> identity at init

so it can be inserted into a trained trunk without changing its outputs, and learns how much of the
dynamic branch to mix in (the LayerScale / ReZero recipe). Depthwise keeps the width (C -> C) and costs
9 n C for the kernels; the filter head is skipped for depthwise convs (it would duplicate the channel
head), so the branch is channel attention on the input, spatial attention over the 3x3 taps and, for
n > 1, kernel attention.

Parameter budget (see docs/odconv_design.md): the trunk without attention (C = 52, 3 BiFPN cells) has
475,735 parameters and ``featherface_odconv`` must stay under 490,000, so the six sites together get
fewer than 14,265. The recommended setting (kernel_num 1, attention width 4 at every site) costs 11,794
for all six sites.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from featherface.nn.odconv import ODConv2d

__all__ = [
    "ATTENTION_SITES",
    "BACKBONE_SITE_CHANNELS",
    "ODConvAttention",
    "RECOMMENDED_KWARGS",
    "RECOMMENDED_SITES",
    "attention_parameter_count",
    "parameter_breakdown",
    "site_channels",
]

ATTENTION_SITES: tuple[str, ...] = ("c3", "c4", "c5", "p3", "p4", "p5")
"""Every attention site of FeatherFace, in forward order."""

BACKBONE_SITE_CHANNELS: Mapping[str, int] = {"c3": 64, "c4": 128, "c5": 256}
"""Channels of the MobileNetV1-0.25 outputs; the BiFPN sites have the BiFPN width."""

RECOMMENDED_SITES: tuple[str, ...] = ATTENTION_SITES
"""All six sites fit the budget with :data:`RECOMMENDED_KWARGS`."""

RECOMMENDED_KWARGS: dict[str, object] = {
    "kernel_size": 3,
    "kernel_num": 1,
    "reduction": 1 / 64,
    "min_channel": 4,
}
"""Depthwise 3x3, one kernel ("ODConv 1x"), attention width max(int(C / 64), 4) = 4 at all sites."""


def site_channels(bifpn_channels: int = 52) -> dict[str, int]:
    """Channels at each attention site: {c3: 64, c4: 128, c5: 256, p3/p4/p5: bifpn_channels}."""
    return {**BACKBONE_SITE_CHANNELS, "p3": bifpn_channels, "p4": bifpn_channels, "p5": bifpn_channels}


class ODConvAttention(nn.Module):
    """Residual depthwise-ODConv block, (B, C, H, W) -> (B, C, H, W): ``x + scale * ODConv(x)``.

    Args:
        channels: C.
        kernel_size: odd k of the depthwise ODConv (padding (k - 1) / 2 keeps H, W).
        kernel_num: n candidate kernels of the ODConv.
        reduction, min_channel: ODConv attention width max(int(C * reduction), min_channel).
        temperature: initial ODConv temperature (see :func:`featherface.nn.odconv.set_temperature`).
        conv_impl, batch1_train: passed to :class:`~featherface.nn.odconv.ODConv2d`.

    The defaults are :data:`RECOMMENDED_KWARGS`. ``scale`` (C,) starts at zero, so the block is the
    identity at initialisation; the ODConv weights receive gradients once ``scale`` moves.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        kernel_num: int = 1,
        reduction: float = 1 / 64,
        min_channel: int = 4,
        temperature: float = 1.0,
        conv_impl: str = "auto",
        batch1_train: str = "running_stats",
    ) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"ODConvAttention: channels must be a positive int, got {channels!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ODConvAttention: kernel_size must be a positive odd int, got {kernel_size!r}")
        self.channels = channels
        self.conv = ODConv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels,
                             reduction=reduction, kernel_num=kernel_num, min_channel=min_channel,
                             temperature=temperature, conv_impl=conv_impl,  # type: ignore[arg-type]
                             batch1_train=batch1_train)  # type: ignore[arg-type]
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x + self.scale.view(1, -1, 1, 1) * self.conv(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def attention_parameter_count(channels: int, **kwargs: object) -> int:
    """Number of parameters of ``ODConvAttention(channels, **kwargs)``, counted on a built module."""
    return sum(parameter_breakdown(channels, **kwargs).values())


def parameter_breakdown(channels: int, **kwargs: object) -> dict[str, int]:
    """Parameters of ``ODConvAttention(channels, **kwargs)`` per named tensor (``conv.weight``, ...).

    The module is built on the ``meta`` device (no memory, no draw from the random generator).
    """
    with torch.device("meta"):
        block = ODConvAttention(channels, **kwargs)  # type: ignore[arg-type]
    return {name: p.numel() for name, p in block.named_parameters()}
