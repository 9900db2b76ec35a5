"""INT8 static (post-training) quantisation of a FeatherFace ONNX export with onnxruntime, and its go/no-go check.

* :func:`quantize_static_onnx`: ``onnxruntime.quantization.quantize_static`` in QDQ format, calibrated on real
  images preprocessed like the detector (uint8 BGR minus mean (104, 117, 123), fitted into a ``size x size``
  square and padded with the mean, so padding is 0 after the subtraction). Weights and activations are signed
  8-bit (``QInt8``/``QInt8``, "S8S8"): the onnxruntime quantisation guide names S8S8 in QDQ format "the default
  setting for balance of performance and accuracy" and the first choice on CPUs
  (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html, "Data type selection").
  Operators outside onnxruntime's quantisation registry (the SSH's ``DeformConv``) stay float; the op types in
  ``exclude_op_types`` and :data:`FLOAT_ONLY_OP_TYPES`, and the nodes matching ``exclude_nodes``, are excluded
  explicitly.
* :func:`compare_int8`: WIDER Easy / Medium / Hard AP of the float and the INT8 file through the torch-free
  :class:`~featherface.inference.onnx.OnnxFaceDetector` with the WIDER protocol, and their CPU latency (one thread).
  The quantised model ships only when no AP moves by more than :data:`SHIP_TOLERANCE_POINTS`.

Measured on the V1 fork checkpoint (``benchmarks/bench_int8.py``; 32 training images at 640 px; the 233
local val images; 2-core x86 CPU with AVX-512 VNNI, onnxruntime 1.32): full INT8 costs 6 / 6 / 9.6 AP points
(Easy / Medium / Hard, min-max) or 3 / 3.5 / 5 (percentile); the MobileNet backbone is the sensitive part
(kept float: 0.0 / -0.1 / -1.5). No variant is faster than float on one thread (S8S8 about 1.2-1.3x slower,
U8S8 on par): the network is tiny, the deformable convolutions stay float and the Q/DQ pairs cost what the
integer kernels save. Verdict: do not ship INT8 for this model on CPU.

The graph interface is unchanged (input ``(B, 3, H, W)`` float32, outputs ``loc`` / ``logits`` /
``landmarks`` float32), and the ``featherface.*`` metadata of the float file is copied, so the INT8 file is a
drop-in replacement for :class:`~featherface.inference.onnx.OnnxFaceDetector`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from featherface.eval.predict import predict_folder
from featherface.eval.widerface import evaluate_folder
from featherface.inference.images import MEAN_BGR, list_images, read_image
from featherface.inference.onnx import WIDER_SETTINGS, OnnxFaceDetector, fit_and_pad, load_session, to_network_input
from featherface.utils.io import atomic_target

__all__ = [
    "CALIBRATION_METHODS",
    "FLOAT_ONLY_OP_TYPES",
    "SHIP_TOLERANCE_POINTS",
    "ImageCalibrationReader",
    "QuantizationError",
    "calibration_input",
    "compare_int8",
    "measure_onnx_latency",
    "quantize_static_onnx",
]

log = logging.getLogger(__name__)

CalibrationName = Literal["minmax", "percentile", "entropy"]
#: Accepted ``method`` names -> ``onnxruntime.quantization.CalibrationMethod`` member names.
CALIBRATION_METHODS: dict[str, str] = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
#: Op types always kept float besides ``exclude_op_types``: a BatchNormalization left unfused (the one after each
#: DeformConv, which the exporter cannot fold) has no integer kernel in onnxruntime's CPU provider, so Q/DQ pairs
#: around it would only add rounding error and time (and its rank-1 scale cannot take per-channel axis 1).
FLOAT_ONLY_OP_TYPES: tuple[str, ...] = ("BatchNormalization",)
#: Largest |AP change| (points, i.e. AP x 100) on any WIDER setting for which the INT8 model ships.
SHIP_TOLERANCE_POINTS = 1.0


class QuantizationError(RuntimeError):
    """Quantisation failed, or produced a file onnxruntime cannot run (nothing is written to the destination)."""


# ------------------------------------------------------------------------------------------- calibration data


def calibration_input(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """One calibration input: the image at ``path`` fitted into ``size x size`` (aspect kept, padded bottom /
    right with the mean) as ``(1, 3, size, size)`` float32 BGR minus mean, no scaling."""
    image, _ = fit_and_pad(read_image(path), (size, size), MEAN_BGR)
    return to_network_input(image, MEAN_BGR)


class ImageCalibrationReader(CalibrationDataReader):
    """An onnxruntime ``CalibrationDataReader`` over image files: one ``{input_name: (1, 3, size, size)}`` feed per
    image, decoded lazily (see :func:`calibration_input`); :meth:`rewind` starts over."""

    def __init__(self, images: Sequence[str | os.PathLike[str]], size: int, input_name: str = "input") -> None:
        self.images = [Path(p) for p in images]
        self.size = int(size)
        self.input_name = input_name
        self._iter: Iterator[Path] = iter(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._iter, None)
        return None if path is None else {self.input_name: calibration_input(path, self.size)}

    def rewind(self) -> None:
        self._iter = iter(self.images)


# ------------------------------------------------------------------------------------------------ quantisation


def _check_inputs(fp32_path: Path, calibration_images: Sequence[str | os.PathLike[str]], size: int,
                  method: str, activations: str) -> list[Path]:
    if not fp32_path.is_file():
        raise FileNotFoundError(f"quantize_static_onnx: float ONNX model not found: {fp32_path}")
    if isinstance(calibration_images, (str, os.PathLike)):
        raise TypeError("quantize_static_onnx: calibration_images must be a sequence of image paths, got one path "
                        f"{calibration_images!s}")
    images = [Path(p) for p in calibration_images]
    if not images:
        raise ValueError("quantize_static_onnx: no calibration images given (need at least one image path)")
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"quantize_static_onnx: {len(missing)} calibration image(s) not found, first: "
                                f"{missing[0]}")
    if isinstance(size, bool) or int(size) != size or size < 32:
        raise ValueError(f"quantize_static_onnx: size must be an integer >= 32, got {size!r}")
    if activations not in ("int8", "uint8"):
        raise ValueError(f"quantize_static_onnx: activations must be 'int8' or 'uint8', got {activations!r}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"quantize_static_onnx: unknown calibration method {method!r}; use one of "
                         f"{sorted(CALIBRATION_METHODS)}")
    return images


def _preprocess(src: Path, dest: Path) -> Path:
    """``quant_pre_process`` (ONNX shape inference + onnxruntime graph optimisation) when it works, else ``src``.

    Symbolic shape inference is skipped: it does not know ``DeformConv``, and on failure onnxruntime 1.32 dumps
    ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` file into the current working directory."""
    try:
        quant_pre_process(str(src), str(dest), skip_symbolic_shape=True)
        log.info("quant_pre_process %s done", src)
        return dest
    except Exception as exc:  # noqa: BLE001 - a best-effort step; quantisation works without it
        log.warning("quant_pre_process failed on %s (%s); quantising the graph as exported", src, exc)
    return src


def quantize_static_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_images: Sequence[str | os.PathLike[str]],
    *,
    size: int = 640,
    per_channel: bool = True,
    method: CalibrationName = "minmax",
    exclude_op_types: Sequence[str] = ("DeformConv",),
    exclude_nodes: Sequence[str] = (),
    activations: Literal["int8", "uint8"] = "int8",
) -> Path:
    """Quantise a FeatherFace ONNX export to INT8 (static, QDQ format) and write it atomically to ``out_path``.

    Args:
        fp32_path: float ONNX file written by :func:`featherface.deploy.export.export_onnx` (dynamic H, W).
        out_path: destination ``.onnx`` (parent folders are created; left untouched on failure).
        calibration_images: image files (training images, not the evaluation set), each fed once as
            ``(1, 3, size, size)`` (see :func:`calibration_input`).
        size: calibration square side in pixels.
        per_channel: per-output-channel weight scales (recommended for depthwise convolutions).
        method: activation-range calibration: ``"minmax"``, ``"percentile"`` (99.999th) or ``"entropy"``.
        exclude_op_types: op types kept in float (their nodes are passed as ``nodes_to_exclude``), in addition
            to :data:`FLOAT_ONLY_OP_TYPES`.
        exclude_nodes: ``fnmatch`` patterns of node names kept in float as well, e.g. ``("/heads/*",)`` for
            the prediction heads (names as in the exported graph, e.g. ``/heads/levels.0/Conv``).
        activations: activation type, ``"int8"`` (S8S8, onnxruntime's recommended default) or ``"uint8"``
            (U8S8, the type of onnxruntime's x86 integer GEMM kernels).

    Returns:
        ``out_path``; the file holds QuantizeLinear / DequantizeLinear pairs, int8 weights, the float file's
        metadata plus ``featherface.quantization`` (settings as JSON).

    Raises:
        FileNotFoundError: no float model, or a missing calibration image.
        ValueError: no calibration images, a bad ``size`` or ``method``.
        QuantizationError: onnxruntime failed to quantise, or the result does not load / run.
    """
    src = Path(fp32_path)
    images = _check_inputs(src, calibration_images, size, method, activations)
    dest = Path(out_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    float_model = onnx.load(str(src))
    input_name = float_model.graph.input[0].name
    excluded_types = set(exclude_op_types) | set(FLOAT_ONLY_OP_TYPES)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=dest.parent) as work, \
            atomic_target(dest, suffix=".onnx") as tmp_out:
        work_dir = Path(work)
        prepared = _preprocess(src, work_dir / "prepared.onnx")
        graph = onnx.load(str(prepared)).graph
        excluded = [n.name for n in graph.node if n.op_type in excluded_types
                    or any(fnmatch.fnmatchcase(n.name, pattern) for pattern in exclude_nodes)]
        if any(not name for name in excluded):
            raise QuantizationError(f"{prepared}: some {sorted(excluded_types)} nodes have no name; cannot exclude them")
        log.info("quantising %s: %d calibration images at %d px, %s, per_channel=%s, kept float: %d node(s) "
                 "(op types %s, names %s)", src, len(images), size, method, per_channel, len(excluded),
                 sorted(excluded_types), list(exclude_nodes))
        reader = ImageCalibrationReader(images, size, input_name)
        try:
            quantize_static(
                str(prepared), str(tmp_out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        except Exception as exc:
            raise QuantizationError(f"onnxruntime could not quantise {src}: {type(exc).__name__}: {exc}") from exc
        model = onnx.load(str(tmp_out))
        meta = {p.key: p.value for p in float_model.metadata_props}
        meta["featherface.quantization"] = json.dumps({
            "format": "QDQ", "weights": "int8", "activations": activations, "per_channel": per_channel,
            "calibration": method, "calibration_images": len(images), "calibration_size": size,
            "float_ops": sorted(excluded_types), "float_nodes": list(exclude_nodes),
        })
        del model.metadata_props[:]
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp_out))
        try:  # the result must load and run before it replaces anything
            session = load_session(tmp_out, threads=1, what="INT8 model")
            session.run(None, {input_name: calibration_input(images[0], size)})
        except Exception as exc:
            raise QuantizationError(f"the INT8 model quantised from {src} does not run: {exc}") from exc
    log.info("wrote %s (%.1f kB -> %.1f kB) in %.1f s", dest, src.stat().st_size / 1e3, dest.stat().st_size / 1e3,
             time.perf_counter() - start)
    return dest


# ------------------------------------------------------------------------------------------------- comparison


def _median_ms(fn: Any, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure_onnx_latency(
    onnx_path: str | os.PathLike[str],
    images: Sequence[Path],
    *,
    network_size: int = 640,
    runs: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Median one-thread CPU latency (ms) of an ONNX export: the bare network on a seeded
    ``(1, 3, network_size, network_size)`` input (``network_ms``), and the whole detector
    (decode, preprocess, network, WIDER post-processing) per image at original size over ``images`` after one
    untimed warm-up image (``per_image_ms``)."""
    detector = OnnxFaceDetector(onnx_path, settings=WIDER_SETTINGS, threads=1)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (1, 3, network_size, network_size)) - np.asarray(MEAN_BGR).reshape(1, 3, 1, 1))
    x = x.astype(np.float32)
    name = detector.session.get_inputs()[0].name
    network = _median_ms(lambda: detector.session.run(None, {name: x}), runs, warmup)
    per_image = []
    if images:
        detector(images[0])
    for path in images:
        t0 = time.perf_counter()
        detector(path)
        per_image.append(time.perf_counter() - t0)
    return {"network_ms": network,
            "per_image_ms": statistics.median(per_image) * 1e3 if per_image else float("nan")}


def compare_int8(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    val_images_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    latency_images: int = 20,
    latency_runs: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
    """WIDER AP and CPU latency of a float and an INT8 FeatherFace ONNX file, and whether INT8 ships.

    Both run through :class:`~featherface.inference.onnx.OnnxFaceDetector` with
    :data:`~featherface.inference.onnx.WIDER_SETTINGS` (original size, threshold 0.02, "+1" NMS 0.4) over every image
    of ``val_images_dir`` (predictions written to ``work_dir/pred_fp32`` and ``work_dir/pred_int8``), evaluated
    with :func:`~featherface.eval.widerface.evaluate_folder`. Latency: see :func:`measure_onnx_latency` (one
    thread, first ``latency_images`` images in sorted order).

    Args:
        threads: onnxruntime threads of the prediction runs (``None``: its default); latency always uses one.

    Returns:
        ``{"ap": {"fp32": {setting: AP}, "int8": {...}}``, ``"ap_change_points": {setting: 100 (int8 - fp32)}``,
        ``"latency_ms": {"fp32": {...}, "int8": {...}}``, ``"speedup": {"network": fp32 / int8 network
        latency, "per_image": ...}``, ``"num_images"``, ``"ship"``: every |AP change| <= 1.0 point}.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models = {"fp32": Path(fp32_path), "int8": Path(int8_path)}
    for tag, path in models.items():
        if not path.is_file():
            raise FileNotFoundError(f"compare_int8: {tag} ONNX model not found: {path}")
    images = list_images(val_images_dir)
    ap: dict[str, dict[str, float]] = {}
    latency: dict[str, dict[str, float]] = {}
    num_images = {}
    for tag, path in models.items():
        detector = OnnxFaceDetector(path, settings=WIDER_SETTINGS, threads=threads)
        summary = predict_folder(detector, val_images_dir, work / f"pred_{tag}")
        result = evaluate_folder(work / f"pred_{tag}", gt_dir)
        ap[tag] = {s: float(result.ap[s]) for s in result.settings}
        num_images[tag] = result.num_images
        log.info("%s: %s (%.3f s/image)", tag, result.summary(), summary.seconds_per_image)
        latency[tag] = measure_onnx_latency(path, images[:latency_images], runs=latency_runs)
        log.info("%s latency (1 thread): %s", tag, latency[tag])
    change = {s: 100.0 * (ap["int8"][s] - ap["fp32"][s]) for s in ap["fp32"]}
    speedup = {key.removesuffix("_ms"): latency["fp32"][key] / latency["int8"][key] for key in latency["fp32"]}
    ship = all(np.isfinite(v) and abs(v) <= SHIP_TOLERANCE_POINTS for v in change.values())
    return {"ap": ap, "ap_change_points": change, "latency_ms": latency, "speedup": speedup,
            "num_images": num_images, "ship": bool(ship), "tolerance_points": SHIP_TOLERANCE_POINTS}
