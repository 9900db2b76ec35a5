"""Tests of featherface.nn.ssh: the modulated deformable conv and the SSH context module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from featherface.nn.blocks import channel_shuffle
from featherface.nn.ssh import SSH, ModulatedDeformConv2d


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_deform_conv_at_init_is_a_plain_conv() -> None:
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(5, 7)
    x = torch.randn(2, 5, 9, 6)
    # Zero offsets and mask 2 * sigmoid(0) = 1.
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, padding=1), rtol=1e-5, atol=1e-5)
    assert n_params(conv) == 7 * 5 * 9 + (18 * 5 * 9 + 18) + (9 * 5 * 9 + 9)


def test_deform_conv_integer_offset_and_mask_by_hand() -> None:
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(3, 4)
    with torch.no_grad():
        # Every tap samples one column to the right (offset layout: (dy, dx) per tap).
        conv.offset_conv.bias.copy_(torch.tensor([0.0, 1.0] * 9))
        # mask = 2 * sigmoid(log(1/3)) = 2 * 0.25 = 0.5.
        conv.mask_conv.bias.fill_(math.log(1 / 3))
    x = torch.randn(1, 3, 6, 8)
    # out[i, j] = 0.5 * sum_{a, b} w[a, b] x[i + a - 1, j + b] (zero outside x).
    expected = 0.5 * F.conv2d(F.pad(x, (0, 2, 1, 1)), conv.weight)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_deform_conv_extra_macs_by_hand() -> None:
    conv = ModulatedDeformConv2d(4, 6)
    # 5 x 3 output positions, 4 * 9 samples each: 5 MACs per sample + 6 output channels per sample.
    assert conv.extra_macs((1, 4, 5, 3)) == 15 * 36 * (5 + 6)


def test_ssh_parameter_count_and_shape() -> None:
    ssh = SSH(52)
    assert n_params(ssh) == 57_855
    x = torch.randn(1, 52, 7, 5)
    assert ssh(x).shape == (1, 52, 7, 5)


def test_ssh_output_is_shuffled_relu_concat() -> None:
    torch.manual_seed(0)
    plain = SSH(8, shuffle_groups=1).eval()
    shuffled = SSH(8, shuffle_groups=2).eval()
    shuffled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 8, 6, 5)
    a = plain(x)
    assert (a >= 0).all()
    torch.testing.assert_close(shuffled(x), channel_shuffle(a, 2))
    # Branch layout: C/2 + C/4 + C/4.
    assert plain.conv3x3.conv.out_channels == 4 and plain.conv5x5.conv.out_channels == 2
    assert plain.conv7x7_reduce.conv.in_channels == 2


def test_ssh_rejects_bad_width() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        SSH(50)


def test_odconv_ssh_shapes_and_parameters() -> None:
    from featherface.nn.odconv import ODConv2d

    ssh = SSH(16, conv="odconv", conv_kwargs={"kernel_num": 2, "reduction": 1 / 16, "min_channel": 4})
    x = torch.randn(2, 16, 9, 11)
    assert ssh(x).shape == (2, 16, 9, 11)
    convs = [m for m in ssh.modules() if isinstance(m, ODConv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(16, 8), (16, 4), (4, 4), (4, 4), (4, 4)]
    assert not any(isinstance(m, ModulatedDeformConv2d) for m in ssh.modules())


def test_ssh_rejects_unknown_conv_and_stray_options() -> None:
    with pytest.raises(ValueError, match="conv must be one of"):
        SSH(16, conv="dynamic")
    with pytest.raises(ValueError, match="takes no conv options"):
        SSH(16, conv="deformable", conv_kwargs={"kernel_num": 2})
