"""RetinaFace-style detection heads: one 1x1 convolution (with bias) per level and per task.

For ``A`` anchors per location a level of size (H, W) gives ``H * W * A`` priors ordered row-major
over (row, column, anchor), which is the order of :mod:`featherface.ops.priors`. The levels are
concatenated P3, P4, P5.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["DetectionHeads"]


def _flatten(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, A * k, H, W) -> (B, H * W * A, k)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)


class DetectionHeads(nn.Module):
    """Class, box and landmark heads over ``num_levels`` feature maps.

    Args:
        channels: input channels C of every level.
        num_levels: number of levels (3).
        num_anchors: anchors per location A (2).

    Shapes:
        list of (B, C, H_l, W_l) -> (loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10)),
        P = A * sum_l H_l W_l.
    Parameters:
        num_levels * (C + 1) * A * (2 + 4 + 10).
    """

    def __init__(self, channels: int, num_levels: int = 3, num_anchors: int = 2) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        a = num_anchors
        self.cls = nn.ModuleList([nn.Conv2d(channels, a * 2, 1) for _ in range(num_levels)])
        self.box = nn.ModuleList([nn.Conv2d(channels, a * 4, 1) for _ in range(num_levels)])
        self.landmark = nn.ModuleList([nn.Conv2d(channels, a * 10, 1) for _ in range(num_levels)])

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(features) != len(self.cls):
            raise ValueError(f"DetectionHeads built for {len(self.cls)} levels got {len(features)} feature maps")
        loc = torch.cat([_flatten(head(f), 4) for head, f in zip(self.box, features)], dim=1)
        logits = torch.cat([_flatten(head(f), 2) for head, f in zip(self.cls, features)], dim=1)
        landmarks = torch.cat([_flatten(head(f), 10) for head, f in zip(self.landmark, features)], dim=1)
        return loc, logits, landmarks
