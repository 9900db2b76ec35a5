"""transfer_weights: copy by name, deformable / static 3x3 convs become ODConvs that start as those convs."""

from __future__ import annotations

import torch

from featherface.models.registry import create_model
from featherface.models.transfer import static_weight, transfer_weights
from featherface.nn.odconv import ODConv2d

TINY = {"width": 16, "bifpn_repeats": 1}


def _trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random non-trivial weights and BN statistics everywhere (a stand-in for a trained model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name
                        else 0.1 * torch.randn(t.shape, generator=g))
    return model.eval()


def _zero_offsets(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "offset_conv"):
                for conv in (m.offset_conv, m.mask_conv):
                    conv.weight.zero_()
                    conv.bias.zero_()


def test_deformable_model_with_zero_offsets_transfers_exactly() -> None:
    source = _trained_like(create_model("featherface_v1", **TINY))
    _zero_offsets(source)  # a deformable conv with zero offsets and mask 1 is a plain conv
    target = create_model("featherface_odconv_ssh", **TINY).eval()
    report = transfer_weights(source, target)
    x = torch.randn(2, 3, 64, 96) * 50
    with torch.no_grad():
        for a, b in zip(source(x), target(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert all("offset_conv" in k or "mask_conv" in k for k in report.skipped)
    assert len(report.skipped) == 15 * 4  # weight + bias of the offset and mask convs of 15 deformable convs
    assert all(k.endswith("attention.temperature") for k in report.not_loaded)


def test_dropped_offsets_change_the_function() -> None:
    """The same transfer from a source whose offsets are not zero cannot be exact (the test above can fail)."""
    source = _trained_like(create_model("featherface_v1", **TINY))
    target = create_model("featherface_odconv_ssh", **TINY).eval()
    transfer_weights(source, target)
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        assert not torch.allclose(source(x)[1], target(x)[1], atol=1e-4)


def test_same_architecture_copies_everything() -> None:
    source = _trained_like(create_model("featherface_odconv_ssh", **TINY))
    target = create_model("featherface_odconv_ssh", **TINY)
    report = transfer_weights(source, target)
    assert not report.skipped and not report.not_loaded
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_static_weight_recognises_static_convs_only() -> None:
    assert static_weight(torch.nn.Conv2d(2, 3, 3, bias=False)).shape == (3, 2, 3, 3)
    assert static_weight(torch.nn.Conv2d(2, 3, 3, bias=True)) is None
    assert static_weight(ODConv2d(2, 3, 3)) is None
    assert static_weight(torch.nn.BatchNorm2d(3)) is None


def test_deformable_to_plain_copies_the_regular_kernels() -> None:
    source = _trained_like(create_model("featherface_v1", **TINY))
    _zero_offsets(source)
    target = create_model("featherface_plain_ssh", **TINY).eval()
    transfer_weights(source, target)
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        for a, b in zip(source(x), target(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_residual_attention_blocks_start_as_the_trunk_they_are_added_to() -> None:
    """The ablation's starting point (params-ablation.yaml): V1's weights into a model with V1's trunk and attention
    blocks at the six sites. ODConv's residual blocks start as the identity, so featherface_odconv / _odconv4 (and
    featherface_none, which is V1's architecture) compute V1's function exactly; CBAM's multiplicative gates do not."""
    source = _trained_like(create_model("featherface_v1", **TINY))
    x = torch.randn(2, 3, 64, 96) * 50
    with torch.no_grad():
        reference = source(x)
        for name in ("featherface_none", "featherface_odconv", "featherface_odconv4"):
            target = create_model(name, **TINY).eval()
            report = transfer_weights(source, target)
            assert not report.skipped, name
            assert all(k.startswith("attention.") for k in report.not_loaded), name
            for a, b in zip(reference, target(x)):
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name
        cbam = create_model("featherface_cbam", **TINY).eval()
        transfer_weights(source, cbam)
        reference_features = source.forward_features(x)["s3"]
        assert not torch.allclose(reference_features, cbam.forward_features(x)["s3"], atol=1e-3)
