"""MobileNetV1 x0.25 backbone (the RetinaFace / FeatherFace one), returning C3, C4, C5.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017, at width multiplier 0.25 with LeakyReLU(0.1) as in RetinaFace (Deng et al.,
CVPR 2020). No convolution has a bias. 213,072 parameters.

=========  ========================================================  ========  ======
stage      layers                                                    channels  stride
=========  ========================================================  ========  ======
stem       conv3x3 s2 3 -> 8 + BN + LeakyReLU                          8        2
stage1     dw-sep 8->16, 16->32 s2, 32->32, 32->64 s2, 64->64           64 (C3)  8
stage2     dw-sep 64->128 s2, 5 x 128->128                              128 (C4) 16
stage3     dw-sep 128->256 s2, 256->256                                 256 (C5) 32
=========  ========================================================  ========  ======

Every stride-2 3x3 conv has padding 1, so a level has ``ceil(H / stride)`` rows for any H.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from featherface.models.convert import load_imagenet_backbone
from featherface.nn.blocks import ConvBNAct, DepthwiseSeparable

__all__ = ["MobileNetV1Backbone", "BACKBONE_CHANNELS"]

#: Channels of (C3, C4, C5).
BACKBONE_CHANNELS: tuple[int, int, int] = (64, 128, 256)


class MobileNetV1Backbone(nn.Module):
    """MobileNetV1 x0.25 feature extractor.

    Args:
        negative_slope: LeakyReLU slope of every block (0.1).

    Shapes:
        (B, 3, H, W) -> (C3 (B, 64, ceil(H/8), ceil(W/8)), C4 (B, 128, ceil(H/16), ceil(W/16)),
        C5 (B, 256, ceil(H/32), ceil(W/32))).
    """

    out_channels: tuple[int, int, int] = BACKBONE_CHANNELS

    def __init__(self, negative_slope: float = 0.1) -> None:
        super().__init__()
        s = negative_slope
        self.stem = ConvBNAct(3, 8, 3, 2, negative_slope=s)
        self.stage1 = nn.Sequential(
            DepthwiseSeparable(8, 16, 1, s),
            DepthwiseSeparable(16, 32, 2, s),
            DepthwiseSeparable(32, 32, 1, s),
            DepthwiseSeparable(32, 64, 2, s),
            DepthwiseSeparable(64, 64, 1, s),
        )
        self.stage2 = nn.Sequential(
            DepthwiseSeparable(64, 128, 2, s), *[DepthwiseSeparable(128, 128, 1, s) for _ in range(5)]
        )
        self.stage3 = nn.Sequential(DepthwiseSeparable(128, 256, 2, s), DepthwiseSeparable(256, 256, 1, s))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(self.stem(x))
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5

    def load_imagenet(self, path: str | Path) -> None:
        """Load the ImageNet MobileNetV1-0.25 weights (``mobilenetV1X0.25_pretrain.tar``) from ``path``.

        See :func:`featherface.models.convert.load_imagenet_backbone`.
        """
        load_imagenet_backbone(self, path)
