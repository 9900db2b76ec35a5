"""ODConv2d: official golden vectors, the folded fast path, batch-1 training, temperature state, export."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featherface.nn.odconv import ODConv2d, set_temperature, temperature_at
from featherface.nn.odconv_branch import attention_channels

GOLDEN_NAMES = [
    f"{base}{suffix}"
    for base in ("a_k3_kn4", "b_k3_kn1_s2", "c_k1_kn4", "d_dw_k3_kn4", "e_temp31", "f_pw1x_k1_kn1")
    for suffix in ("", "_perturbed")
]
ATTENTION_KEYS = ("channel", "filter", "spatial", "kernel")
TOL = {"atol": 1e-5, "rtol": 1e-5}


# ------------------------------------------------------------------------------------------------ helpers
def _official_config(meta: dict) -> dict:
    c = meta["config"]
    return dict(in_channels=c["in_planes"], out_channels=c["out_planes"], kernel_size=c["kernel_size"],
                stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"],
                reduction=c["reduction"], kernel_num=c["kernel_num"], min_channel=c["min_channel"])


def _load_golden(golden_dir: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    folder = golden_dir / "odconv"
    npz_path, json_path = folder / f"{name}.npz", folder / f"{name}.json"
    if not npz_path.exists() or not json_path.exists():
        pytest.skip(f"{npz_path} or {json_path} is absent")
    with np.load(npz_path) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(json_path.read_text()), arrays


def _official_state(meta: dict, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(arrays[k]) for k in meta["state_dict"]}


def _build(meta: dict, arrays: dict[str, np.ndarray], **kwargs) -> ODConv2d:
    module = ODConv2d(**_official_config(meta), **kwargs)
    module.load_state_dict(_official_state(meta, arrays), strict=True)
    return module


def _reference_forward(m: ODConv2d, x: torch.Tensor) -> torch.Tensor:
    """The paper's / official formulation, one sample at a time: (x * a_c) conv (sum a_w a_s W) * a_f."""
    att = m.attentions(x)
    agg = (att.spatial * att.kernel * m.weight.unsqueeze(0)).sum(dim=1)  # (B, Cout, Cin/g, k, k)
    outs = [F.conv2d(x[b:b + 1] * att.channel[b:b + 1], agg[b], None, m.stride, m.padding, m.dilation, m.groups)
            for b in range(x.shape[0])]
    return torch.cat(outs) * att.filter


def _assert_close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    expected_t = torch.from_numpy(np.asarray(expected))
    if expected_t.dim() == 0:  # a head the official module skipped (stored as 1.0): ours returns ones
        assert torch.equal(actual, torch.ones_like(actual)), what
        return
    assert tuple(actual.shape) == tuple(expected_t.shape), f"{what}: {tuple(actual.shape)} != {tuple(expected_t.shape)}"
    torch.testing.assert_close(actual, expected_t, **TOL, msg=lambda m: f"{what}: {m}")


def _check_run(module: ODConv2d, x: torch.Tensor, arrays: dict[str, np.ndarray], prefix: str) -> None:
    """Output, attentions, hidden and aggregated kernel of one forward against the golden arrays.

    In train mode ``attentions`` and ``forward`` each update the BN buffers once, so the buffers are
    restored in between: both see the same batch statistics and the buffers end as after one forward.
    """
    bn = module.attention.bn
    saved = {k: v.clone() for k, v in bn.state_dict().items()}
    with torch.no_grad():
        att = module.attentions(x)
        bn.load_state_dict(saved)
        out = module(x)
    _assert_close(out, arrays[f"{prefix}_output"], f"{prefix}_output")
    for key in ATTENTION_KEYS:
        _assert_close(getattr(att, key), arrays[f"{prefix}_attn_{key}"], f"{prefix}_attn_{key}")
    _assert_close(att.hidden, arrays[f"{prefix}_attn_hidden"], f"{prefix}_attn_hidden")
    with torch.no_grad():
        agg = module.aggregate_weight(att)
    _assert_close(agg, arrays[f"{prefix}_aggregate_weight"], f"{prefix}_aggregate_weight")


# ------------------------------------------------------------------------------------------ golden files
def test_golden_names_cover_every_file(golden_dir: Path) -> None:
    files = sorted(p.stem for p in (golden_dir / "odconv").glob("*.npz"))
    assert files, "no golden npz files"
    assert sorted(GOLDEN_NAMES) == files


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_eval(golden_dir: Path, name: str) -> None:
    meta, arrays = _load_golden(golden_dir, name)
    module = _build(meta, arrays).eval()
    x = torch.from_numpy(arrays["input"])
    _check_run(module, x, arrays, "eval")
    if "eval_T31_output" in arrays:
        set_temperature(module, 31.0)
        _check_run(module, x, arrays, "eval_T31")


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_train(golden_dir: Path, name: str) -> None:
    meta, arrays = _load_golden(golden_dir, name)
    candidates = (("train", "input"), ("train_B2", "input_train_B2"), ("train_B2_T31", "input_train_B2"))
    runs = [(p, key) for p, key in candidates if f"{p}_output" in arrays]
    assert runs, f"{name}: no train entries"
    for prefix, input_key in runs:
        module = _build(meta, arrays).train()  # a fresh module: one train forward updates the BN buffers
        if prefix.endswith("T31"):
            set_temperature(module, 31.0)
        x = torch.from_numpy(arrays[input_key])
        _check_run(module, x, arrays, prefix)
        post = {k.split("attention.bn.")[1]: v for k, v in arrays.items() if k.startswith(f"{prefix}_post_state.")}
        assert post, f"{prefix}: no post-state entries"
        for key, expected in post.items():
            actual = getattr(module.attention.bn, key)
            if key == "num_batches_tracked":
                assert int(actual) == int(expected)
            else:
                _assert_close(actual, expected, f"{prefix}_post_state.{key}")


@pytest.mark.parametrize("name", ["a_k3_kn4", "d_dw_k3_kn4"])
def test_same_seed_gives_official_initial_weights(golden_dir: Path, name: str) -> None:
    """The golden (non-perturbed) state dicts are the official init after torch.manual_seed(0)."""
    meta, arrays = _load_golden(golden_dir, name)
    torch.manual_seed(0)
    module = ODConv2d(**_official_config(meta))
    state = module.state_dict()
    for key in meta["state_dict"]:
        assert torch.equal(state[key], torch.from_numpy(arrays[key])), key


def test_official_state_dict_loads_strictly_and_keeps_temperature(golden_dir: Path) -> None:
    meta, arrays = _load_golden(golden_dir, "a_k3_kn4_perturbed")
    module = ODConv2d(**_official_config(meta), temperature=2.5)
    official = _official_state(meta, arrays)
    assert "attention.temperature" not in official
    result = module.load_state_dict(official, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert module.temperature == 2.5
    assert torch.equal(module.weight.detach(), official["weight"])


# -------------------------------------------------------------------------------------- init and layout
@pytest.mark.parametrize(
    ("kwargs", "heads"),
    [
        (dict(in_channels=8, out_channels=12, kernel_size=3), {"channel_fc", "filter_fc", "spatial_fc", "kernel_fc"}),
        (dict(in_channels=8, out_channels=8, kernel_size=3, groups=8), {"channel_fc", "spatial_fc", "kernel_fc"}),
        (dict(in_channels=8, out_channels=12, kernel_size=1), {"channel_fc", "filter_fc", "kernel_fc"}),
        (dict(in_channels=8, out_channels=12, kernel_size=3, kernel_num=1), {"channel_fc", "filter_fc", "spatial_fc"}),
    ],
)
def test_state_dict_keys_follow_the_official_layout(kwargs: dict, heads: set[str]) -> None:
    module = ODConv2d(**kwargs, reduction=0.25, min_channel=2)
    keys = set(module.state_dict())
    expected = {"weight", "attention.fc.weight", "attention.temperature"} | {
        f"attention.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    for head in heads:
        expected |= {f"attention.{head}.weight", f"attention.{head}.bias"}
    assert keys == expected
    n, cout, cin, k, g = kwargs.get("kernel_num", 4), kwargs["out_channels"], kwargs["in_channels"], \
        kwargs["kernel_size"], kwargs.get("groups", 1)
    assert module.weight.shape == (n, cout, cin // g, k, k)


def test_attention_width_rule() -> None:
    assert attention_channels(32, 0.0625, 16) == 16
    assert attention_channels(512, 0.0625, 16) == 32
    assert attention_channels(256, 1 / 64, 4) == 4
    assert attention_channels(52, 1 / 64, 4) == 4
    assert ODConv2d(512, 8, 1).attention.fc.out_channels == 32


def test_init_statistics_follow_kaiming_fan_out() -> None:
    torch.manual_seed(0)
    m = ODConv2d(64, 128, 3, padding=1, kernel_num=4)
    # kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (Cout k k)) per candidate kernel
    assert m.weight.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.03)
    assert m.attention.channel_fc.bias.abs().max().item() == 0.0
    assert torch.equal(m.attention.bn.weight.detach(), torch.ones(16))


# ------------------------------------------------------------------------------------- formulation paths
CONFIGS = [
    dict(in_channels=8, out_channels=12, kernel_size=3, padding=1),
    dict(in_channels=8, out_channels=12, kernel_size=3, padding=1, kernel_num=1),
    dict(in_channels=8, out_channels=12, kernel_size=3, stride=2, padding=2, dilation=2, groups=2),
    dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8),
    dict(in_channels=8, out_channels=16, kernel_size=3, padding=1, groups=8, kernel_num=2),  # channel multiplier 2
    dict(in_channels=8, out_channels=12, kernel_size=1),
    dict(in_channels=8, out_channels=12, kernel_size=1, kernel_num=1),
    dict(in_channels=8, out_channels=12, kernel_size=5, stride=2, padding=1),
]


def _perturbed(kwargs: dict, seed: int = 0, **extra) -> ODConv2d:
    """A module whose every float parameter / buffer is random (non-zero biases, BN statistics)."""
    torch.manual_seed(seed)
    m = ODConv2d(**kwargs, reduction=0.5, min_channel=2, **extra)
    with torch.no_grad():
        for name, tensor in m.state_dict().items():
            if not tensor.is_floating_point() or name == "attention.temperature":
                continue
            values = torch.randn_like(tensor) * 0.5
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return m


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("impl", ["grouped", "matmul"])
@pytest.mark.parametrize("train", [False, True])
def test_fast_path_equals_reference(kwargs: dict, impl: str, train: bool) -> None:
    m = _perturbed(kwargs, conv_impl=impl).train(train)
    torch.manual_seed(1)
    x = torch.randn(3, 8, 11, 9)
    with torch.no_grad():
        expected = _reference_forward(m, x)  # in train mode both calls see the same batch statistics
        actual = m(x)
    torch.testing.assert_close(actual, expected, **TOL)


@pytest.mark.parametrize("kwargs", CONFIGS[:5])
def test_sample_weights_reproduce_each_sample(kwargs: dict) -> None:
    m = _perturbed(kwargs).eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        w = m.sample_weights(x)
        y = m(x)
        for b in range(2):
            yb = F.conv2d(x[b:b + 1], w[b], None, m.stride, m.padding, m.dilation, m.groups)
            torch.testing.assert_close(yb, y[b:b + 1], **TOL)


def test_skipped_heads_are_tensors_of_ones() -> None:
    m = ODConv2d(8, 8, 1, groups=8, kernel_num=1).eval()  # filter, spatial and kernel heads all skipped
    att = m.attentions(torch.randn(2, 8, 5, 5))
    assert att.filter.shape == (2, 8, 1, 1) and torch.equal(att.filter, torch.ones(2, 8, 1, 1))
    assert att.spatial.shape == (2, 1, 1, 1, 1, 1) and torch.equal(att.spatial, torch.ones_like(att.spatial))
    assert att.kernel.shape == (2, 1, 1, 1, 1, 1) and torch.equal(att.kernel, torch.ones_like(att.kernel))
    assert isinstance(att.channel, torch.Tensor) and att.channel.shape == (2, 8, 1, 1)


# ----------------------------------------------------------------------------------------- train mode
def test_gradients_reach_every_parameter_in_train_mode() -> None:
    for kwargs in CONFIGS:
        m = _perturbed(kwargs).train()
        x = torch.randn(2, 8, 9, 9, requires_grad=True)
        m(x).square().mean().backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{kwargs}: no gradient for {name}"
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_batch1_train_uses_running_stats(caplog: pytest.LogCaptureFixture) -> None:
    m = _perturbed(CONFIGS[0])
    x = torch.randn(1, 8, 7, 7)
    with torch.no_grad():
        expected = m.eval()(x)
    m.train()
    before = {k: v.clone() for k, v in m.attention.bn.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="featherface.nn.odconv_branch"):
        out = m(x)
        m(x)
    torch.testing.assert_close(out.detach(), expected, **TOL)
    for key, value in m.attention.bn.state_dict().items():
        assert torch.equal(value, before[key]), f"BN buffer {key} changed on a batch-1 train forward"
    assert sum("batch 1" in r.getMessage() for r in caplog.records) == 1  # warned once
    out.sum().backward()
    assert m.attention.fc.weight.grad is not None and m.attention.fc.weight.grad.abs().sum() > 0


def test_batch1_train_error_policy_explains_why() -> None:
    m = ODConv2d(8, 12, 3, padding=1, batch1_train="error").train()
    with pytest.raises(ValueError, match="batch size 1.*single value per channel"):
        m(torch.randn(1, 8, 7, 7))
    m(torch.randn(2, 8, 7, 7))  # batch 2 is fine
    m.eval()(torch.randn(1, 8, 7, 7))  # eval is fine


# ------------------------------------------------------------------------------------------ temperature
def test_temperature_schedule_values() -> None:
    assert temperature_at(0) == 30.0
    assert temperature_at(2.5) == pytest.approx(30 - 29 * 0.25)
    assert temperature_at(5) == pytest.approx(15.5)
    assert temperature_at(10) == 1.0
    assert temperature_at(123.4) == 1.0
    assert temperature_at(1, start=11.0, end=1.0, epochs=2) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="epoch"):
        temperature_at(-1)
    with pytest.raises(ValueError, match="epochs"):
        temperature_at(1, epochs=0)


def test_set_temperature_reaches_every_odconv_and_changes_outputs() -> None:
    model = torch.nn.Sequential(ODConv2d(4, 6, 3, padding=1), torch.nn.ReLU(), ODConv2d(6, 6, 1, kernel_num=2))
    model.eval()
    x = torch.randn(2, 4, 6, 6)
    y1 = model(x)
    assert set_temperature(model, 7.0) == 2
    assert all(m.temperature == 7.0 for m in model if isinstance(m, ODConv2d))
    assert not torch.allclose(model(x), y1)
    with pytest.raises(ValueError, match="temperature"):
        set_temperature(model, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        ODConv2d(4, 6, 3, temperature=float("nan"))


def test_state_dict_round_trip_keeps_temperature() -> None:
    m = _perturbed(CONFIGS[0]).eval()
    m.set_temperature(12.5)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert float(state["attention.temperature"]) == 12.5
    fresh = ODConv2d(**CONFIGS[0], reduction=0.5, min_channel=2).eval()
    assert fresh.temperature == 1.0
    fresh.load_state_dict(state, strict=True)
    assert fresh.temperature == 12.5
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(fresh(x), m(x), atol=0, rtol=0)


# ------------------------------------------------------------------------------------------- bad input
def test_wrong_input_is_a_clear_error() -> None:
    m = ODConv2d(8, 12, 3, padding=1)
    with pytest.raises(ValueError, match="expects 8 input channels.*\\(2, 6, 5, 5\\)"):
        m(torch.randn(2, 6, 5, 5))
    with pytest.raises(ValueError, match="4-D input"):
        m(torch.randn(8, 5, 5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(in_channels=8, out_channels=12, kernel_size=3, groups=3), "divisible by groups"),
        (dict(in_channels=8, out_channels=12, kernel_size=0), "kernel_size"),
        (dict(in_channels=8, out_channels=12, kernel_size=3, kernel_num=0), "kernel_num"),
        (dict(in_channels=8, out_channels=12, kernel_size=3, reduction=0.0), "reduction"),
        (dict(in_channels=8, out_channels=12, kernel_size=3, conv_impl="loop"), "conv_impl"),
        (dict(in_channels=8, out_channels=12, kernel_size=(3, 3)), "kernel_size"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ODConv2d(**kwargs)


# ------------------------------------------------------------------------------------------------ ONNX
def _export(model: torch.nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"},
                                                            "y": {0: "batch", 2: "ho", 3: "wo"}})
    return buffer.getvalue()


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_onnx_export_with_dynamic_batch(kwargs: dict) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = _perturbed(kwargs).eval()
    data = _export(m, torch.randn(2, 8, 12, 10), opset=17)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for shape in [(1, 8, 12, 10), (3, 8, 12, 10), (3, 8, 15, 9)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = m(x).numpy()
        (actual,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5, err_msg=f"{kwargs} {shape}")


@pytest.mark.parametrize("opset", [18, 19])
def test_onnx_export_newer_opsets(opset: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = _perturbed(CONFIGS[0]).eval()
    session = ort.InferenceSession(_export(m, torch.randn(2, 8, 9, 9), opset), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 8, 9, 9)
    with torch.no_grad():
        expected = m(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-5, rtol=1e-5)


def test_torch_export_with_dynamic_batch() -> None:
    m = _perturbed(CONFIGS[0]).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(m, (torch.randn(2, 8, 9, 9),), dynamic_shapes=({0: batch},))
    for b in (1, 3):
        x = torch.randn(b, 8, 9, 9)
        torch.testing.assert_close(program.module()(x), m(x), **TOL)


@pytest.mark.parametrize("unit", [False, True])
@pytest.mark.parametrize("cin, cout, groups, n", [(6, 4, 1, 2), (6, 4, 1, 1), (5, 5, 5, 4), (4, 6, 2, 3)])
def test_init_from_static_reproduces_the_static_conv(cin, cout, groups, n, unit) -> None:
    torch.manual_seed(0)
    conv = ODConv2d(cin, cout, 3, padding=1, groups=groups, kernel_num=n, reduction=0.5, min_channel=2,
                    unit_neutral_gain=unit)
    static = torch.randn(cout, cin // groups, 3, 3)
    conv.init_from_static(static, kernel_noise=0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, cin, 7, 8)
    expected = torch.nn.functional.conv2d(x, static, padding=1, groups=groups)
    for mode in (conv.train, conv.eval):
        mode()
        assert torch.allclose(conv(x), expected, atol=1e-5)
    if n > 1:  # the candidate kernels differ (zero-mean noise), so the kernel attention can learn
        assert (conv.weight[0] - conv.weight[1]).abs().max() > 1e-3
    depthwise = groups == cin == cout
    assert conv.neutral_attention_gain() == (0.25 if depthwise else 0.125)
    # with unit_neutral_gain the kernels keep the static kernel's scale (the mean kernel is the static one)
    scale = 1.0 if unit else 1 / conv.neutral_attention_gain()
    assert torch.allclose(conv.weight.mean(dim=0), static * scale, atol=1e-5)


def test_unit_neutral_gain_is_a_constant_scale_of_the_output() -> None:
    torch.manual_seed(0)
    plain = ODConv2d(4, 6, 3, padding=1, kernel_num=2, reduction=0.5, min_channel=2)
    unit = ODConv2d(4, 6, 3, padding=1, kernel_num=2, reduction=0.5, min_channel=2, unit_neutral_gain=True)
    unit.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(unit(x), plain(x) * 8, atol=1e-5)  # 1 / (0.5 channel * 0.5 filter * 0.5 spatial)
    pointwise = ODConv2d(4, 6, 1, kernel_num=1, unit_neutral_gain=True)  # the static k = 1 path: 1 / 0.25
    reference = ODConv2d(4, 6, 1, kernel_num=1)
    reference.load_state_dict(pointwise.state_dict())
    assert torch.allclose(pointwise(x), reference(x) * 4, atol=1e-5)


def test_init_from_static_checks_the_shape() -> None:
    conv = ODConv2d(4, 4, 3, padding=1, kernel_num=2)
    with pytest.raises(ValueError, match="expected \\(4, 4, 3, 3\\)"):
        conv.init_from_static(torch.zeros(4, 2, 3, 3))


# ------------------------------------------------------------------------------------------ fixed attentions
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_fixing_the_attentions_of_one_image_reproduces_its_output(kwargs: dict) -> None:
    m = _perturbed(kwargs).eval()
    torch.manual_seed(2)
    x = torch.randn(1, 8, 11, 9)
    with torch.no_grad():
        dynamic = m(x)
        m.fix_attentions(m.attentions(x))  # the mean over a batch of one image is that image's attentions
        fixed = m(x)
    assert m.attentions_fixed
    if m.is_static:  # dynamic: conv(x * a_c) * a_f; fixed: a_c, a_f folded into the kernel (same up to rounding)
        torch.testing.assert_close(fixed, dynamic, atol=1e-6, rtol=1e-6)
    else:  # the same folded kernel and the same convolution: bit for bit
        assert torch.equal(fixed, dynamic)


def test_fixed_attentions_make_a_static_conv_until_released() -> None:
    m = _perturbed(CONFIGS[0]).eval()
    torch.manual_seed(3)
    x = torch.randn(3, 8, 11, 9)
    with torch.no_grad():
        dynamic = m(x)
        att = m.attentions(x)
        mean = type(att)(*(t.mean(dim=0, keepdim=True) for t in att))
        m.fix_attentions(mean)
        kernels = m.sample_weights(x)
        fixed = m(x)
        # every sample gets the kernel folded from the mean attentions, which no sample had
        assert torch.equal(kernels[0], kernels[2])
        expected = F.conv2d(x, kernels[0], padding=1)
        torch.testing.assert_close(fixed, expected, **TOL)
        assert not torch.allclose(fixed, dynamic, atol=1e-3)
        assert torch.equal(m.attentions(x).channel[1], mean.channel[0])
        assert "attentions fixed" in repr(m)
        assert set(m.state_dict()) == set(_perturbed(CONFIGS[0]).state_dict())  # not saved with the weights
        m.fix_attentions(None)
        assert not m.attentions_fixed
        assert torch.equal(m(x), dynamic)


def test_fix_attentions_checks_sizes_and_values() -> None:
    m = ODConv2d(8, 12, 3, padding=1, kernel_num=4)
    att = m.attentions(torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match="kernel attention has 3 elements, expected 4"):
        m.fix_attentions(att._replace(kernel=torch.ones(3)))
    with pytest.raises(ValueError, match="channel attention has non-finite values"):
        m.fix_attentions(att._replace(channel=torch.full((8,), float("nan"))))
    depthwise = ODConv2d(8, 8, 3, padding=1, groups=8, kernel_num=1)
    dw_att = depthwise.attentions(torch.randn(1, 8, 5, 5))
    depthwise.fix_attentions(dw_att._replace(filter=None, kernel=None))  # skipped heads are ignored
    assert depthwise.attentions_fixed
