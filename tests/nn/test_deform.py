"""Tests of featherface.nn.deform: DCNv2 by grid_sample + matmul against torchvision's operator."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d

from featherface.nn.deform import deform_conv2d_by_sampling
from featherface.nn.ssh import ModulatedDeformConv2d


def _inputs(b: int, cin: int, cout: int, h: int, w: int, stride: int, padding: int, offset_scale: float):
    g = torch.Generator().manual_seed(h * 100 + w)
    ho = (h + 2 * padding - 3) // stride + 1
    wo = (w + 2 * padding - 3) // stride + 1
    x = torch.randn(b, cin, h, w, generator=g, dtype=torch.float64)
    offset = torch.randn(b, 18, ho, wo, generator=g, dtype=torch.float64) * offset_scale
    weight = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(b, 9, ho, wo, generator=g, dtype=torch.float64) * 2
    return [t.requires_grad_() for t in (x, offset, weight, mask)]


@pytest.mark.parametrize(
    "b, cin, cout, h, w, stride, padding, offset_scale",
    [
        (2, 5, 7, 9, 6, 1, 1, 2.0),  # non-square, offsets of a few pixels
        (1, 3, 4, 8, 8, 2, 1, 1.5),  # stride 2
        (2, 4, 2, 7, 5, 1, 0, 0.7),  # no padding
        (1, 2, 3, 6, 6, 1, 1, 12.0),  # most samples far outside the image (read zero)
        (1, 2, 2, 1, 1, 1, 1, 0.4),  # a 1x1 map
    ],
)
def test_matches_torchvision_forward_and_gradients(b, cin, cout, h, w, stride, padding, offset_scale) -> None:
    x, offset, weight, mask = _inputs(b, cin, cout, h, w, stride, padding, offset_scale)
    expected = deform_conv2d(x, offset, weight, None, stride=stride, padding=padding, mask=mask)
    got = deform_conv2d_by_sampling(x, offset, weight, mask, stride, padding)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(expected)
    grads_expected = torch.autograd.grad(expected, (x, offset, weight, mask), grad_out)
    grads_got = torch.autograd.grad(got, (x, offset, weight, mask), grad_out)
    for name, g_got, g_exp in zip(("x", "offset", "weight", "mask"), grads_got, grads_expected):
        torch.testing.assert_close(g_got, g_exp, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


def test_integer_offsets_on_pixel_edges() -> None:
    # Offsets that land exactly on the first / last row and column and just outside them.
    x, offset, weight, mask = _inputs(1, 2, 3, 5, 5, 1, 1, 0.0)
    with torch.no_grad():
        offset.copy_(torch.tensor([-1.0, 1.0, -2.0, 2.0, 0.999, -0.999] * 3).view(1, 18, 1, 1).expand_as(offset))
    expected = deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    torch.testing.assert_close(deform_conv2d_by_sampling(x, offset, weight, mask, 1, 1), expected)


def test_float32_close_to_torchvision() -> None:
    x, offset, weight, mask = (t.detach().float() for t in _inputs(2, 16, 8, 12, 10, 1, 1, 3.0))
    expected = deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    torch.testing.assert_close(deform_conv2d_by_sampling(x, offset, weight, mask, 1, 1), expected,
                               rtol=1e-5, atol=1e-4)


def test_shape_errors_name_the_problem() -> None:
    x, offset, weight, mask = (t.detach() for t in _inputs(1, 2, 3, 5, 5, 1, 1, 1.0))
    with pytest.raises(ValueError, match="input channels"):
        deform_conv2d_by_sampling(x[:, :1], offset, weight, mask, 1, 1)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d_by_sampling(x, offset[:, :9], weight, mask, 1, 1)


def test_module_uses_sampling_eagerly_and_torchvision_when_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(3, 4).eval()
    with torch.no_grad():
        conv.offset_conv.bias.normal_()
    x = torch.randn(1, 3, 7, 7)
    calls: list[str] = []
    import featherface.nn.ssh as ssh

    monkeypatch.setattr(ssh, "deform_conv2d_by_sampling",
                        lambda *a: calls.append("sampling") or deform_conv2d_by_sampling(*a))
    eager = conv(x)
    assert calls == ["sampling"]
    traced = torch.jit.trace(conv, x, check_trace=False)
    assert "torchvision::deform_conv2d" in str(traced.graph)
    assert calls == ["sampling"]  # tracing took the torchvision operator
    torch.testing.assert_close(traced(x), eager, rtol=1e-5, atol=1e-5)
    forced = ModulatedDeformConv2d(3, 4, impl="torchvision").eval()
    forced.load_state_dict(conv.state_dict())
    torch.testing.assert_close(forced(x), eager, rtol=1e-5, atol=1e-5)
    assert calls == ["sampling"]


def test_unknown_implementation_is_rejected() -> None:
    with pytest.raises(ValueError, match="impl must be one of"):
        ModulatedDeformConv2d(3, 4, impl="cuda")
