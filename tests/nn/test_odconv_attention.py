"""ODConvAttention: identity at init, gradient flow, parameter budget, export."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from featherface.nn.odconv import ODConv2d, set_temperature
from featherface.nn.odconv_attention import (
    ATTENTION_SITES,
    RECOMMENDED_KWARGS,
    RECOMMENDED_SITES,
    ODConvAttention,
    attention_parameter_count,
    parameter_breakdown,
    site_channels,
)

TRUNK_PARAMS = 475_735  # DESIGN.md: trunk without attention, C = 52, 3 BiFPN cells
BUDGET = 490_000


def test_identity_at_init() -> None:
    torch.manual_seed(0)
    block = ODConvAttention(16, **RECOMMENDED_KWARGS).train()
    x = torch.randn(2, 16, 9, 7)
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)


def test_gradients_flow() -> None:
    torch.manual_seed(0)
    block = ODConvAttention(16, kernel_num=2).train()
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    block(x).square().sum().backward()
    # At init only the residual scale (and the input, through the identity) gets a gradient.
    assert block.scale.grad is not None and block.scale.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, 2 * x.detach())
    block.zero_grad()
    with torch.no_grad():
        block.scale.fill_(0.5)
    block(torch.randn(2, 16, 8, 8)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"


def test_output_is_residual_of_the_odconv() -> None:
    torch.manual_seed(0)
    block = ODConvAttention(8).eval()
    with torch.no_grad():
        block.scale.copy_(torch.linspace(-1, 1, 8))
    x = torch.randn(3, 8, 6, 6)
    expected = x + block.scale.view(1, -1, 1, 1) * block.conv(x)
    torch.testing.assert_close(block(x), expected, atol=0, rtol=0)
    assert isinstance(block.conv, ODConv2d) and block.conv.groups == 8  # depthwise, width preserved


@pytest.mark.parametrize("channels", [8, 52, 64, 256])
@pytest.mark.parametrize("kwargs", [RECOMMENDED_KWARGS, {"kernel_num": 4, "reduction": 0.0625, "min_channel": 16}])
def test_parameter_count_matches_the_module(channels: int, kwargs: dict) -> None:
    block = ODConvAttention(channels, **kwargs)
    assert attention_parameter_count(channels, **kwargs) == sum(p.numel() for p in block.parameters())
    assert sum(parameter_breakdown(channels, **kwargs).values()) == attention_parameter_count(channels, **kwargs)


def test_recommended_count_by_hand() -> None:
    # dw weight 9C + fc 4C + BN 2*4 + channel_fc 4C + C + spatial_fc 4*9 + 9 + scale C = 19 C + 53 (A = 4, n = 1)
    for channels in (52, 64, 128, 256):
        assert attention_parameter_count(channels, **RECOMMENDED_KWARGS) == 19 * channels + 53


def test_recommended_design_fits_the_budget() -> None:
    assert set(RECOMMENDED_SITES) <= set(ATTENTION_SITES)
    channels = site_channels(52)
    total = sum(attention_parameter_count(channels[s], **RECOMMENDED_KWARGS) for s in RECOMMENDED_SITES)
    assert total == 11_794
    assert TRUNK_PARAMS + total < BUDGET


def test_official_defaults_do_not_fit() -> None:
    """The reason for the design: with n = 4, r = 1/16, min 16 one 256-channel site exceeds the whole slack."""
    official = {"kernel_num": 4, "reduction": 0.0625, "min_channel": 16}
    assert attention_parameter_count(256, **official) > BUDGET - TRUNK_PARAMS


def test_parameter_count_does_not_touch_the_rng() -> None:
    state = torch.random.get_rng_state()
    attention_parameter_count(256, **RECOMMENDED_KWARGS)
    assert torch.equal(state, torch.random.get_rng_state())


def test_wrong_channels_and_arguments_are_clear_errors() -> None:
    block = ODConvAttention(16)
    with pytest.raises(ValueError, match="expects 16 input channels"):
        block(torch.randn(1, 12, 5, 5))
    with pytest.raises(ValueError, match="kernel_size"):
        ODConvAttention(16, kernel_size=2)
    with pytest.raises(ValueError, match="channels"):
        ODConvAttention(0)


def test_temperature_is_reachable_and_saved() -> None:
    model = torch.nn.Sequential(ODConvAttention(8), ODConvAttention(8))
    assert set_temperature(model, 30.0) == 2
    state = model.state_dict()
    assert float(state["0.conv.attention.temperature"]) == 30.0


def test_onnx_export_with_dynamic_batch() -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    block = ODConvAttention(12).eval()
    with torch.no_grad():
        block.scale.normal_()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (torch.randn(2, 12, 10, 10),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch", 2: "h", 3: "w"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 12, 10, 10), (3, 12, 7, 11)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = block(x).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-5, rtol=1e-5)
