"""The torch-free ONNX runtime: numpy twins of priors / decoding / NMS, parity with FaceDetector, inputs, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from featherface.inference import onnx as rt
from tests.detection_asserts import assert_same_detections_up_to_ties
from featherface.inference.detector import WIDER_PROTOCOL, FaceDetector
from featherface.ops.priors import make_priors
from featherface.inference.images import to_tensor
from featherface.inference.postprocess import Detections, detect_from_outputs, face_scores

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MEETING = "11--Meeting/11_Meeting_Meeting_11_Meeting_Meeting_11_102.jpg"
PARADE = "0--Parade/0_Parade_marchingband_1_465.jpg"
#: Box / landmark agreement (px) between the runtime and the torch detector on real images.
PX_TOL = 1e-3
#: Score agreement between onnxruntime and torch outputs (the networks differ by ~1e-5 in raw outputs).
SCORE_TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- import guard


def test_import_without_torch(tmp_path):
    """featherface.inference.onnx, featherface.inference.peers and the prediction files work with torch made unimportable."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['torchvision'] = None\n"
        "import numpy as np\n"
        "from featherface.inference import onnx as runtime, peers\n"
        "from featherface.eval.prediction_files import read_prediction_file, write_prediction_file\n"
        "dets = runtime.RuntimeDetections(np.array([[1.5, 2.5, 11.5, 22.5]], np.float32),"
        " np.array([0.75], np.float32), np.zeros((1, 5, 2), np.float32))\n"
        "path = write_prediction_file(sys.argv[1] + '/0--Parade/0_Parade_1.txt', dets.to_wider_rows())\n"
        "name, rows = read_prediction_file(path)\n"
        "assert rows.tolist() == [[1, 2, 10, 20, 0.75]], rows\n"
        "assert sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------ bad ONNX files


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _relu_model() -> onnx.ModelProto:
    """A one-node ONNX model of another kind (input 'x' -> Relu -> 'y')."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _constant_outputs_model(priors: int, loc_width: int = 4) -> onnx.ModelProto:
    """FeatherFace's names and dynamic input, but outputs of a constant size (P = ``priors``)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 3, "H", "W"])
    nodes, outputs = [], []
    for name, width in (("loc", loc_width), ("logits", 2), ("landmarks", 10)):
        value = helper.make_tensor(f"{name}_value", TensorProto.FLOAT, [1, priors, width], [0.0] * (priors * width))
        nodes.append(helper.make_node("Constant", [], [name], value=value))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, priors, width]))
    graph = helper.make_graph(nodes, "constant", [x], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_of_another_model_is_refused(tmp_path):
    path = _save(_relu_model(), tmp_path / "relu.onnx")
    with pytest.raises(rt.OnnxFormatError, match=r"not a FeatherFace ONNX export: .*relu\.onnx.*'x'"):
        rt.OnnxFaceDetector(path)


def test_onnx_with_wrong_output_width_is_refused(tmp_path):
    path = _save(_constant_outputs_model(7, loc_width=5), tmp_path / "wide.onnx")
    with pytest.raises(rt.OnnxFormatError, match=r"not a FeatherFace ONNX export.*output 'loc' shape \[1, 7, 5\]"):
        rt.OnnxFaceDetector(path)


def test_onnx_outputs_that_do_not_fit_the_priors_are_refused(tmp_path):
    detector = rt.OnnxFaceDetector(_save(_constant_outputs_model(7), tmp_path / "const.onnx"))
    # a 64 x 64 input has P = 2 (8 * 8 + 4 * 4 + 2 * 2) = 168 priors
    with pytest.raises(rt.OnnxFormatError, match=r"output 'loc' has shape \(1, 7, 4\) for a 64x64 input, "
                                                 r"expected \(1, 168, 4\)"):
        detector(np.zeros((64, 64, 3), np.uint8))


def test_unreadable_and_missing_onnx(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(rt.OnnxFormatError, match="garbage.onnx: not a loadable ONNX model"):
        rt.OnnxFaceDetector(garbage)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        rt.OnnxFaceDetector(tmp_path / "missing.onnx")
    with pytest.raises(rt.OnnxFormatError, match="not a loadable ONNX model"):
        rt.OnnxFaceDetector(b"\x00\x01garbage")


def test_empty_input_and_onnxruntime_failures_are_named(tmp_path):
    detector = rt.OnnxFaceDetector(_save(_constant_outputs_model(7), tmp_path / "const.onnx"))
    with pytest.raises(ValueError, match=r"const\.onnx: the input \(1, 3, 0, 0\) is empty"):
        detector.forward(np.zeros((1, 3, 0, 0), np.float32))

    class FailingSession:
        def run(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid input shape: {0,0}\nmore")

    detector.session = FailingSession()
    with pytest.raises(RuntimeError, match=r"const\.onnx: onnxruntime could not run a 64x48 input \(batch 1\): "
                                           r"\[ONNXRuntimeError\] : 2 : INVALID_ARGUMENT : Invalid input shape"):
        detector.forward(np.zeros((1, 3, 64, 48), np.float32))
    with pytest.raises(rt.ImageError, match=r"got None instead of an image \(cv2\.imread returns None"):
        detector(None)


def test_cuda_fallback_to_cpu_is_reported(tmp_path, monkeypatch, caplog):
    """onnxruntime runs on the CPU when the CUDA provider is missing; the runtime says so (mocked provider list, so
    the test behaves the same with or without a GPU)."""
    import onnxruntime as ort

    real = ort.InferenceSession

    class CpuOnly(real):  # type: ignore[misc, valid-type]
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", lambda source, sess_options=None, providers=None:
                        CpuOnly(source, sess_options=sess_options, providers=["CPUExecutionProvider"]))
    path = _save(_constant_outputs_model(7), tmp_path / "const.onnx")
    with caplog.at_level("WARNING", logger="featherface.inference.sessions"):
        rt.OnnxFaceDetector(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(messages) == 1
    assert messages[0].startswith(f"{path}: CUDAExecutionProvider asked for but not available; running on "
                                  "CPUExecutionProvider instead")
    assert "onnxruntime-gpu" in messages[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="featherface.inference.sessions"):
        rt.OnnxFaceDetector(path)  # the CPU was asked for: nothing to report
    assert not caplog.records


# ----------------------------------------------------------------------------- real model (V1 checkpoint)


@pytest.fixture(scope="module")
def v1_torch(v1_weights: Path) -> FaceDetector:
    return FaceDetector.from_pretrained("featherface_v1", v1_weights, settings=WIDER_PROTOCOL, device="cpu")


@pytest.fixture(scope="module")
def v1_onnx(v1_torch: FaceDetector, tmp_path_factory) -> Path:
    """The V1 checkpoint exported by featherface.deploy.export (dynamic axes, opset 19)."""
    export = pytest.importorskip("featherface.deploy.export")
    path = tmp_path_factory.mktemp("runtime") / "featherface_v1.onnx"
    return export.export_onnx(v1_torch.model, path, check=False)


@pytest.fixture(scope="module")
def v1_runtime(v1_onnx: Path) -> rt.OnnxFaceDetector:
    return rt.OnnxFaceDetector(v1_onnx, settings=rt.WIDER_SETTINGS, threads=1)


@pytest.fixture(scope="module")
def val_images(widerface_dir: Path) -> Path:
    return widerface_dir / "val" / "images"


def assert_same_detections(ours: rt.RuntimeDetections, ref: Detections, px_tol: float = PX_TOL) -> None:
    assert_same_detections_up_to_ties((ours.boxes, ours.scores, ours.landmarks), (ref.boxes, ref.scores, ref.landmarks),
                                      px_tol=px_tol, score_tol=SCORE_TOL)


@pytest.mark.parametrize("name", [MEETING, PARADE])
def test_runtime_matches_face_detector_on_real_images(name, val_images, v1_torch, v1_runtime):
    path = val_images / name
    ours = v1_runtime(path)
    ref = v1_torch(path)
    assert len(ref) > 5
    assert_same_detections(ours, ref)


def test_postprocessing_is_exact_on_real_outputs(val_images, v1_runtime):
    """Fed the same network outputs, the numpy and torch post-processing keep the same detections in the same order."""
    image, _ = v1_runtime.prepare(val_images / PARADE)
    height, width = image.shape[:2]
    loc, logits, landmarks = v1_runtime.forward(rt.to_network_input(image, rt.MEAN_BGR))
    scores = rt.face_scores(logits[0])
    priors = rt.make_priors(height, width)
    ours = rt.detect_from_outputs(loc[0], scores, landmarks[0], priors, (height, width), rt.WIDER_SETTINGS)
    ref = detect_from_outputs(torch.from_numpy(loc[0]), torch.from_numpy(scores), torch.from_numpy(landmarks[0]),
                              torch.from_numpy(priors), (height, width))
    assert len(ours) == len(ref) > 100
    assert np.array_equal(ours.scores, ref.scores.numpy())
    np.testing.assert_allclose(ours.boxes, ref.boxes.numpy(), rtol=0, atol=1e-4)


def test_long_side_matches_face_detector(val_images, v1_torch, v1_runtime, v1_onnx):
    image = cv2.imread(str(val_images / MEETING))
    ours = rt.OnnxFaceDetector(v1_onnx, settings=rt.WIDER_SETTINGS, long_side=320, threads=1)(image)
    small = FaceDetector(v1_torch.model, WIDER_PROTOCOL, device="cpu", long_side=320)
    assert_same_detections(ours, small(image))


def test_inputs_like_face_detector(val_images, v1_runtime):
    bgr = cv2.resize(cv2.imread(str(val_images / MEETING)), (256, 178))
    ref = v1_runtime(bgr)
    assert len(ref) > 0
    rgb = v1_runtime(np.ascontiguousarray(bgr[:, :, ::-1]), color="rgb")
    assert np.array_equal(rgb.boxes, ref.boxes)
    rgba = v1_runtime(np.concatenate((bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)), axis=2))
    assert np.array_equal(rgba.boxes, ref.boxes)
    as_float = v1_runtime(bgr.astype(np.float32) / 255)
    assert np.array_equal(as_float.boxes, ref.boxes)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(v1_runtime(gray).boxes, v1_runtime(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)).boxes)
    many = v1_runtime([bgr, bgr[:100, :150]])
    assert isinstance(many, list) and len(many) == 2
    assert np.array_equal(many[0].boxes, ref.boxes)


def test_bad_inputs_name_the_problem(tmp_path, v1_runtime):
    with pytest.raises(rt.ImageError, match="image 0: unsupported dtype int32"):
        v1_runtime(np.zeros((32, 32, 3), np.int32))
    with pytest.raises(rt.ImageError, match=r"image 0: expected shape .* got \(32, 32, 2\)"):
        v1_runtime(np.zeros((32, 32, 2), np.uint8))
    with pytest.raises(rt.ImageError, match="channels first"):
        v1_runtime(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(rt.ImageError, match=r"image 1: float images must hold values in \[0, 1\]"):
        v1_runtime([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 200.0, np.float32)])
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        v1_runtime(tmp_path / "nowhere.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    with pytest.raises(rt.ImageError, match="corrupt.jpg: not a decodable image"):
        v1_runtime(corrupt)


def test_fixed_size_export_fits_and_pads(tmp_path, val_images, v1_torch):
    """A dynamic=False export: images are fitted into its size, padded with the mean, mapped back."""
    export = pytest.importorskip("featherface.deploy.export")
    path = export.export_onnx(v1_torch.model, tmp_path / "fixed.onnx", dynamic=False, input_size=(160, 224),
                              check=False)
    fixed = rt.OnnxFaceDetector(path, settings=rt.WIDER_SETTINGS, threads=1)
    assert fixed.fixed_size == (160, 224)
    image = cv2.imread(str(val_images / MEETING))  # 713 x 1024 -> 156 x 224, padded to 160 x 224
    ours = fixed(image)
    padded, scale = rt.fit_and_pad(image, (160, 224), rt.MEAN_BGR)
    assert padded.shape == (160, 224, 3) and np.all(padded[156:] == rt.MEAN_BGR)
    np.testing.assert_allclose(scale, (1024 / 224, 713 / 156))
    with torch.inference_mode():  # the torch reference: same network input, same scale before NMS
        loc, logits, landmarks = v1_torch.model(to_tensor(padded)[None])
    ref = detect_from_outputs(loc[0], face_scores(logits[0]), landmarks[0], make_priors(160, 224), (160, 224),
                              scale=scale)
    assert len(ref) > 0
    assert_same_detections(ours, ref, px_tol=1e-2)
    with pytest.raises(ValueError, match="fixed input size"):
        rt.OnnxFaceDetector(path, long_side=320)
