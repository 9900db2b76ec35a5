"""Tests of featherface.nn.cbam."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featherface.nn.cbam import CBAM


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels, expected", [(64, 680), (128, 2284), (256, 8564), (52, 467)])
def test_cbam_parameter_count(channels: int, expected: int) -> None:
    # 2 C (C // 16) + C // 16 + C (MLP) + 2 * 49 (spatial conv) + 2 (BN).
    assert n_params(CBAM(channels)) == expected


def test_cbam_zero_weights_scale_by_a_quarter() -> None:
    cbam = CBAM(32).eval()
    with torch.no_grad():
        for p in cbam.parameters():
            p.zero_()
        cbam.spatial.bn.weight.fill_(1.0)
    x = torch.randn(2, 32, 5, 3)
    # sigmoid(0) = 0.5 twice.
    torch.testing.assert_close(cbam(x), 0.25 * x)


def test_cbam_matches_reference_computation() -> None:
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=4).eval()
    with torch.no_grad():
        cbam.spatial.bn.running_mean.fill_(0.3)
        cbam.spatial.bn.running_var.fill_(2.0)
    x = torch.randn(2, 16, 6, 7)
    l1, l2 = cbam.channel.mlp[0], cbam.channel.mlp[2]

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu(F.linear(v, l1.weight, l1.bias)), l2.weight, l2.bias)

    gate = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.flatten(2).max(-1).values))
    y = x * gate[:, :, None, None]
    pooled = torch.stack([y.max(1).values, y.mean(1)], dim=1)
    bn = cbam.spatial.bn
    s = (F.conv2d(pooled, cbam.spatial.conv.weight, padding=3) - 0.3) / torch.sqrt(torch.tensor(2.0) + bn.eps)
    s = s * bn.weight + bn.bias
    torch.testing.assert_close(cbam(x), y * torch.sigmoid(s), rtol=1e-5, atol=1e-6)


def test_cbam_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reduction"):
        CBAM(16, reduction=0)
    with pytest.raises(ValueError, match="odd"):
        CBAM(16, spatial_kernel=4)
