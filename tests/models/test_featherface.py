"""Tests of featherface.models.featherface: config, assembly, shapes, gradients, input errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from featherface.models.featherface import (
    ATTENTION_SITES,
    FeatherFace,
    FeatherFaceConfig,
    build_attention,
    feature_map_sizes,
)
from featherface.ops.priors import num_priors


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_trunk_and_cbam_parameter_counts() -> None:
    trunk = FeatherFace(FeatherFaceConfig())
    assert n_params(trunk) == 475_735
    assert n_params(trunk.backbone) == 213_072
    assert n_params(trunk.neck) == 84_010
    assert [n_params(m) for m in trunk.context] == [57_855] * 3
    assert n_params(FeatherFace(FeatherFaceConfig(attention="cbam"))) == 488_664
    assert n_params(FeatherFace(FeatherFaceConfig(width=56, bifpn_repeats=2))) == 489_015
    # CBAM only after the backbone: 680 + 2284 + 8564.
    c_only = FeatherFace(FeatherFaceConfig(attention="cbam", attention_sites=("c3", "c4", "c5")))
    assert n_params(c_only) == 475_735 + 680 + 2_284 + 8_564
    assert isinstance(c_only.attention["p3"], torch.nn.Identity)


def test_config_normalises_and_freezes() -> None:
    cfg = FeatherFaceConfig(attention="cbam", attention_sites=["p5", "c3"], attention_kwargs={"reduction": 8})
    assert cfg.attention_sites == ("c3", "p5")
    assert cfg.attention_kwargs == (("reduction", 8),)
    assert cfg.attention_options == {"reduction": 8}
    assert hash(cfg) == hash(FeatherFaceConfig(attention="cbam", attention_sites=("c3", "p5"),
                                               attention_kwargs=(("reduction", 8),)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 56  # type: ignore[misc]
    again = FeatherFaceConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert FeatherFaceConfig().active_sites == ()
    assert FeatherFaceConfig(attention="cbam").active_sites == ATTENTION_SITES


def test_config_kwargs_are_used() -> None:
    model = FeatherFace(FeatherFaceConfig(attention="cbam", attention_sites=("c5",), attention_kwargs={"reduction": 8}))
    assert model.attention["c5"].channel.mlp[0].out_features == 256 // 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 50}, "divisible by 4"),
        ({"width": 0}, "width"),
        ({"bifpn_repeats": 0}, "bifpn_repeats"),
        ({"attention": "cbma"}, "did you mean 'cbam'"),
        ({"attention_sites": ("c3", "p6")}, "unknown site 'p6'"),
        ({"attention_sites": ("c3", "c3")}, "duplicate"),
        ({"attention_kwargs": 5}, "attention_kwargs"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatherFaceConfig(**kwargs)


def test_config_from_dict_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="did you mean 'width'"):
        FeatherFaceConfig.from_dict({"widht": 52})


def test_build_attention_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown attention kind"):
        build_attention("eca", 16)


@pytest.mark.parametrize("hw, expected_p", [((640, 640), 16_800), ((250, 333), 3_536), ((97, 61), 280)])
def test_output_shapes(hw: tuple[int, int], expected_p: int) -> None:
    # 97 x 61: 2 * (13 * 8 + 7 * 4 + 4 * 2) = 280.
    assert num_priors(*hw) == expected_p
    model = FeatherFace(FeatherFaceConfig(attention="cbam")).eval()
    with torch.no_grad():
        loc, logits, landmarks = model(torch.randn(1, 3, *hw))
    assert loc.shape == (1, expected_p, 4)
    assert logits.shape == (1, expected_p, 2)
    assert landmarks.shape == (1, expected_p, 10)


def test_feature_map_sizes() -> None:
    assert feature_map_sizes(250, 333) == [(32, 42), (16, 21), (8, 11)]


def test_forward_features_and_batch_independence() -> None:
    torch.manual_seed(0)
    model = FeatherFace(FeatherFaceConfig(width=16, bifpn_repeats=1, attention="cbam")).eval()
    x = torch.randn(2, 3, 45, 38)
    with torch.no_grad():
        feats = model.forward_features(x)
        both = model(x)
        single = model(x[1:])
    assert list(feats) == ["c3", "c4", "c5", "p3", "p4", "p5", "s3", "s4", "s5"]
    assert feats["p4"].shape == (2, 16, 3, 3)
    for a, b in zip(both, single):
        torch.testing.assert_close(a[1:], b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", ["none", "cbam", "odconv", "eca_sam"])
def test_gradients_reach_every_parameter(attention: str) -> None:
    if attention == "odconv":
        pytest.importorskip("featherface.nn.odconv_attention")
    torch.manual_seed(0)
    model = FeatherFace(FeatherFaceConfig(attention=attention)).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("attention.") and name.endswith(".scale"):
                p.fill_(0.1)  # ODConv blocks start as the identity (zero scale): open them
    loc, logits, landmarks = model(torch.randn(2, 3, 64, 64) * 50)
    loss = sum((t * torch.randn_like(t)).sum() for t in (loc, logits, landmarks))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.zeros(3, 32, 32), ValueError, "4-D"),
        (torch.zeros(1, 1, 32, 32), ValueError, "3 input channels"),
        (torch.zeros(1, 4, 32, 32), ValueError, "got 4"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating-point"),
    ],
)
def test_bad_input_errors(x: torch.Tensor, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FeatherFace(FeatherFaceConfig(width=8, bifpn_repeats=1))(x)


def test_model_rejects_non_config() -> None:
    with pytest.raises(TypeError, match="FeatherFaceConfig"):
        FeatherFace({"width": 52})  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traced_model_follows_input_size() -> None:
    torch.manual_seed(0)
    model = FeatherFace(FeatherFaceConfig(width=8, bifpn_repeats=2, attention="cbam")).eval()
    traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64))
    x = torch.randn(2, 3, 97, 61)
    with torch.no_grad():
        for a, b in zip(traced(x), model(x)):
            torch.testing.assert_close(a, b)
