"""Attention bypass: attention blocks become the identity, ODConv convs get their mean attentions."""

from __future__ import annotations

import pytest
import torch

from featherface.analysis.attention import capture_attentions
from featherface.analysis.bypass import attention_blocks, bypass_attention, mean_attentions, restore_attention
from featherface.models.registry import create_model

SITES = ("c3", "c4", "c5", "p3", "p4", "p5")


def _tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, width=16, bifpn_repeats=1).eval()


def _image(seed: int, h: int = 64, w: int = 48) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 50


@torch.no_grad()
def test_identity_bypass_of_the_residual_odconv_blocks_returns_their_input() -> None:
    model = _tiny("featherface_odconv4")
    for site in ("c3", "c4", "p3", "p4", "p5"):
        model.attention[site].scale.fill_(1.0)  # trained-like: the blocks change their input
    x = _image(1)
    c3 = model.backbone(x)[0]
    assert not torch.allclose(model.attention["c3"](c3), c3)
    before = model(x)
    report = bypass_attention(model)  # no ODConv outside the blocks: no calibration needed
    assert list(report.identity) == ["attention.c3", "attention.c4", "attention.p3", "attention.p4", "attention.p5"]
    assert report.fixed == [] and report.calibration_images == 0
    assert model.attention["p3"](c3) is c3
    features = model.forward_features(x)
    assert torch.equal(features["c3"], c3) and torch.equal(features["c4"], model.backbone(x)[1])
    assert not torch.allclose(model(x)[1], before[1])
    restore_attention(model, report)
    assert all(torch.equal(a, b) for a, b in zip(model(x), before))


@pytest.mark.parametrize("name, block", [("featherface_cbam", "CBAM"), ("featherface_eca_sam", "ECASAM")])
@torch.no_grad()
def test_identity_bypass_of_cbam_and_eca_sam(name: str, block: str) -> None:
    model = _tiny(name)
    assert [n for n, _ in attention_blocks(model)] == [f"attention.{s}" for s in SITES]
    x = _image(2)
    report = bypass_attention(model)
    assert report.to_dict() == {"identity": {f"attention.{s}": block for s in SITES}, "fixed": [],
                                "calibration_images": 0}
    assert all(isinstance(model.attention[s], torch.nn.Identity) for s in SITES)
    assert torch.equal(model.forward_features(x)["c5"], model.backbone(x)[2])


@torch.no_grad()
def test_fixed_bypass_with_one_calibration_image_reproduces_its_output() -> None:
    model = _tiny("featherface_odconv_ssh")
    x = _image(3)
    dynamic = model(x)
    report = bypass_attention(model, [x])
    assert len(report.fixed) == 15 and report.identity == {} and report.calibration_images == 1
    assert all(m.attentions_fixed for _, m in model.named_modules() if hasattr(m, "attentions_fixed"))
    for fixed, expected in zip(model(x), dynamic):
        torch.testing.assert_close(fixed, expected, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_fixed_bypass_uses_the_mean_attention_of_the_calibration_images() -> None:
    model = _tiny("featherface_odconv_ssh")
    x1, x2 = _image(4), _image(5, 48, 80)  # different sizes, one at a time
    means, images = mean_attentions(model, [x1, x2])
    assert images == 2
    a1, a2 = (capture_attentions(model, x)["context.1.conv5x5.conv"] for x in (x1, x2))
    mean = means["context.1.conv5x5.conv"]
    torch.testing.assert_close(mean.kernel.flatten(), ((a1["kernel"] + a2["kernel"]) / 2).flatten())
    torch.testing.assert_close(mean.spatial.flatten(), ((a1["spatial"] + a2["spatial"]) / 2).flatten())
    torch.testing.assert_close(mean.channel.flatten(), ((a1["channel"] + a2["channel"]) / 2).flatten())
    dynamic = model(x1)
    report = bypass_attention(model, [x1, x2])
    assert report.calibration_images == 2
    assert not torch.allclose(model(x1)[1], dynamic[1], atol=1e-6)  # no longer the image's own attentions
    restore_attention(model, report)
    assert all(torch.equal(a, b) for a, b in zip(model(x1), dynamic))


def test_bypass_errors() -> None:
    with pytest.raises(ValueError, match="none were given"):
        bypass_attention(_tiny("featherface_odconv_ssh"))
    with pytest.raises(ValueError, match="no calibration images"):
        bypass_attention(_tiny("featherface_odconv_ssh"), [])
    with pytest.raises(ValueError, match="no attention to bypass"):
        bypass_attention(_tiny("featherface_none"))
