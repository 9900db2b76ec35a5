"""INT8 static quantisation (featherface.deploy.quantize): a tiny FeatherFace exported to ONNX, calibrated on 4 WIDER
training images at 160 px, checked against the float file."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from featherface.deploy.export import export_onnx
from featherface.inference.images import MEAN_BGR, list_images
from featherface.models.registry import create_model
from featherface.deploy.quantize import (
    FLOAT_ONLY_OP_TYPES,
    ImageCalibrationReader,
    calibration_input,
    compare_int8,
    quantize_static_onnx,
)
from featherface.inference.onnx import OnnxFaceDetector, load_session

log = logging.getLogger(__name__)
SIZE = 160


@pytest.fixture(scope="module")
def train_images(widerface_dir: Path) -> list[Path]:
    images = list_images(widerface_dir / "train/images")
    return images[:: max(1, len(images) // 5)][:5]  # 4 for calibration, 1 held out


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("featherface_none", width=16, bifpn_repeats=1).eval()
    # fuse=False: the graph with a BatchNormalization after each DeformConv, which must stay float (the default,
    # fused export folds those BatchNorms into the DeformConv kernels)
    return export_onnx(model, tmp_path_factory.mktemp("q") / "fp32.onnx", input_size=(SIZE, SIZE), fuse=False)


@pytest.fixture(scope="module")
def tiny_int8(tiny_fp32: Path, train_images: list[Path]) -> Path:
    return quantize_static_onnx(tiny_fp32, tiny_fp32.with_name("int8.onnx"), train_images[:4], size=SIZE)


# --------------------------------------------------------------------------------------------- calibration data


def test_calibration_input_is_mean_subtracted_and_padded_with_zero(tmp_path: Path) -> None:
    pixel = np.array([MEAN_BGR[0] + 1, MEAN_BGR[1] + 2, MEAN_BGR[2] + 3], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), np.broadcast_to(pixel, (20, 40, 3)).copy())
    x = calibration_input(tmp_path / "a.png", 80)
    assert x.shape == (1, 3, 80, 80) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :, :20, :40], np.broadcast_to(np.array([1.0, 2.0, 3.0])[:, None, None],
                                                                      (3, 20, 40)))
    assert not x[0, :, 20:, :].any() and not x[0, :, :, 40:].any()  # padding = mean, 0 after subtraction


def test_calibration_input_shrinks_large_images(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "b.png"), np.full((100, 200, 3), 200, np.uint8))
    x = calibration_input(tmp_path / "b.png", 50)  # 100x200 -> 25x50, padded to 50x50
    np.testing.assert_allclose(x[0, 0, :25, :], 200 - MEAN_BGR[0])
    assert not x[0, :, 25:, :].any()


def test_reader_feeds_each_image_once_and_rewinds(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 10, 3), 10 * i, np.uint8))
    reader = ImageCalibrationReader(sorted(tmp_path.glob("*.png")), 32, "input")
    feeds = [reader.get_next() for _ in range(4)]
    assert feeds[3] is None and all(set(f) == {"input"} for f in feeds[:3])
    assert [float(f["input"][0, 0, 0, 0]) for f in feeds[:3]] == [0 - MEAN_BGR[0], 10 - MEAN_BGR[0], 20 - MEAN_BGR[0]]
    reader.rewind()
    assert reader.get_next()["input"][0, 0, 0, 0] == -MEAN_BGR[0]


# ---------------------------------------------------------------------------------------------- quantised file


def test_int8_file_has_qdq_int8_weights_and_loads(tiny_fp32: Path, tiny_int8: Path) -> None:
    model = onnx.load(str(tiny_int8))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) >= 20  # the plain convolutions' kernels
    assert tiny_int8.stat().st_size < 0.75 * tiny_fp32.stat().st_size
    meta = {p.key: p.value for p in model.metadata_props}
    assert "featherface.priors" in meta and '"weights": "int8"' in meta["featherface.quantization"]
    detector = OnnxFaceDetector(tiny_int8, threads=1)  # the runtime accepts it (metadata, inputs, outputs)
    assert detector.fixed_size is None


def test_deform_conv_and_unfused_batchnorm_stay_float(tiny_fp32: Path, tiny_int8: Path) -> None:
    fp32 = onnx.load(str(tiny_fp32))
    model = onnx.load(str(tiny_int8))
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    floats |= {n.output[0] for n in model.graph.node  # Constant nodes holding a float tensor
               if n.op_type == "Constant" and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT}
    deform = [n for n in model.graph.node if n.op_type == "DeformConv"]
    assert len(deform) == sum(n.op_type == "DeformConv" for n in fp32.graph.node) > 0
    # DeformConv(X, W, offset, B, mask) runs in float: its kernel is a float initializer, read directly (its
    # activation inputs come from quantised convolutions through DequantizeLinear, i.e. as float tensors)
    for node in deform:
        assert node.input[1] in floats, f"{node.name}: weight {node.input[1]} is not a float initializer"
    batchnorms = [n for n in model.graph.node if n.op_type in FLOAT_ONLY_OP_TYPES]
    assert batchnorms  # one after each DeformConv
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    for node in batchnorms:  # no Q/DQ pair between a DeformConv and its BatchNormalization
        assert producer[node.input[0]] == "DeformConv", f"{node.name} reads a {producer[node.input[0]]} output"


def test_int8_outputs_track_fp32(tiny_fp32: Path, tiny_int8: Path, train_images: list[Path]) -> None:
    x = calibration_input(train_images[4], SIZE)  # not among the calibration images
    ref = load_session(tiny_fp32, threads=1).run(None, {"input": x})
    out = load_session(tiny_int8, threads=1).run(None, {"input": x})
    for name, a, b in zip(("loc", "logits", "landmarks"), ref, out):
        corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        diff = float(np.abs(a - b).max())
        log.info("%s: correlation %.6f, max abs diff %.2e (fp32 range %.2e)", name, corr, diff, float(np.abs(a).max()))
        assert a.shape == b.shape
        assert corr > 0.9, f"{name}: correlation {corr} of INT8 with fp32 outputs"
        assert 0 < diff < 0.5 * float(np.abs(a).max()), f"{name}: max abs diff {diff}"


def test_excluded_nodes_keep_float_weights(
    tiny_fp32: Path, train_images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = quantize_static_onnx(tiny_fp32, tmp_path / "h.onnx", train_images[:1], size=64, exclude_nodes=("/heads/*",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.onnx"]  # no temporaries left, none in the cwd
    model = onnx.load(str(out))
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    heads = [n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/heads/")]
    others = [n for n in model.graph.node if n.op_type == "Conv" and not n.name.startswith("/heads/")]
    assert len(heads) == 9 and all(n.input[1] in floats for n in heads)  # 3 levels x (box, cls, landmark)
    assert not any(n.input[1] in floats for n in others)


def test_other_calibration_methods_run(tiny_fp32: Path, train_images: list[Path], tmp_path: Path) -> None:
    out = quantize_static_onnx(tiny_fp32, tmp_path / "p.onnx", train_images[:2], size=96, method="percentile",
                               per_channel=False, activations="uint8")
    x = calibration_input(train_images[4], 96)
    ref = load_session(tiny_fp32, threads=1).run(None, {"input": x})[1]
    got = load_session(out, threads=1).run(None, {"input": x})[1]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9


# ------------------------------------------------------------------------------------------------------ errors


def test_missing_model_is_named(tmp_path: Path, train_images: list[Path]) -> None:
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        quantize_static_onnx(tmp_path / "nope.onnx", tmp_path / "o.onnx", train_images[:1])
    assert not (tmp_path / "o.onnx").exists()


def test_no_calibration_images(tiny_fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no calibration images"):
        quantize_static_onnx(tiny_fp32, tmp_path / "o.onnx", [])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        quantize_static_onnx(tiny_fp32, tmp_path / "o.onnx", [tmp_path / "missing.jpg"])
    with pytest.raises(TypeError, match="sequence of image paths"):
        quantize_static_onnx(tiny_fp32, tmp_path / "o.onnx", str(tmp_path / "x.jpg"))
    assert not (tmp_path / "o.onnx").exists()


def test_bad_method_and_size(tiny_fp32: Path, tmp_path: Path, train_images: list[Path]) -> None:
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        quantize_static_onnx(tiny_fp32, tmp_path / "o.onnx", train_images[:1], method="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be an integer >= 32"):
        quantize_static_onnx(tiny_fp32, tmp_path / "o.onnx", train_images[:1], size=8)
    with pytest.raises(ValueError, match="activations must be 'int8' or 'uint8'"):
        quantize_static_onnx(tiny_fp32, tmp_path / "o.onnx", train_images[:1], activations="fp8")  # type: ignore


def test_existing_destination_survives_a_failure(tiny_fp32: Path, tmp_path: Path) -> None:
    dest = tmp_path / "o.onnx"
    dest.write_bytes(b"old")
    not_an_image = tmp_path / "bad.jpg"
    not_an_image.write_bytes(b"not a jpeg")
    with pytest.raises(Exception, match="bad.jpg"):
        quantize_static_onnx(tiny_fp32, dest, [not_an_image], size=64)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg", "o.onnx"]  # no temporary left behind


# -------------------------------------------------------------------------------------------------- comparison


def test_compare_int8_reports_ap_change_speed_and_decision(
    tiny_fp32: Path, tiny_int8: Path, widerface_dir: Path, tmp_path: Path
) -> None:
    val = list_images(widerface_dir / "val/images")[:3]
    subset = tmp_path / "images"
    for path in val:  # a 3-image view of the val set (symlinks, nothing copied)
        (subset / path.parent.name).mkdir(parents=True, exist_ok=True)
        (subset / path.parent.name / path.name).symlink_to(path)
    result = compare_int8(tiny_fp32, tiny_int8, subset, widerface_dir / "val", tmp_path / "work",
                          latency_images=2, latency_runs=3)
    assert set(result["ap"]) == {"fp32", "int8"} and result["num_images"] == {"fp32": 3, "int8": 3}
    for setting, change in result["ap_change_points"].items():
        assert change == pytest.approx(100 * (result["ap"]["int8"][setting] - result["ap"]["fp32"][setting]))
    assert result["ship"] == all(abs(v) <= 1.0 for v in result["ap_change_points"].values())
    for tag in ("fp32", "int8"):
        assert result["latency_ms"][tag]["network_ms"] > 0 and result["latency_ms"][tag]["per_image_ms"] > 0
    assert result["speedup"]["network"] == pytest.approx(
        result["latency_ms"]["fp32"]["network_ms"] / result["latency_ms"]["int8"]["network_ms"])
    assert (tmp_path / "work/pred_int8").is_dir()
    with pytest.raises(FileNotFoundError, match="int8 ONNX model not found"):
        compare_int8(tiny_fp32, tmp_path / "none.onnx", subset, widerface_dir / "val", tmp_path / "w2")
