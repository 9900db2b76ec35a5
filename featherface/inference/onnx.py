"""A torch-free FeatherFace detector: an ONNX export run by onnxruntime, with numpy post-processing.

Needs only numpy, OpenCV and onnxruntime (``pip install featherface[runtime]``); importing this module never
imports torch. It mirrors :class:`featherface.inference.detector.FaceDetector` step for step, so that both give the
same detections (same set, same order, boxes within float rounding):

    >>> detector = OnnxFaceDetector("featherface_v1.onnx", settings=WIDER_PROTOCOL)
    >>> dets = detector("group.jpg")                 # one image -> RuntimeDetections
    >>> dets.boxes, dets.scores, dets.landmarks      # (N, 4) xyxy px, (N,), (N, 5, 2) px (numpy)

The ONNX file is what :func:`featherface.deploy.export.export_onnx` writes: input ``input`` ``(B, 3, H, W)``
float32, BGR minus the mean :data:`~featherface.inference.settings.MEAN_BGR`, no scaling; outputs ``loc``
``(B, P, 4)``, ``logits`` ``(B, P, 2)`` and ``landmarks`` ``(B, P, 10)`` (raw regressions against the priors of its
``featherface.priors`` metadata, the defaults of :mod:`featherface.inference.settings` when absent). Images are
read and normalised by :mod:`featherface.inference.images` and post-processed by
:mod:`featherface.inference.np_ops` (the numpy twin of the torch post-processing); the settings are the shared
:class:`~featherface.inference.settings.DetectorSettings`.

Images are run one at a time (a batch of one): a dynamic export accepts any size and ONNX batching brings little
on the CPU. A file exported with a fixed input size (``dynamic=False``) gets every image resized to fit that size
(aspect ratio kept) and padded at the bottom and right with the mean colour (a zero network input); detections
are mapped back to original pixels.

This module also re-exports the names of the torch-free runtime (settings, images, numpy post-processing,
sessions) so that ``from featherface.inference import onnx`` gives all of it in one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from featherface.inference.cache import SizeCache
from featherface.inference.images import (
    ColorOrder,
    ImageError,
    ImageInput,
    LargeImageNotice,
    as_image_list,
    fit_and_pad,
    load_image,
    read_image,
    resize_long_side,
    to_bgr,
    to_network_input,
)
from featherface.inference.np_ops import (
    RuntimeDetections,
    decode_boxes,
    decode_landmarks,
    detect_from_outputs,
    face_scores,
    make_priors,
    nms,
    postprocess_decoded,
    select_candidates,
    to_wider_rows,
)
from featherface.inference.sessions import ModelSource, OnnxFormatError, describe_io, fixed_dim, load_session
from featherface.inference.settings import (
    DEFAULT_MIN_SIZES,
    DEFAULT_STEPS,
    MEAN_BGR,
    VARIANCES,
    WIDER_PROTOCOL,
    WIDER_SETTINGS,
    DetectorSettings,
    RuntimeSettings,
)

__all__ = [
    "MEAN_BGR",
    "DEFAULT_MIN_SIZES",
    "DEFAULT_STEPS",
    "VARIANCES",
    "ImageError",
    "OnnxFormatError",
    "RuntimeDetections",
    "DetectorSettings",
    "WIDER_PROTOCOL",
    "RuntimeSettings",
    "WIDER_SETTINGS",
    "OnnxFaceDetector",
    "read_image",
    "to_bgr",
    "resize_long_side",
    "fit_and_pad",
    "to_network_input",
    "make_priors",
    "decode_boxes",
    "decode_landmarks",
    "face_scores",
    "select_candidates",
    "nms",
    "postprocess_decoded",
    "detect_from_outputs",
    "to_wider_rows",
    "load_session",
    "RuntimeDetector",
]

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_WIDTHS: dict[str, int] = {"loc": 4, "logits": 2, "landmarks": 10}


def _check_featherface_session(session: Any, where: str) -> tuple[int | None, int | None, int | None]:
    """Raise :class:`OnnxFormatError` unless the session has FeatherFace's input and outputs.

    Returns:
        The static batch, height and width of the input (``None`` where dynamic).
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = ("expected one input 'input' (B, 3, H, W) float32 and outputs 'loc' (B, P, 4), 'logits' (B, P, 2), "
                "'landmarks' (B, P, 10)")
    found = f"got inputs [{describe_io(inputs)}] and outputs [{describe_io(outputs)}]"
    problems = []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        problems.append("input name/count")
    else:
        shape = list(inputs[0].shape)
        if inputs[0].type != "tensor(float)":
            problems.append(f"input type {inputs[0].type}")
        if len(shape) != 4 or (fixed_dim(shape[1]) is not None and shape[1] != 3):
            problems.append(f"input shape {shape}")
    by_name = {o.name: o for o in outputs}
    for name, width in OUTPUT_WIDTHS.items():
        out = by_name.get(name)
        if out is None:
            problems.append(f"no output {name!r}")
            continue
        shape = list(out.shape)
        if len(shape) != 3 or (fixed_dim(shape[2]) is not None and shape[2] != width):
            problems.append(f"output {name!r} shape {shape}")
    if problems:
        raise OnnxFormatError(f"not a FeatherFace ONNX export: {where}: {expected}; {found} ({'; '.join(problems)})")
    shape = list(inputs[0].shape)
    return fixed_dim(shape[0]), fixed_dim(shape[2]), fixed_dim(shape[3])


PriorParameters = tuple[tuple[tuple[float, ...], ...], tuple[int, ...], tuple[float, float]]


def _prior_parameters(session: Any, where: str) -> PriorParameters:
    """Min sizes, steps and variances from the ``featherface.priors`` metadata entry (defaults when absent)."""
    meta = session.get_modelmeta().custom_metadata_map
    raw = meta.get("featherface.priors")
    if raw is None:
        return DEFAULT_MIN_SIZES, DEFAULT_STEPS, VARIANCES
    try:
        entry = json.loads(raw)
        min_sizes = tuple(tuple(float(v) for v in level) for level in entry["min_sizes"])
        steps = tuple(int(s) for s in entry["steps"])
        variances = tuple(float(v) for v in entry["variances"])
        if len(min_sizes) != len(steps) or len(variances) != 2:
            raise ValueError("levels or variances of the wrong length")
    except (ValueError, KeyError, TypeError) as err:
        raise OnnxFormatError(f"{where}: unreadable 'featherface.priors' metadata {raw!r}: {err}") from err
    return min_sizes, steps, (variances[0], variances[1])


# -------------------------------------------------------------------------------------------------- detector


class RuntimeDetector:
    """The image loop every torch-free detector shares (:class:`OnnxFaceDetector`, :mod:`featherface.inference.peers`):
    paths / arrays / lists in, ``long_side`` or a fixed network size, :class:`RuntimeDetections` in original pixels.

    A subclass sets :attr:`settings` (and :attr:`fixed_size` / :attr:`pad_value` for a fixed-size network) and
    implements :meth:`detect_array`.
    """

    settings: DetectorSettings
    #: ``(H, W)`` every image is fitted and padded to; ``None``: any size (resized by ``settings.long_side``).
    fixed_size: tuple[int, int] | None = None
    #: BGR colour of the padding of a fixed-size input.
    pad_value: Sequence[float] = (0.0, 0.0, 0.0)
    #: Warns (once) about images too large to run at their original size; ``None``: no warning.
    large_image_notice: LargeImageNotice | None = None

    def prepare(
        self, image: ImageInput, color: ColorOrder = "bgr", where: str = "image"
    ) -> tuple[np.ndarray, tuple[float, float]]:
        """An image (path or array) as the ``(H, W, 3)`` uint8 BGR network image and ``(sx, sy)`` back to
        original pixels (resized by ``long_side``, or fitted and padded for a fixed-size network)."""
        array, name = load_image(image, color, where)
        if self.fixed_size is not None:
            return fit_and_pad(array, self.fixed_size, self.pad_value)
        if self.large_image_notice is not None:
            self.large_image_notice(array.shape[0], array.shape[1], self.settings.long_side, name)
        return resize_long_side(array, self.settings.long_side)

    def detect_array(self, image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> RuntimeDetections:
        """Detections of one prepared ``(H, W, 3)`` uint8 BGR network image; ``scale`` maps back to original
        pixels."""
        raise NotImplementedError

    def detect(
        self, images: ImageInput | Sequence[ImageInput], color: ColorOrder = "bgr"
    ) -> RuntimeDetections | list[RuntimeDetections]:
        """Detect faces.

        Args:
            images: an image path, an ``(H, W[, C])`` array (uint8; grayscale, BGR/RGB or with alpha), or a list
                of them (any sizes).
            color: channel order of array inputs (paths are always decoded correctly).

        Returns:
            One :class:`RuntimeDetections` (original pixels) for a single image, a list of them for a list.

        Raises:
            FileNotFoundError, ImageError: an unreadable path or an unusable array (naming it).
        """
        single, batch = as_image_list(images)
        results = []
        for i, image in enumerate(batch):
            array, scale = self.prepare(image, color, where=f"image {i}")
            results.append(self.detect_array(array, scale))
        return results[0] if single else results

    __call__ = detect


class OnnxFaceDetector(RuntimeDetector):
    """A FeatherFace ONNX export run by onnxruntime: the torch-free twin of
    :class:`featherface.inference.detector.FaceDetector`.

    Args:
        onnx_path: a file written by :func:`featherface.deploy.export.export_onnx` (or its bytes).
        settings: a :class:`~featherface.inference.settings.DetectorSettings` to start from (default: its
            defaults, score 0.5, NMS 0.4 "+1", top 5000, keep 750, original size, box voting on); ``batch_size``
            is not used.
        threads: onnxruntime intra-op threads (``None``: its default).
        providers: onnxruntime execution providers (default CPU).
        backend: ``"onnxruntime"`` (default) or ``"openvino"`` (the optional extra; the ONNX file is converted
            by :mod:`featherface.deploy.openvino`, ``threads`` OpenVINO inference threads, fp32).
        **overrides: settings fields replacing those of ``settings`` (e.g. ``score_threshold=0.3``).

    Raises:
        FileNotFoundError: no such file.
        OnnxFormatError: not an ONNX file, or an ONNX model without FeatherFace's input and outputs.
        ValueError: a bad or unknown setting; ``long_side`` with a fixed-size export.
    """

    def __init__(
        self,
        onnx_path: ModelSource,
        *,
        settings: DetectorSettings | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        backend: str = "onnxruntime",
        **overrides: Any,
    ) -> None:
        self.settings = (settings or DetectorSettings()).updated(**overrides)
        self.source = "<bytes>" if isinstance(onnx_path, (bytes, bytearray, memoryview)) else str(onnx_path)
        if backend == "openvino":
            from featherface.deploy.openvino import OpenVinoSession  # optional extra (featherface[openvino])

            self.session = OpenVinoSession(onnx_path, threads=threads)
        elif backend == "onnxruntime":
            self.session = load_session(onnx_path, threads=threads, providers=providers, what="ONNX model")
        else:
            raise ValueError(f"OnnxFaceDetector: backend must be 'onnxruntime' or 'openvino', got {backend!r}")
        self.backend = backend
        self._batch, height, width = _check_featherface_session(self.session, self.source)
        self.fixed_size = (height, width) if height is not None and width is not None else None
        if (height is None) != (width is None):
            raise OnnxFormatError(f"{self.source}: input height and width must both be fixed or both dynamic, "
                                  f"got {list(self.session.get_inputs()[0].shape)}")
        if self._batch not in (None, 1):
            raise OnnxFormatError(f"{self.source}: fixed batch size {self._batch}; this runtime runs one image at a "
                                  "time (export with dynamic=True or batch_size=1)")
        if self.fixed_size is not None and self.settings.long_side is not None:
            raise ValueError(f"{self.source} has a fixed input size {self.fixed_size}; long_side does not apply "
                             "(every image is resized to fit it)")
        self.pad_value = MEAN_BGR
        self.large_image_notice = LargeImageNotice()
        self.min_sizes, self.steps, self.variances = _prior_parameters(self.session, self.source)
        self._priors = SizeCache(lambda h, w: make_priors(h, w, self.min_sizes, self.steps))
        log.info("loaded %s (input %s)", self.source, list(self.session.get_inputs()[0].shape))

    def __repr__(self) -> str:
        return f"OnnxFaceDetector({self.source!r}, settings={self.settings})"

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the network on a ``(B, 3, H, W)`` float32 input; returns ``loc``, ``logits``, ``landmarks``
        ``(B, P, 4)``, ``(B, P, 2)``, ``(B, P, 10)``, checked against the number of priors of ``H x W``.

        Raises:
            ValueError: an input that is not ``(B, 3, H, W)`` float32, or that is empty.
            RuntimeError: onnxruntime failed (naming the model and the input size).
            OnnxFormatError: outputs whose shapes do not fit FeatherFace's priors.
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.dtype != np.float32:
            raise ValueError(f"forward: expected a (B, 3, H, W) float32 array, got {x.dtype} {x.shape}")
        if min(x.shape) < 1:
            raise ValueError(f"forward: {self.source}: the input {x.shape} is empty; images must have at least "
                             "one pixel (and one image per batch)")
        try:
            loc, logits, landmarks = self.session.run(list(OUTPUT_WIDTHS), {INPUT_NAME: x})
        except Exception as err:  # onnxruntime's own exception types (InvalidArgument, Fail, ...)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeError(f"{self.source}: onnxruntime could not run a {x.shape[2]}x{x.shape[3]} input "
                               f"(batch {x.shape[0]}): {reason}") from err
        batch, _, height, width = x.shape
        p = len(self._priors(height, width))
        for name, out in zip(OUTPUT_WIDTHS, (loc, logits, landmarks)):
            if out.shape != (batch, p, OUTPUT_WIDTHS[name]):
                raise OnnxFormatError(
                    f"not a FeatherFace ONNX export: {self.source}: output {name!r} has shape {out.shape} for a "
                    f"{height}x{width} input, expected {(batch, p, OUTPUT_WIDTHS[name])} (priors: min sizes "
                    f"{self.min_sizes}, steps {self.steps})"
                )
        return loc, logits, landmarks

    def detect_array(self, image: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> RuntimeDetections:
        """Detections of one prepared ``(H, W, 3)`` uint8 BGR network image; ``scale`` maps back to original pixels."""
        height, width = image.shape[:2]
        loc, logits, landmarks = self.forward(to_network_input(image, MEAN_BGR))
        return detect_from_outputs(
            loc[0], face_scores(logits[0]), landmarks[0], self._priors(height, width), (height, width),
            self.settings, scale, self.variances,
        )
