"""Tests of featherface.nn.blocks: conv blocks and the channel shuffle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featherface.nn.blocks import ChannelShuffle, ConvBNAct, DepthwiseSeparable, SeparableConvBN, channel_shuffle


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_conv_bn_act_matches_functional_reference() -> None:
    torch.manual_seed(0)
    block = ConvBNAct(3, 8, 3, 2, negative_slope=0.1).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 9, 7)
    bn = block.bn
    expected = F.leaky_relu(
        F.batch_norm(F.conv2d(x, block.conv.weight, None, 2, 1), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                     False, 0.0, bn.eps),
        0.1,
    )
    out = block(x)
    assert out.shape == (2, 8, 5, 4)  # ceil(9 / 2), ceil(7 / 2)
    torch.testing.assert_close(out, expected)
    assert block.conv.bias is None
    assert n_params(block) == 8 * 3 * 9 + 2 * 8


def test_depthwise_separable_params_and_shape() -> None:
    block = DepthwiseSeparable(32, 64, stride=2)
    assert n_params(block) == 9 * 32 + 32 * 64 + 2 * (32 + 64)
    assert block.dw.conv.groups == 32
    assert block(torch.randn(1, 32, 11, 10)).shape == (1, 64, 6, 5)


def test_separable_conv_bn_settings() -> None:
    block = SeparableConvBN(52)
    assert n_params(block) == 9 * 52 + 52 * 52 + 52 + 2 * 52
    assert block.dw.bias is None and block.pw.bias is not None
    assert block.bn.momentum == 0.01 and block.bn.eps == 1e-3
    assert block(torch.randn(1, 52, 5, 3)).shape == (1, 52, 5, 3)


def test_channel_shuffle_permutation_by_hand() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1).repeat(2, 1, 3, 2)
    out = channel_shuffle(x, 2)
    assert out[0, :, 0, 0].tolist() == [0, 2, 4, 1, 3, 5]
    assert out.shape == x.shape
    assert channel_shuffle(x, 3)[0, :, 0, 0].tolist() == [0, 3, 1, 4, 2, 5]
    torch.testing.assert_close(channel_shuffle(x, 1), x)
    torch.testing.assert_close(ChannelShuffle(2)(x), out)


def test_channel_shuffle_errors() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        channel_shuffle(torch.zeros(1, 5, 2, 2), 2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        channel_shuffle(torch.zeros(5, 2, 2), 2)
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)
