"""OpenVINO backend: FeatherFace ONNX exports (and the peers' ONNX files) run by OpenVINO on the CPU.

An optional extra (``pip install 'featherface[openvino]'``, OpenVINO 2026.4). OpenVINO's ONNX frontend cannot
convert the ``DeformConv`` node of our exports by itself (in 2026.4 it fails on it and then on every node after
it, whose input rank is then unknown), so :func:`read_onnx` registers a conversion of its own
(:func:`convert_deform_conv`): ONNX ``DeformConv(X, W, offset, B, mask)`` becomes OpenVINO's
``DeformableConvolution`` (opset 8) plus the bias. The two agree on the offset layout (per offset group and
kernel tap, the row then the column offset, in input pixels) and on the attributes, but not on sampling near
the border: OpenVINO's default bilinear interpolation treats a sampling point in (-1, 0) differently from
ONNX / torchvision (outputs off by 0.6 on a randomly initialised V1 export, by up to 2.2 on a trained one).
With ``bilinear_interpolation_pad=True`` it samples the zero padding like them, and the whole model matches
onnxruntime to about 1e-6 (``tests/deploy/test_openvino.py``).

:class:`OpenVinoSession` wraps a compiled model in the small part of the ``onnxruntime.InferenceSession``
interface that :mod:`featherface.inference.onnx` and :mod:`featherface.deploy.benchmark` use (``get_inputs``,
``get_outputs``, ``get_modelmeta``, ``run``), so :class:`featherface.inference.onnx.OnnxFaceDetector` runs on it with
``backend="openvino"``. Inference is fp32 (``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 or AMX units
OpenVINO would otherwise pick a lower precision), latency mode, ``threads`` inference threads.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

__all__ = [
    "OPENVINO_EXTRA",
    "OpenVinoSession",
    "convert_deform_conv",
    "import_openvino",
    "openvino_available",
    "read_onnx",
]

#: How to install the extra (the version this module is tested with).
OPENVINO_EXTRA = "pip install 'featherface[openvino]' (openvino==2026.4.1)"


def import_openvino() -> ModuleType:
    """The ``openvino`` module.

    Raises:
        ImportError: OpenVINO is not installed (the message says how to install it).
    """
    try:
        import openvino
    except ImportError as err:
        raise ImportError(f"the OpenVINO backend needs the openvino package: {OPENVINO_EXTRA}") from err
    return openvino


def openvino_available() -> bool:
    """True when :func:`import_openvino` succeeds."""
    try:
        import_openvino()
    except ImportError:
        return False
    return True


def convert_deform_conv(node: Any) -> list[Any]:
    """OpenVINO frontend conversion of ONNX ``DeformConv`` (opset 19): ``DeformableConvolution`` (opset 8)
    with ``bilinear_interpolation_pad=True``, then ``+ B`` when the node has a bias.

    ``node`` is an ``openvino.frontend.NodeContext``; inputs ``X, W, offset[, B[, mask]]``; attributes
    ``strides``, ``pads`` (begin h, begin w, end h, end w), ``dilations``, ``group``, ``offset_group``.
    """
    import openvino.opset8 as ops8
    import openvino.opset13 as ops13

    count = node.get_input_size()
    x, weight, offset = node.get_input(0), node.get_input(1), node.get_input(2)
    pads = [int(p) for p in node.get_attribute("pads", [0, 0, 0, 0])]
    mask = node.get_input(4) if count > 4 else None
    y = ops8.deformable_convolution(
        x, offset, weight,
        strides=[int(s) for s in node.get_attribute("strides", [1, 1])],
        pads_begin=pads[:2], pads_end=pads[2:],
        dilations=[int(d) for d in node.get_attribute("dilations", [1, 1])],
        mask=mask, auto_pad="explicit",
        group=int(node.get_attribute("group", 1)),
        deformable_group=int(node.get_attribute("offset_group", 1)),
        bilinear_interpolation_pad=True,
    )
    if count > 3:
        bias = ops13.reshape(node.get_input(3), ops13.constant(np.array([1, -1, 1, 1], dtype=np.int64)), False)
        y = ops13.add(y, bias)
    return [y.output(0)]


def read_onnx(source: str | os.PathLike[str] | bytes) -> Any:
    """An ONNX file (path or bytes) as an ``openvino.Model``, with :func:`convert_deform_conv` registered."""
    ov = import_openvino()
    from openvino.frontend import ConversionExtension

    extension = [ConversionExtension("DeformConv", convert_deform_conv)]
    if isinstance(source, (bytes, bytearray, memoryview)):
        with tempfile.TemporaryDirectory(prefix="ff_ov_") as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(bytes(source))
            return ov.convert_model(str(path), extension=extension)
    return ov.convert_model(str(source), extension=extension)


def _onnx_metadata(source: str | os.PathLike[str] | bytes) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (empty when the ``onnx`` package is absent)."""
    try:
        import onnx
    except ImportError:
        return {}
    proto = onnx.load_model_from_string(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) \
        else onnx.load(str(source), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


@dataclass(frozen=True)
class _Arg:
    """What ``onnxruntime.NodeArg`` offers: name, shape (ints, or names for dynamic axes), type string."""

    name: str
    shape: list[int | str]
    type: str = "tensor(float)"


@dataclass(frozen=True)
class _Meta:
    custom_metadata_map: dict[str, str]


def _args(ports: Sequence[Any]) -> list[_Arg]:
    args = []
    for port in ports:
        shape = port.get_partial_shape()
        dims: list[int | str] = [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(shape)]
        args.append(_Arg(port.get_any_name(), dims))
    return args


class OpenVinoSession:
    """An ONNX model compiled by OpenVINO for the CPU, with the ``onnxruntime.InferenceSession`` methods that
    :class:`~featherface.inference.onnx.OnnxFaceDetector` and the benchmark use.

    Args:
        source: ONNX path or bytes (ours, or a peer's).
        threads: ``INFERENCE_NUM_THREADS`` (``None``: OpenVINO's default).
        input_shape: compile for this fixed input shape (faster than a dynamic one in OpenVINO; the benchmark's
            choice for every model, ours and the peers'); ``None`` keeps the file's (dynamic) shape.

    Raises:
        ImportError: OpenVINO is not installed.
    """

    def __init__(self, source: str | os.PathLike[str] | bytes, *, threads: int | None = None,
                 input_shape: Sequence[int] | None = None) -> None:
        ov = import_openvino()
        model = read_onnx(source)
        if input_shape is not None:
            model.reshape([int(v) for v in input_shape])
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._inputs = _args(self.compiled.inputs)
        self._outputs = _args(self.compiled.outputs)
        self._meta = _Meta(_onnx_metadata(source))

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def get_modelmeta(self) -> _Meta:
        return self._meta

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs in the order of ``output_names`` (all outputs when ``None``), as float32 numpy arrays."""
        results = self.request.infer({name: np.ascontiguousarray(v) for name, v in feeds.items()})
        by_name = {port.get_any_name(): value for port, value in results.items()}
        names = [a.name for a in self._outputs] if output_names is None else list(output_names)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"OpenVinoSession.run: no output(s) {missing}; outputs: {sorted(by_name)}")
        return [np.asarray(by_name[n]).copy() for n in names]
