"""Tests of featherface.nn.bifpn: fusion, TF-same max pooling, nearest resizing, the BiFPN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from featherface.nn.bifpn import BiFPN, BiFPNCell, fast_normalized_fusion, resize_nearest, tf_same_max_pool2d


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_fast_normalized_fusion_by_hand() -> None:
    a = torch.full((1, 2, 2, 2), 2.0)
    b = torch.full((1, 2, 2, 2), 5.0)
    # relu -> [1, 0]; normaliser 1 + 0 + 3 (third weight only normalises) + 1e-4.
    out = fast_normalized_fusion(torch.tensor([1.0, -1.0, 3.0]), [a, b])
    torch.testing.assert_close(out, torch.full_like(a, 2.0 / 4.0001))
    out = fast_normalized_fusion(torch.tensor([1.0, 1.0]), [a, b])
    torch.testing.assert_close(out, torch.full_like(a, 7.0 / 2.0001))
    with pytest.raises(ValueError, match="cannot fuse"):
        fast_normalized_fusion(torch.ones(1), [a, b])


def test_tf_same_max_pool_pads_with_zeros() -> None:
    x = -torch.ones(1, 1, 3, 3)
    # n = 3: total padding 2 -> one zero row / column on each side; every window touches the padding.
    out = tf_same_max_pool2d(x)
    assert out.shape == (1, 1, 2, 2)
    torch.testing.assert_close(out, torch.zeros(1, 1, 2, 2))


def test_tf_same_max_pool_by_hand_even_size() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # n = 4: total padding 1, all of it at the bottom / right: windows rows {0,1,2}, {2,3,pad}.
    out = tf_same_max_pool2d(x)
    assert out[0, 0].tolist() == [[10.0, 11.0], [14.0, 15.0]]


@pytest.mark.parametrize("n", range(1, 10))
def test_tf_same_max_pool_matches_tensorflow_padding_rule(n: int) -> None:
    torch.manual_seed(n)
    x = torch.randn(1, 2, n, n + 1) - 0.5
    out = tf_same_max_pool2d(x)
    assert out.shape[-2:] == ((n + 1) // 2, (n + 2) // 2)
    # Reference: total padding (ceil(m / 2) - 1) * 2 + 3 - m per axis, smaller half first, zeros.
    pads = []
    for m in (n + 1, n):  # F.pad order: last axis first
        total = max(((m + 1) // 2 - 1) * 2 + 3 - m, 0)
        pads += [total // 2, total - total // 2]
    torch.testing.assert_close(out, F.max_pool2d(F.pad(x, pads), 3, 2))


def test_resize_nearest_to_odd_size() -> None:
    x = torch.arange(11.0).reshape(1, 1, 1, 11)
    like = torch.zeros(1, 5, 1, 21)
    out = resize_nearest(x, like)
    assert out.shape == (1, 1, 1, 21)
    assert out[0, 0, 0].tolist() == [float((i * 11) // 21) for i in range(21)]


def test_bifpn_parameter_count_and_structure() -> None:
    neck = BiFPN((64, 128, 256), 52, 3)
    assert n_params(neck) == 84_010
    assert neck.cells[0].first and not neck.cells[1].first and not neck.cells[2].first
    assert not hasattr(neck.cells[1], "proj_p3")
    assert neck.cells[0].weight_p5_out.shape == (3,)
    # V1: C = 56, R = 2.
    cell = BiFPNCell(52)
    per_cell = 4 * (9 * 52 + 52 * 52 + 52 + 2 * 52) + 2 + 2 + 3 + 3
    assert n_params(cell) == per_cell
    projections = (64 + 128 + 256 + 128 + 256) * 52 + 5 * 3 * 52
    assert n_params(neck) == 3 * per_cell + projections


@pytest.mark.parametrize("hw", [(80, 80), (32, 42), (13, 8)])
def test_bifpn_odd_sizes(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    h3, w3 = hw
    h4, w4 = (h3 + 1) // 2, (w3 + 1) // 2
    h5, w5 = (h4 + 1) // 2, (w4 + 1) // 2
    neck = BiFPN((8, 12, 16), 8, 2).eval()
    outs = neck((torch.randn(1, 8, h3, w3), torch.randn(1, 12, h4, w4), torch.randn(1, 16, h5, w5)))
    assert [tuple(o.shape) for o in outs] == [(1, 8, h3, w3), (1, 8, h4, w4), (1, 8, h5, w5)]


def test_p5_normaliser_weight_changes_output() -> None:
    torch.manual_seed(0)
    cell = BiFPNCell(4, (4, 4, 4)).eval()
    feats = (torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2))
    p3, p4, p5 = cell(feats)
    with torch.no_grad():
        cell.weight_p5_out[2] = 0.0
    q3, q4, q5 = cell(feats)
    torch.testing.assert_close(q3, p3)
    torch.testing.assert_close(q4, p4)
    assert not torch.allclose(q5, p5)


def test_bifpn_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one cell"):
        BiFPN((64, 128, 256), 52, 0)
    with pytest.raises(ValueError, match="three input levels"):
        BiFPN((64, 128), 52, 1)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_tf_same_max_pool_trace_follows_input_size() -> None:
    # The parity of H, W must not be baked into a traced / exported graph.
    traced = torch.jit.trace(tf_same_max_pool2d, torch.randn(1, 2, 8, 8))
    for hw in [(7, 9), (5, 4), (1, 1)]:
        x = torch.randn(1, 2, *hw) - 1
        torch.testing.assert_close(traced(x), tf_same_max_pool2d(x))
