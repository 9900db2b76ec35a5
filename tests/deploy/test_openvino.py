"""The OpenVINO backend (optional extra): the DeformConv mapping and whole exports against onnxruntime."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

pytest.importorskip("openvino", reason="the OpenVINO backend is an optional extra: pip install 'featherface[openvino]'")

from featherface.deploy import export as ex  # noqa: E402
from featherface.models.registry import create_model  # noqa: E402
from featherface.deploy.onnx_ops import register_deform_conv_symbolic  # noqa: E402
from featherface.deploy.openvino import OpenVinoSession  # noqa: E402
from featherface.inference.onnx import OnnxFaceDetector, WIDER_SETTINGS  # noqa: E402
from tests.detection_asserts import assert_same_detections_up_to_ties  # noqa: E402
from tests.deploy.test_export import randomised  # noqa: E402


class _Deform(nn.Module):
    def __init__(self, cin, cout, k, stride, padding, dilation, groups, use_mask, bias):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, *k, generator=generator))
        self.bias = nn.Parameter(torch.randn(cout, generator=generator)) if bias else None
        self.stride, self.padding, self.dilation, self.use_mask = stride, padding, dilation, use_mask

    def forward(self, x, offset, mask):
        return torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                                             self.dilation, mask if self.use_mask else None)


@pytest.mark.parametrize(
    "k, stride, padding, dilation, groups, offset_groups, use_mask, bias",
    [
        ((3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True),    # the SSH case (bias: the folded BatchNorm)
        ((3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, False),
        ((3, 3), (2, 1), (0, 1), (1, 1), 1, 1, True, True),    # anisotropic stride and padding
        ((3, 2), (1, 1), (2, 1), (2, 1), 1, 1, True, True),    # rectangular kernel, dilation
        ((3, 3), (1, 1), (1, 1), (1, 1), 2, 3, True, True),    # weight groups, offset groups
        ((3, 3), (1, 2), (1, 1), (1, 1), 1, 2, False, True),   # DCNv1 (no mask)
    ],
)
def test_deform_conv_mapping_matches_onnxruntime(k, stride, padding, dilation, groups, offset_groups, use_mask,
                                                 bias):
    cin, cout, h, w = 6, 4, 11, 9
    module = _Deform(cin, cout, k, stride, padding, dilation, groups, use_mask, bias).eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, cin, h, w, generator=generator)
    oh = (h + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    taps = offset_groups * k[0] * k[1]
    # fractional offsets of several pixels: many samples fall in the border band (-1, 0), where OpenVINO's
    # default interpolation differs from ONNX's
    offset = 2.0 * torch.randn(1, 2 * taps, oh, ow, generator=generator)
    mask = 2.0 * torch.rand(1, taps, oh, ow, generator=generator)
    buffer = io.BytesIO()
    register_deform_conv_symbolic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x, offset, mask), buffer, dynamo=False, opset_version=19,
                          input_names=["x", "offset", "mask"])
    feeds = {"x": x.numpy(), "offset": offset.numpy()}
    if use_mask:
        feeds["mask"] = mask.numpy()
    expected = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = OpenVinoSession(buffer.getvalue(), threads=1).run(None, feeds)[0]
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)
    with torch.no_grad():  # and both are torchvision's
        np.testing.assert_allclose(got, module(x, offset, mask).numpy(), atol=2e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, object]:
    """Fused batch-1 exports of three tiny models (deformable SSH with ODConv sites, ODConv SSH, plain trunk)."""
    folder = tmp_path_factory.mktemp("ov")
    paths = {}
    for i, name in enumerate(("featherface_odconv4", "featherface_odconv_ssh", "featherface_v1")):
        torch.manual_seed(i)
        model = randomised(create_model(name, width=16, bifpn_repeats=1), seed=i)
        paths[name] = ex.export_onnx(model, folder / f"{name}.onnx", input_size=(64, 96), check=False)
    return paths


@pytest.mark.parametrize("name", ["featherface_odconv4", "featherface_odconv_ssh", "featherface_v1"])
def test_whole_export_matches_onnxruntime_at_two_sizes(name, exports):
    session = OpenVinoSession(exports[name], threads=1)
    reference = ort.InferenceSession(str(exports[name]), providers=["CPUExecutionProvider"])
    assert [a.name for a in session.get_outputs()] == ["loc", "logits", "landmarks"]
    assert session.get_inputs()[0].shape[:2] == [1, 3]
    assert "featherface.priors" in session.get_modelmeta().custom_metadata_map
    rng = np.random.default_rng(0)
    for h, w in ((64, 96), (97, 61)):
        x = (rng.integers(0, 256, (1, 3, h, w)) - 117.0).astype(np.float32)
        outputs = session.run(["loc", "logits", "landmarks"], {"input": x})
        for got, ref in zip(outputs, reference.run(None, {"input": x})):
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_detector_backend_openvino_same_detections(exports):
    image = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    settings = dict(settings=WIDER_SETTINGS, threads=1)
    ref = OnnxFaceDetector(exports["featherface_v1"], **settings)(image)
    detector = OnnxFaceDetector(exports["featherface_v1"], backend="openvino", **settings)
    got = detector(image)
    assert detector.backend == "openvino" and len(ref) > 0
    assert_same_detections_up_to_ties((got.boxes, got.scores, got.landmarks),
                                      (ref.boxes, ref.scores, ref.landmarks))
    with pytest.raises(ValueError, match="backend"):
        OnnxFaceDetector(exports["featherface_v1"], backend="tensorrt")


def test_static_input_shape(exports):
    session = OpenVinoSession(exports["featherface_odconv_ssh"], threads=1, input_shape=(1, 3, 64, 96))
    assert session.get_inputs()[0].shape == [1, 3, 64, 96]
