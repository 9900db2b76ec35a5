"""Tests of featherface.models.heads: output layout and order."""

from __future__ import annotations

import torch

from featherface.models.heads import DetectionHeads


def test_head_parameter_count() -> None:
    heads = DetectionHeads(52)
    assert sum(p.numel() for p in heads.parameters()) == 3 * 53 * 2 * (2 + 4 + 10)


def test_head_order_is_level_row_column_anchor() -> None:
    heads = DetectionHeads(1, num_levels=2, num_anchors=2)
    with torch.no_grad():
        for conv in [*heads.cls, *heads.box, *heads.landmark]:
            conv.weight.fill_(1.0)
            # bias = output-channel index: anchor a, component k -> a * K + k.
            conv.bias.copy_(torch.arange(conv.out_channels, dtype=torch.float32) * 1000)
    level0 = torch.arange(6.0).reshape(1, 1, 2, 3)  # value = row * W + column
    level1 = torch.full((1, 1, 1, 1), 100.0)
    loc, logits, landmarks = heads([level0, level1])
    assert loc.shape == (1, 14, 4) and logits.shape == (1, 14, 2) and landmarks.shape == (1, 14, 10)
    for p in range(12):
        position, anchor = divmod(p, 2)
        assert logits[0, p].tolist() == [position + 1000 * (anchor * 2 + k) for k in range(2)]
        assert loc[0, p].tolist() == [position + 1000 * (anchor * 4 + k) for k in range(4)]
        assert landmarks[0, p, 9].item() == position + 1000 * (anchor * 10 + 9)
    assert loc[0, 12, 0].item() == 100.0 and loc[0, 13, 0].item() == 100.0 + 4000
