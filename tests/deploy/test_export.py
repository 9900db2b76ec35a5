"""ONNX / TorchScript export: the DeformConv symbolic, parity with eager, dynamic shapes, errors, atomic writes."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

from featherface.deploy import export as ex
from featherface.deploy import torchscript
from featherface.deploy.contract import ExportError
from featherface.deploy.parity import check_parity, detect_format, load_exported
from tests.detection_asserts import assert_same_detections_up_to_ties
from featherface.inference.images import read_image, to_tensor
from featherface.models.loading import load_weights
from featherface.models.registry import create_model
from featherface.nn.odconv import ODConv2d
from featherface.deploy.onnx_ops import register_deform_conv_symbolic
from featherface.ops.priors import make_priors
from featherface.inference.postprocess import detect_from_outputs, face_scores

TINY_NAMES = ("featherface_none", "featherface_cbam", "featherface_odconv")
#: Further models of the fused (batch-1) export tests: kernel attention at the sites, ODConv / plain SSH.
FUSED_EXTRA = ("featherface_odconv4", "featherface_odconv_ssh", "featherface_plain_ssh")
TINY_SIZES = ((1, 64, 96), (3, 97, 61))
RAW_ATOL = 1e-4
#: A real WIDER val image with an odd height (369 x 1024), and a second one for the batch.
V1_IMAGES = ("0--Parade/0_Parade_marchingband_1_653.jpg", "0--Parade/0_Parade_Parade_0_664.jpg")


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads make the deformable conv several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every parameter and BN statistic (non-zero deformable offsets and masks, active ODConv scale)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=generator))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=generator))
    return model.eval()


def inputs_for(sizes, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (b, 3, h, w), generator=generator).float() - 120.0 for b, h, w in sizes]


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, nn.Module]:
    models = {}
    for i, name in enumerate(TINY_NAMES):
        torch.manual_seed(i)
        models[name] = randomised(create_model(name, width=16, bifpn_repeats=1), seed=i)
    return models


def wider_detections(outputs, height: int, width: int):
    """Per-image detections of raw outputs with the WIDER protocol (0.02, top 5000, NMS 0.4, keep 750)."""
    loc, logits, landmarks = outputs
    priors = make_priors(height, width)
    return [
        detect_from_outputs(loc[b], face_scores(logits[b]), landmarks[b], priors, (height, width),
                            score_threshold=0.02, pre_nms_top_k=5000, nms_iou=0.4, keep_top_k=750)
        for b in range(loc.shape[0])
    ]


def assert_same_detections(exported_outputs, eager_outputs, height: int, width: int) -> int:
    """Same detections (count and order up to near-tied scores), boxes / landmarks within 1e-3 px, scores within
    1e-5. Returns the count."""
    total = 0
    pairs = zip(wider_detections(exported_outputs, height, width), wider_detections(eager_outputs, height, width))
    for got, ref in pairs:
        assert_same_detections_up_to_ties(
            (got.boxes, got.scores, got.landmarks), (ref.boxes, ref.scores, ref.landmarks)
        )
        total += len(ref)
    return total


# ------------------------------------------------------------------------------------ DeformConv symbolic
class _Deform(nn.Module):
    def __init__(self, cin, cout, k, stride, padding, dilation, groups, use_mask):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, *k, generator=generator))
        self.bias = nn.Parameter(torch.randn(cout, generator=generator))
        self.stride, self.padding, self.dilation, self.use_mask = stride, padding, dilation, use_mask

    def forward(self, x, offset, mask):
        return torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                                             self.dilation, mask if self.use_mask else None)


@pytest.mark.parametrize(
    "k, stride, padding, dilation, groups, offset_groups, use_mask",
    [
        ((3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True),   # the SSH case
        ((3, 3), (2, 1), (0, 1), (1, 1), 1, 1, True),   # anisotropic stride and padding
        ((3, 2), (1, 1), (2, 1), (2, 1), 1, 1, True),   # rectangular kernel, dilation
        ((3, 3), (1, 1), (1, 1), (1, 1), 2, 3, True),   # weight groups, offset groups
        ((3, 3), (1, 2), (1, 1), (1, 1), 1, 2, False),  # DCNv1 (no mask)
    ],
)
def test_deform_conv_symbolic_matches_torchvision(k, stride, padding, dilation, groups, offset_groups, use_mask):
    cin, cout = 6, 4
    module = _Deform(cin, cout, k, stride, padding, dilation, groups, use_mask).eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, cin, 11, 9, generator=generator)
    oh = (11 + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    ow = (9 + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    taps = offset_groups * k[0] * k[1]
    offset = 2.0 * torch.randn(2, 2 * taps, oh, ow, generator=generator)  # fractional, several pixels
    mask = 2.0 * torch.rand(2, taps, oh, ow, generator=generator)
    with torch.no_grad():
        expected = module(x, offset, mask)
    buffer = io.BytesIO()
    register_deform_conv_symbolic()
    register_deform_conv_symbolic()  # idempotent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(module, (x, offset, mask), buffer, dynamo=False, opset_version=19,
                          input_names=["x", "offset", "mask"])
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    (node,) = [n for n in proto.graph.node if n.op_type == "DeformConv"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"dilations": list(dilation), "group": groups, "kernel_shape": list(k),
                     "offset_group": offset_groups, "pads": [padding[0], padding[1]] * 2, "strides": list(stride)}
    assert len(node.input) == (5 if use_mask else 4)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    feeds = {"x": x.numpy(), "offset": offset.numpy()}
    if use_mask:
        feeds["mask"] = mask.numpy()
    got = torch.from_numpy(session.run(None, feeds)[0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The offsets matter: swapping each (y, x) pair gives a clearly different result.
    swapped = offset.reshape(2, taps, 2, oh, ow).flip(2).reshape_as(offset)
    with torch.no_grad():
        assert (module(x, swapped, mask) - got).abs().max() > 1e-1


# ------------------------------------------------------------------------------------------- tiny models
@pytest.mark.parametrize("name", TINY_NAMES)
def test_onnx_tiny_models_parity_dynamic(name, tiny_models, tmp_path):
    model = tiny_models[name]
    path = ex.export_onnx(model, tmp_path / f"{name}.onnx", input_size=(64, 96), dynamic_batch=True)
    assert path == tmp_path / f"{name}.onnx" and path.is_file()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 19
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("DeformConv") == 15  # 5 per SSH, 3 levels
    (graph_input,) = proto.graph.input
    assert graph_input.name == "input"
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["loc", "logits", "landmarks"]
    for out in proto.graph.output:
        assert [d.dim_param for d in out.type.tensor_type.shape.dim][:2] == ["batch", "priors"]

    # batch 1 at the export size, batch 3 at another (odd) size: raw outputs and final detections
    runner = load_exported(path, threads=1)
    for x in inputs_for(TINY_SIZES):
        with torch.no_grad():
            eager, got = model(x), runner(x)
        for e, g in zip(eager, got):
            assert g.shape == e.shape
            assert (g - e).abs().max() <= RAW_ATOL
        assert assert_same_detections(got, eager, x.shape[2], x.shape[3]) > 0
    parity = check_parity(model, path, inputs_for(TINY_SIZES, seed=5), threads=1)
    assert set(parity) == {"loc", "logits", "landmarks"}
    assert max(parity.values()) <= RAW_ATOL


@pytest.mark.parametrize("name", TINY_NAMES)
def test_torchscript_tiny_models_other_sizes(name, tiny_models, tmp_path):
    model = tiny_models[name]
    path = torchscript.export_torchscript(model, tmp_path / f"{name}.pt", input_size=(64, 96))
    traced = load_exported(path)
    assert isinstance(traced, torch.jit.ScriptModule)
    # traced at 1 x 64 x 96; run at other batch sizes and sizes (BiFPN resize / pool follow the input)
    for x in inputs_for(TINY_SIZES + ((2, 33, 17), (1, 160, 128))):
        with torch.no_grad():
            eager, got = model(x), traced(x)
        for e, g in zip(eager, got):
            assert g.shape == e.shape
            assert (g - e).abs().max() <= RAW_ATOL
        assert_same_detections(got, eager, x.shape[2], x.shape[3])
    extra = {torchscript.TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra[torchscript.TORCHSCRIPT_METADATA])
    assert json.loads(meta["featherface.config"])["width"] == 16


def test_odconv_export_has_dynamic_batch_without_grouped_conv(tiny_models, tmp_path):
    """The ODConv blocks export their batch-independent formulation: no Conv node with a batch-sized group count."""
    model = tiny_models["featherface_odconv"]
    path = ex.export_onnx(model, tmp_path / "odconv.onnx", input_size=(32, 32), batch_size=2, check=False,
                          dynamic_batch=True)
    proto = onnx.load(str(path))
    assert "MatMul" in {n.op_type for n in proto.graph.node}
    runner = load_exported(path, threads=1)
    for batch in (1, 4):  # traced at batch 2
        x = inputs_for([(batch, 40, 56)], seed=batch)[0]
        with torch.no_grad():
            diffs = [(g - e).abs().max() for g, e in zip(runner(x), model(x))]
        assert max(diffs) <= RAW_ATOL


@pytest.fixture(scope="module")
def fused_models(tiny_models) -> dict[str, nn.Module]:
    """The tiny models plus the per-site-kernel ODConv model and the two SSH variants."""
    models = dict(tiny_models)
    for i, name in enumerate(FUSED_EXTRA, start=len(TINY_NAMES)):
        torch.manual_seed(i)
        models[name] = randomised(create_model(name, width=16, bifpn_repeats=1), seed=i)
    return models


def _weight_is_computed(proto: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """True for a Conv whose weight is a graph value, not an initializer or constant."""
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return node.input[1] not in constants


@pytest.mark.parametrize("name", TINY_NAMES + FUSED_EXTRA)
def test_onnx_fused_batch1_matches_eager_at_two_sizes(name, fused_models, tmp_path):
    """The default export (exact rewrites, batch 1, dynamic H and W) against eager PyTorch at two input sizes."""
    model = fused_models[name]
    path = ex.export_onnx(model, tmp_path / f"{name}.onnx", input_size=(64, 96))
    proto = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, "height", "width"]
    ops = [n.op_type for n in proto.graph.node]
    deformable = model.config.context_conv == "deformable"
    assert ops.count("DeformConv") == (15 if deformable else 0)
    assert "BatchNormalization" not in ops  # folded into the deformable convs and the ODConv kernels
    odconvs = sum(isinstance(m, ODConv2d) for m in model.modules())
    computed = [n for n in proto.graph.node if n.op_type == "Conv" and _weight_is_computed(proto, n)]
    # every ODConv site is one Conv whose kernel is computed (no im2col + MatMul); in an ODConv SSH the five
    # ODConvs become three Convs (the two on x and the two on r share one)
    dense = 15 if model.config.context_conv == "odconv" else 0
    assert len(computed) == odconvs - dense + dense * 3 // 5
    # one attention branch (one sigmoid over all its gates, no softmax) per group of SSH ODConvs on one input
    if dense:
        ssh_sigmoids = [n for n in proto.graph.node if n.op_type == "Sigmoid" and n.name.startswith("/context")]
        assert len(ssh_sigmoids) == 9 and "Softmax" not in ops
    meta = {p.key: p.value for p in proto.metadata_props}
    fused = json.loads(meta["featherface.fused"])
    assert fused["deformable"] == (15 if deformable else 0) and fused["kept"] == []
    runner = load_exported(path, threads=1)
    assert runner.fixed_batch == 1
    for x in inputs_for(((1, 64, 96), (1, 97, 61)), seed=7):
        with torch.no_grad():
            eager, got = model(x), runner(x)
        for e, g in zip(eager, got):
            assert g.shape == e.shape and (g - e).abs().max() <= RAW_ATOL
        assert_same_detections(got, eager, x.shape[2], x.shape[3])
    # a batch runs one sample at a time through the batch-1 file
    x = inputs_for(((3, 40, 56),), seed=8)[0]
    with torch.no_grad():
        assert max((g - e).abs().max() for g, e in zip(runner(x), model(x))) <= RAW_ATOL


@pytest.mark.parametrize("name", ["featherface_odconv4", "featherface_odconv_ssh"])
def test_dynamic_batch_export_of_odconv_models(name, fused_models, tmp_path):
    """dynamic_batch=True: the batch-independent ODConv graph (no computed-kernel Conv) with the deformable-conv
    rewrites; batch 1 and 3 at two sizes against eager PyTorch."""
    model = fused_models[name]
    path = ex.export_onnx(model, tmp_path / f"{name}.onnx", input_size=(48, 64), dynamic_batch=True)
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not [n for n in proto.graph.node if n.op_type == "Conv" and _weight_is_computed(proto, n)]
    fused = json.loads({p.key: p.value for p in proto.metadata_props}["featherface.fused"])
    assert len(fused["kept"]) == (5 if name == "featherface_odconv4" else 15)
    runner = load_exported(path, threads=1)
    for x in inputs_for(((1, 48, 64), (3, 61, 37)), seed=9):
        with torch.no_grad():
            assert max((g - e).abs().max() for g, e in zip(runner(x), model(x))) <= RAW_ATOL


def test_fused_export_is_smaller_than_unfused(fused_models, tmp_path):
    """fuse=False keeps today's graph (BatchNormalization after each DeformConv, ODConv by MatMul / slices);
    the fused one has fewer nodes and no BatchNormalization, and both match the eager model."""
    model = fused_models["featherface_odconv"]
    plain = onnx.load(str(ex.export_onnx(model, tmp_path / "plain.onnx", input_size=(48, 64), fuse=False)))
    fused = onnx.load(str(ex.export_onnx(model, tmp_path / "fused.onnx", input_size=(48, 64))))
    plain_ops = [n.op_type for n in plain.graph.node]
    fused_ops = [n.op_type for n in fused.graph.node]
    assert plain_ops.count("BatchNormalization") == 15 + 6  # after each DeformConv, in each ODConv attention branch
    assert "BatchNormalization" not in fused_ops
    assert len(fused_ops) < len(plain_ops)
    assert json.loads({p.key: p.value for p in plain.metadata_props}["featherface.fused"]) is None


def test_onnx_metadata_and_opset_20(tiny_models, tmp_path):
    model = tiny_models["featherface_none"]
    path = ex.export_onnx(model, tmp_path / "none.onnx", opset=20, input_size=(32, 48))
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 20
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["featherface.config"]) == model.config.to_dict()
    assert json.loads(meta["featherface.priors"])["steps"] == [8, 16, 32]
    assert json.loads(meta["featherface.opset"]) == 20


def test_static_export_has_fixed_shape(tiny_models, tmp_path):
    model = tiny_models["featherface_cbam"]
    path = ex.export_onnx(model, tmp_path / "static.onnx", dynamic=False, input_size=(48, 40), batch_size=2)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 48, 40]
    parity = check_parity(model, path, inputs_for([(2, 48, 40)]))
    assert max(parity.values()) <= RAW_ATOL


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("opset", [11, 17, 18])
def test_opset_below_19_is_refused_with_reason(opset, tiny_models, tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=rf"opset {opset} .*deformable.*DeformConv.*19"):
        ex.export_onnx(tiny_models["featherface_none"], target, opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_bad_opset_and_sizes(tiny_models, tmp_path):
    model = tiny_models["featherface_none"]
    with pytest.raises(ValueError, match="above"):
        ex.export_onnx(model, tmp_path / "a.onnx", opset=ex.max_onnx_opset() + 1)
    with pytest.raises(TypeError, match="opset"):
        ex.export_onnx(model, tmp_path / "a.onnx", opset="19")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_size"):
        ex.export_onnx(model, tmp_path / "a.onnx", input_size=(64,))
    with pytest.raises(ValueError, match="batch_size"):
        torchscript.export_torchscript(model, tmp_path / "a.pt", batch_size=0)
    with pytest.raises(ValueError, match="suffix"):
        ex.export_model(model, tmp_path / "a.bin")
    with pytest.raises(ValueError, match="do not apply to TorchScript"):
        ex.export_model(model, tmp_path / "a.pt", opset=19)
    assert list(tmp_path.iterdir()) == []


def test_failed_check_leaves_destination_untouched(tiny_models, tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def failing_check(*args, **kwargs):
        raise ExportError("simulated parity failure")

    monkeypatch.setattr(ex, "self_check", failing_check)
    monkeypatch.setattr(torchscript, "self_check", failing_check)
    for export in (ex.export_onnx, torchscript.export_torchscript):
        with pytest.raises(ExportError, match="simulated"):
            export(tiny_models["featherface_none"], target, input_size=(32, 32))
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_export_does_not_touch_the_model(tmp_path):
    model = randomised(create_model("featherface_odconv", width=16, bifpn_repeats=1)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex.export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), check=False)
    torchscript.export_torchscript(model, tmp_path / "m.pt", input_size=(32, 32), check=False)
    assert model.training and all(p.requires_grad for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_check_parity_sees_a_changed_model(tiny_models, tmp_path):
    model = tiny_models["featherface_none"]
    path = ex.export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), check=False)
    changed = randomised(create_model("featherface_none", width=16, bifpn_repeats=1))
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.heads.landmark[0].bias.add_(0.25)  # only the stride-8 landmark outputs move
    parity = check_parity(changed, path, inputs_for([(1, 32, 32)]))
    assert parity["landmarks"] == pytest.approx(0.25, abs=1e-4)
    assert parity["loc"] <= RAW_ATOL and parity["logits"] <= RAW_ATOL
    with torch.no_grad():
        changed.heads.cls[1].bias[0] = float("nan")
    assert np.isnan(check_parity(changed, path, inputs_for([(1, 32, 32)]))["logits"])
    with pytest.raises(ValueError, match="inputs is empty"):
        check_parity(model, path, [])
    with pytest.raises(ValueError, match=r"inputs\[0\]"):
        check_parity(model, path, [torch.zeros(3, 32, 32)])


def test_onnx_model_in_face_detector(tiny_models, tmp_path):
    from featherface.inference.detector import FaceDetector

    model = tiny_models["featherface_cbam"]
    path = ex.export_onnx(model, tmp_path / "m.onnx", input_size=(32, 32), check=False)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    settings = dict(score_threshold=0.3, box_voting=False, device="cpu")  # the export alone, no averaging of near ties
    ref = FaceDetector(model, **settings)(image)
    got = FaceDetector(load_exported(path), **settings)(image)
    assert len(got) == len(ref) > 0
    torch.testing.assert_close(got.boxes, ref.boxes, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------ the real V1 checkpoint
@pytest.fixture(scope="module")
def v1(weights_dir: Path) -> nn.Module:
    model = create_model("featherface_v1")
    load_weights(model, weights_dir / "featherface_v1_fork.pth")
    return model.eval()


@pytest.fixture(scope="module")
def v1_inputs(widerface_dir: Path) -> list[torch.Tensor]:
    """One real val image at its original size (batch 1), two images resized to 240 x 320 (batch 2)."""
    paths = [widerface_dir / "val" / "images" / name for name in V1_IMAGES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"val images absent: {missing}")
    images = [read_image(p) for p in paths]
    full = to_tensor(images[0])[None]
    small = torch.stack([to_tensor(cv2.resize(im, (320, 240), interpolation=cv2.INTER_LINEAR)) for im in images])
    return [full, small]


@pytest.fixture(scope="module")
def v1_eager(v1, v1_inputs):
    with torch.no_grad():
        return [v1(x) for x in v1_inputs]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_v1_real_image_parity(fmt, v1, v1_inputs, v1_eager, tmp_path):
    path = ex.export_model(v1, tmp_path / ("v1.onnx" if fmt == "onnx" else "v1.pt"), input_size=(128, 160))
    assert detect_format(path) == fmt
    runner = load_exported(path, threads=1)
    assert v1_inputs[0].shape == (1, 3, 369, 1024)
    faces = 0
    for x, eager in zip(v1_inputs, v1_eager):
        with torch.no_grad():
            got = runner(x)
        for e, g in zip(eager, got):
            assert (g - e).abs().max() <= RAW_ATOL
        faces += assert_same_detections(got, eager, x.shape[2], x.shape[3])
    assert faces > 0


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_export_pretrained_from_our_checkpoint(suffix, tiny_models, tmp_path):
    from featherface.models.checkpoints import save_checkpoint

    model = tiny_models["featherface_odconv"]
    weights = save_checkpoint(tmp_path / "ckpt.pth", model)
    summary = ex.export_pretrained(None, weights, tmp_path / f"out{suffix}", input_size=(32, 32),
                                   parity_sizes=((1, 32, 32), (2, 41, 23)))
    assert summary["format"] == ("onnx" if suffix == ".onnx" else "torchscript")
    assert summary["bytes"] == (tmp_path / f"out{suffix}").stat().st_size
    assert set(summary["parity"]) == {"loc", "logits", "landmarks"}
    assert max(summary["parity"].values()) <= RAW_ATOL
    json.dumps(summary)  # JSON-ready for the CLI / provenance
    with pytest.raises(FileNotFoundError, match="weights"):
        ex.export_pretrained("featherface_none", tmp_path / "missing.pth", tmp_path / f"x{suffix}")


def test_cli_export_options(tiny_models, tmp_path, capsys):
    """featherface export: the fused batch-1 file by default, --dynamic-batch and --no-fuse give today's graph."""
    from featherface.cli import main
    from featherface.models.checkpoints import save_checkpoint

    weights = save_checkpoint(tmp_path / "ckpt.pth", tiny_models["featherface_odconv"])
    for flags, batch, fused in (([], 1, True), (["--dynamic-batch", "--no-fuse"], "batch", False)):
        out = tmp_path / f"m{len(flags)}.onnx"
        assert main(["export", "--weights", str(weights), "--output", str(out), "--input-size", "32", "48",
                     *flags]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["options"]["fuse"] is fused and max(summary["parity"].values()) <= RAW_ATOL
        assert (summary["fused"] or {}).get("odconv_sites") == (6 if fused else None)
        proto = onnx.load(str(out))
        assert (proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param or
                proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value) == batch
        assert ("BatchNormalization" in {n.op_type for n in proto.graph.node}) is not fused
