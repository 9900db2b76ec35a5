"""Tests of featherface.models.registry."""

from __future__ import annotations

import pytest

from featherface.models.featherface import FeatherFace
from featherface.models.registry import create_model, list_models, model_config


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_list_models() -> None:
    names = list_models()
    assert {"featherface_none", "featherface_cbam", "featherface_odconv", "featherface_v1"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize(
    "name, params",
    [("featherface_none", 475_735), ("featherface_cbam", 488_664), ("featherface_v1", 489_015),
     ("featherface_odconv", 487_529), ("featherface_odconv4", 486_884), ("featherface_odconv_ssh", 478_539),
     ("featherface_plain_ssh", 376_344),
     ("featherface_eca_sam", 476_345)],
)
def test_registered_parameter_counts(name: str, params: int) -> None:
    model = create_model(name)
    assert isinstance(model, FeatherFace)
    assert n_params(model) == params


def test_overrides() -> None:
    model = create_model("featherface_none", width=56, bifpn_repeats=2)
    assert n_params(model) == 489_015
    assert model.config.width == 56
    cfg = model_config("featherface_cbam", attention_sites=("p3", "p4", "p5"))
    assert cfg.attention == "cbam" and cfg.attention_sites == ("p3", "p4", "p5")


def test_unknown_override_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean 'bifpn_repeats'"):
        create_model("featherface_none", bifpn_repeat=2)


def test_bad_override_value() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model("featherface_none", width=54)


def test_unknown_model_suggests() -> None:
    with pytest.raises(KeyError, match="did you mean 'featherface_cbam'"):
        create_model("featherface_cbma")


def test_odconv_variant_budget() -> None:
    from featherface.nn.odconv_attention import RECOMMENDED_SITES

    model = create_model("featherface_odconv")
    assert model.config.attention == "odconv"
    expected_sites = tuple(s for s in ("c3", "c4", "c5", "p3", "p4", "p5") if s in RECOMMENDED_SITES)
    assert model.config.attention_sites == expected_sites
    assert n_params(model) < 490_000
    # The trunk is the shared one.
    trunk = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("attention."))
    assert trunk == 475_735


def test_odconv_variant_is_trunk_at_init() -> None:
    import torch

    torch.manual_seed(0)
    odconv = create_model("featherface_odconv").eval()
    trunk = create_model("featherface_none").eval()
    trunk.load_state_dict({k: v for k, v in odconv.state_dict().items() if not k.startswith("attention.")})
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        for a, b in zip(odconv(x), trunk(x)):
            torch.testing.assert_close(a, b)


def test_odconv4_has_kernel_attention_at_the_bifpn_outputs_only() -> None:
    model = create_model("featherface_odconv4")
    kernels = {site: block.conv.kernel_num for site, block in model.attention.items() if hasattr(block, "conv")}
    assert kernels == {"c3": 1, "c4": 1, "p3": 4, "p4": 4, "p5": 4}  # no block at c5
    assert model.config.options_at("p4")["kernel_num"] == 4 and model.config.options_at("c3")["kernel_num"] == 1
    # The per-site options survive the checkpoint round trip.
    config = model.config
    assert type(config).from_dict(config.to_dict()) == config


def test_site_kwargs_must_name_attention_sites() -> None:
    with pytest.raises(ValueError, match="attention_site_kwargs.*'c5' is not one of the attention sites"):
        model_config("featherface_odconv", attention_sites=("p3",), attention_site_kwargs={"c5": {"kernel_num": 2}})


def test_odconv_ssh_replaces_every_deformable_conv() -> None:
    from featherface.nn.odconv import ODConv2d
    from featherface.nn.ssh import ModulatedDeformConv2d

    model = create_model("featherface_odconv_ssh")
    assert not any(isinstance(m, ModulatedDeformConv2d) for m in model.modules())
    odconvs = [m for m in model.context.modules() if isinstance(m, ODConv2d)]
    assert len(odconvs) == 15 and all(m.kernel_num == 2 for m in odconvs)
    assert n_params(model) < 490_000
    assert model.config.to_dict()["context_conv"] == "odconv"


def test_eca_sam_has_the_forks_six_blocks() -> None:
    model = create_model("featherface_eca_sam")
    kernels = {site: block.channel_gate.conv.kernel_size[0] for site, block in model.attention.items()}
    assert kernels == {"c3": 3, "c4": 5, "c5": 5, "p3": 3, "p4": 3, "p5": 3}  # the checkpoint's ECA shapes
    attention = sum(p.numel() for n, p in model.named_parameters() if n.startswith("attention."))
    assert attention == 3 + 5 + 5 + 3 * 3 + 6 * 2 * 7 * 7 == 610 == 476_345 - 475_735
