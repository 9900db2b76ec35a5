"""Tests of featherface.nn.eca_sam: kernel sizes, parameter counts, a hand-written reference, the [mean, max] order."""

from __future__ import annotations

import math

import pytest
import torch

from featherface.nn.eca_sam import ECASAM, EfficientChannelGate, MeanMaxSpatialGate, eca_kernel_size


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels, k", [(1, 1), (8, 3), (52, 3), (64, 3), (128, 5), (256, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size(channels: int, k: int) -> None:
    assert eca_kernel_size(channels) == k


@pytest.mark.parametrize("channels, expected", [(64, 101), (128, 103), (256, 103), (52, 101)])
def test_parameter_count(channels: int, expected: int) -> None:
    # k (ECA, no bias) + 2 * 7 * 7 (spatial conv, no bias, no BN); the fork's checkpoint has these shapes.
    assert n_params(ECASAM(channels)) == expected


def test_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd"):
        EfficientChannelGate(16, kernel_size=4)
    with pytest.raises(ValueError, match="odd"):
        MeanMaxSpatialGate(6)


def _reference(x: torch.Tensor, eca_w: list[float], sam_w: torch.Tensor) -> torch.Tensor:
    """ECA then the spatial gate, written out with loops over plain numbers (zero padding)."""
    b_n, c_n, h_n, w_n = x.shape
    k, ks = len(eca_w), sam_w.shape[-1]
    out = torch.empty_like(x)
    for b in range(b_n):
        means = [float(x[b, c].sum()) / (h_n * w_n) for c in range(c_n)]
        gate_c = []
        for c in range(c_n):
            s = sum(eca_w[j] * means[c + j - k // 2] for j in range(k) if 0 <= c + j - k // 2 < c_n)
            gate_c.append(1.0 / (1.0 + math.exp(-s)))
        y = [[[float(x[b, c, i, j]) * gate_c[c] for j in range(w_n)] for i in range(h_n)] for c in range(c_n)]
        mean_map = [[sum(y[c][i][j] for c in range(c_n)) / c_n for j in range(w_n)] for i in range(h_n)]
        max_map = [[max(y[c][i][j] for c in range(c_n)) for j in range(w_n)] for i in range(h_n)]
        for i in range(h_n):
            for j in range(w_n):
                s = 0.0
                for di in range(ks):
                    for dj in range(ks):
                        ii, jj = i + di - ks // 2, j + dj - ks // 2
                        if 0 <= ii < h_n and 0 <= jj < w_n:
                            s += float(sam_w[0, 0, di, dj]) * mean_map[ii][jj]
                            s += float(sam_w[0, 1, di, dj]) * max_map[ii][jj]
                gate_s = 1.0 / (1.0 + math.exp(-s))
                for c in range(c_n):
                    out[b, c, i, j] = y[c][i][j] * gate_s
    return out


def test_matches_hand_written_reference() -> None:
    torch.manual_seed(0)
    block = ECASAM(6, eca_kernel=3, spatial_kernel=3).eval()
    with torch.no_grad():
        block.channel_gate.conv.weight.copy_(torch.tensor([[[0.7, -1.3, 0.4]]]))
        block.spatial_gate.conv.weight.normal_(0.0, 0.8)
    x = torch.randn(2, 6, 4, 5) * 2 + 0.5
    expected = _reference(x, [0.7, -1.3, 0.4], block.spatial_gate.conv.weight.detach())
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_spatial_gate_input_is_mean_then_max() -> None:
    """A kernel that reads only input channel 0 must see the channel mean (the fork's order), not the max."""
    gate = MeanMaxSpatialGate(kernel_size=1)
    with torch.no_grad():
        gate.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    x = torch.randn(1, 5, 3, 4)
    mean, mx = x.mean(1, keepdim=True), x.amax(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(gate.gate(x), torch.sigmoid(mean))
        assert not torch.allclose(gate.gate(x), torch.sigmoid(mx))
        gate.conv.weight.copy_(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1))
        torch.testing.assert_close(gate.gate(x), torch.sigmoid(mx))


def test_gates_are_sequential_without_residual() -> None:
    # All-zero weights: sigmoid(0) = 0.5 from each gate, so exactly x / 4 (a residual would give 1.25 x).
    block = ECASAM(16)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    x = torch.randn(2, 16, 5, 3)
    torch.testing.assert_close(block(x), 0.25 * x)
    # The spatial gate reads the ECA output, not the block input.
    torch.manual_seed(1)
    block = ECASAM(16, spatial_kernel=3)
    with torch.no_grad():
        channel_out = block.channel_gate(x)
        torch.testing.assert_close(block(x), channel_out * block.spatial_gate.gate(channel_out))
        assert not torch.allclose(block(x), channel_out * block.spatial_gate.gate(x))
