"""Deployment exports of a FeatherFace model: ONNX and TorchScript, with parity checks.

Both formats hold the network only, the same raw outputs as ``FeatherFace.forward``::

    input      (B, 3, H, W) float32, BGR minus mean (104, 117, 123), no scaling
    loc        (B, P, 4)    encoded box offsets (variances 0.1, 0.2)
    logits     (B, P, 2)    class logits, column 1 = face
    landmarks  (B, P, 10)   encoded landmark offsets

with ``P = 2 * sum_s ceil(H / s) * ceil(W / s)``, s in (8, 16, 32). Decoding, score threshold and NMS
stay in :mod:`featherface.inference.postprocess` (the WIDER protocol needs the reference "+1" NMS, which ONNX's
``NonMaxSuppression`` does not offer), with priors from :func:`featherface.ops.priors.make_priors`;
the ONNX file records the prior and coding parameters in its metadata for other runtimes.

* ONNX (:func:`export_onnx`): TorchScript-based exporter (``dynamo=False``), opset 19 or 20, dynamic
  height / width axes by default and a batch of one (``dynamic_batch=True`` for a dynamic batch axis too).
  The deformable convolutions of the SSH become ONNX ``DeformConv`` nodes (:mod:`featherface.deploy.onnx_ops`).
  By default (``fuse=True``) the graph is built from :func:`featherface.deploy.rewrites.fuse_for_export`'s exact
  rewrites: BatchNorm folded into the deformable convs, one offset / mask conv per input, and at batch 1 every
  ODConv as one ``Conv`` whose kernel is computed in the graph (BN, residual and layer scale folded in). With a
  dynamic batch the ODConv blocks keep their batch-independent matmul formulation (``ODConv2d(conv_impl="auto")``
  switches to it while tracing).
* TorchScript (:func:`export_torchscript`): ``torch.jit.trace``. Every size-dependent step of the model
  (BiFPN nearest resize to the finer map, TF-"same" max-pool padding, head reshapes, channel shuffle)
  reads the input's shape in the traced graph, so the file runs at any batch size and H, W; the
  built-in check runs it at a second size to make sure.
* :func:`check_parity` compares an exported file with the eager model; :func:`load_exported` gives an
  ``nn.Module`` for either format (the ONNX one runs onnxruntime on the CPU), usable with
  :class:`featherface.inference.detector.FaceDetector`.

Exports work on a copy of the model in eval mode (on the CPU; TorchScript: on the ``device`` asked for);
the caller's model is not touched. Files are
written to a temporary name in the destination folder, checked, then renamed into place, so a failed
export never leaves a partial or unchecked file at ``path``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

import featherface
from featherface.deploy.onnx_ops import DEFORM_CONV_MIN_OPSET, register_deform_conv_symbolic

__all__ = [
    "EXPORT_FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "ExportError",
    "OnnxModel",
    "check_parity",
    "detect_format",
    "export_model",
    "export_onnx",
    "export_pretrained",
    "export_torchscript",
    "load_exported",
    "max_onnx_opset",
    "measure_latency",
]

logger = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
#: Export formats, and the file suffixes that select them in :func:`export_model`.
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "torchscript": (".pt", ".pth", ".ts", ".torchscript", ".jit"),
}
#: Name of the graph input.
INPUT_NAME = "input"
#: Names of the graph outputs, in ``FeatherFace.forward`` order.
OUTPUT_NAMES: tuple[str, str, str] = ("loc", "logits", "landmarks")
#: Last channel of each output (the check that an exported file has the expected layout).
_OUTPUT_WIDTHS = {"loc": 4, "logits": 2, "landmarks": 10}
#: Max abs difference (raw outputs, exported vs eager) the built-in export check accepts.
CHECK_ATOL = 1e-3
#: Name of the metadata entry inside a TorchScript file.
TORCHSCRIPT_METADATA = "featherface.json"


class ExportError(RuntimeError):
    """An export that failed its check (the file was not written to its destination)."""


# ----------------------------------------------------------------------------------------------- helpers
def max_onnx_opset() -> int:
    """The highest opset the TorchScript-based ONNX exporter of the installed torch emits (20 in torch 2.x)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - depends on the torch version
        return 20


def _has_deform_conv(model: nn.Module) -> bool:
    """True when ``model`` holds a deformable convolution (ours or torchvision's)."""
    from torchvision.ops import DeformConv2d

    from featherface.nn.ssh import ModulatedDeformConv2d

    return any(isinstance(m, (ModulatedDeformConv2d, DeformConv2d)) for m in model.modules())


def _check_opset(model: nn.Module, opset: int) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"export_onnx: opset must be an int, got {opset!r}")
    top = max_onnx_opset()
    if opset > top:
        raise ValueError(
            f"export_onnx: opset {opset} is above {top}, the highest the TorchScript-based ONNX exporter of "
            f"torch {torch.__version__} emits"
        )
    if opset < DEFORM_CONV_MIN_OPSET and _has_deform_conv(model):
        raise ValueError(
            f"export_onnx: opset {opset} is not supported for this model: its SSH uses modulated deformable "
            f"convolutions, exported as the ONNX DeformConv operator, which exists from opset "
            f"{DEFORM_CONV_MIN_OPSET} on (use opset {DEFORM_CONV_MIN_OPSET}..{top})"
        )


def _check_size(input_size: Sequence[int], batch_size: int, where: str) -> tuple[int, int]:
    if len(input_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in input_size):
        raise ValueError(f"{where}: input_size must be (H, W) positive integers, got {tuple(input_size)!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
    return int(input_size[0]), int(input_size[1])


def _example_input(batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    """A seeded (B, 3, H, W) float32 input in the network's range (uint8 BGR minus the mean)."""
    from featherface.inference.images import MEAN_BGR

    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 3, height, width), generator=generator).float()
    return pixels - torch.tensor(MEAN_BGR).view(1, 3, 1, 1)


def _probe_inputs(batch: int, height: int, width: int, dynamic: bool, dynamic_batch: bool = True) -> list[Tensor]:
    """Inputs of the built-in check: the export shape and, for a dynamic file, an odd size (with another batch
    size when the batch axis is dynamic too)."""
    inputs = [_example_input(batch, height, width, seed=1)]
    if dynamic:
        other = batch + 1 if dynamic_batch else batch
        inputs.append(_example_input(other, height // 2 + 3, width // 2 + 5, seed=2))
    return inputs


def _export_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` in eval mode without gradients (exports never touch the caller's model)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    net = copy.deepcopy(model).cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _metadata(model: nn.Module, fmt: str, **extra: Any) -> dict[str, str]:
    """String metadata stored in the exported file: input convention, outputs, priors, config, versions."""
    from featherface.inference.images import MEAN_BGR
    from featherface.ops.box_coding import VARIANCES
    from featherface.ops.priors import DEFAULT_MIN_SIZES, DEFAULT_STEPS

    config = getattr(model, "config", None)
    meta = {
        "featherface.version": featherface.__version__,
        "featherface.format": fmt,
        "featherface.input": f"(B, 3, H, W) float32, BGR minus mean {list(MEAN_BGR)}, no scaling",
        "featherface.outputs": json.dumps({name: ["B", "P", w] for name, w in _OUTPUT_WIDTHS.items()}),
        "featherface.priors": json.dumps(
            {"min_sizes": [list(m) for m in DEFAULT_MIN_SIZES], "steps": list(DEFAULT_STEPS),
             "variances": list(VARIANCES), "order": "level, row, column, anchor", "normalised_by": "input W, H"}
        ),
        "featherface.config": json.dumps(config.to_dict()) if hasattr(config, "to_dict") else "null",
        "torch.version": torch.__version__,
    }
    meta.update({f"featherface.{k}": json.dumps(v) for k, v in extra.items()})
    return meta


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit rename it over ``path``, else delete it."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Log (debug) instead of showing the tracer's and TorchScript / legacy exporter's warnings (shape checks
    turned into constants, deprecation notices)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("export: %s: %s", w.category.__name__, w.message)


def _max_abs_diff(reference: Sequence[Tensor], outputs: Sequence[Tensor], where: str) -> dict[str, float]:
    if len(outputs) != len(OUTPUT_NAMES):
        raise ExportError(f"{where}: expected {len(OUTPUT_NAMES)} outputs {OUTPUT_NAMES}, got {len(outputs)}")
    diffs: dict[str, float] = {}
    for name, ref, out in zip(OUTPUT_NAMES, reference, outputs):
        out = out.to(device=ref.device, dtype=ref.dtype)
        if out.shape != ref.shape:
            raise ExportError(f"{where}: output {name!r} has shape {tuple(out.shape)}, eager gives {tuple(ref.shape)}")
        diffs[name] = float((out - ref).abs().max()) if ref.numel() else 0.0
    return diffs


def _self_check(eager: nn.Module, exported: nn.Module, inputs: Sequence[Tensor], where: str, atol: float) -> None:
    """Raise :class:`ExportError` unless ``exported`` matches ``eager`` within ``atol`` on every input."""
    for x in inputs:
        with torch.no_grad():
            diffs = _max_abs_diff(eager(x), exported(x), where)
        worst = max(diffs.values())
        logger.info("%s: input %s, max abs diff %s", where, tuple(x.shape), {k: f"{v:.2e}" for k, v in diffs.items()})
        if not math.isfinite(worst) or worst > atol:
            raise ExportError(
                f"{where}: the exported model differs from the eager one on an input of shape {tuple(x.shape)}: "
                f"max abs diff {diffs} > {atol}"
            )


# -------------------------------------------------------------------------------------------------- ONNX
def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = 19,
    dynamic: bool = True,
    dynamic_batch: bool = False,
    fuse: bool = True,
    input_size: Sequence[int] = (640, 640),
    batch_size: int = 1,
    check: bool = True,
    atol: float = CHECK_ATOL,
) -> Path:
    """Export ``model`` to ONNX (TorchScript-based exporter) and write it atomically to ``path``.

    Args:
        model: a FeatherFace model (or any module with one (B, 3, H, W) input and the three outputs).
        path: destination ``.onnx`` file (parent folders are created).
        opset: ONNX opset, 19 (default) or 20; deformable convolutions need >= 19.
        dynamic: dynamic ``height``, ``width`` input axes (and ``priors`` output axis). ``False`` fixes the
            shape to ``(batch_size, 3, *input_size)``.
        dynamic_batch: with ``dynamic``, a dynamic ``batch`` axis too. Otherwise the batch is fixed at
            ``batch_size`` (1 by default: what :class:`featherface.inference.onnx.OnnxFaceDetector` runs).
        fuse: export :func:`featherface.deploy.rewrites.fuse_for_export`'s exact rewrite of the model (BatchNorm folded
            into the deformable convs, merged offset / mask convs; when the graph's batch is fixed at 1, ODConvs
            as ``Conv`` nodes with computed kernels). With a batch other than a fixed 1 the ODConv blocks export
            their batch-independent matmul formulation (the TorchScript-based exporter rejects a grouped conv
            whose kernel shape depends on the batch, "convolution for kernel of unknown shape").
        input_size: (H, W) of the tracing input (and of the fixed shape when ``dynamic=False``).
        batch_size: B of the tracing input.
        check: run ``onnx.checker.check_model(full_check=True)`` and compare onnxruntime with the eager
            (original, unfused) model (max abs diff <= ``atol``) at the export shape and, when dynamic, at an
            odd input size (and another batch size when the batch is dynamic), before the file is moved into place.
        atol: tolerance of that comparison.

    Returns:
        The written path. Graph input ``input``; outputs ``loc``, ``logits``, ``landmarks``; metadata
        entries ``featherface.*`` (input convention, priors, config, export settings, what was fused).

    Raises:
        ValueError: an opset below 19 for a model with deformable convolutions, an opset the exporter
            does not support, or a bad ``input_size`` / ``batch_size``.
        ExportError: the checker or the parity check failed (``path`` is left as it was).
    """
    import onnx

    from featherface.deploy.rewrites import fuse_for_export

    height, width = _check_size(input_size, batch_size, "export_onnx")
    _check_opset(model, opset)
    net = _export_copy(model)
    x = _example_input(batch_size, height, width)
    dynamic_batch = bool(dynamic and dynamic_batch)
    batch1 = batch_size == 1 and not dynamic_batch
    traced, fused = net, None
    if fuse:
        traced, report = fuse_for_export(net, batch1=batch1)
        fused = report.to_dict()
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {2: "height", 3: "width"}}
        dynamic_axes.update({name: {1: "priors"} for name in OUTPUT_NAMES})
        if dynamic_batch:
            for axes in dynamic_axes.values():
                axes[0] = "batch"
    start = time.perf_counter()
    if opset >= DEFORM_CONV_MIN_OPSET:
        register_deform_conv_symbolic()
    with _atomic_target(path) as tmp:
        with _quiet_tracing(), torch.no_grad():
            try:
                torch.onnx.export(
                    traced, (x,), str(tmp), dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes,
                    do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
                )
            except torch.onnx.OnnxExporterError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ExportError(f"export_onnx: {path}: the ONNX exporter failed (opset {opset}): {first}") from err
        proto = onnx.load(str(tmp))
        meta = _metadata(net, "onnx", opset=opset, dynamic=dynamic, dynamic_batch=dynamic_batch,
                         input_size=[height, width], batch_size=batch_size, fused=fused)
        onnx.helper.set_model_props(proto, meta)
        proto.doc_string = "FeatherFace face detector (raw outputs); see the featherface.* metadata entries."
        onnx.save(proto, str(tmp))
        if check:
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except onnx.checker.ValidationError as err:
                raise ExportError(f"export_onnx: {path}: onnx.checker rejected the graph: {err}") from err
            shapes = _probe_inputs(batch_size, height, width, dynamic, dynamic_batch)
            _self_check(net, OnnxModel(tmp), shapes, f"export_onnx {path}", atol)
    shape = ("dynamic batch, H, W" if dynamic_batch else f"batch {batch_size}, dynamic H, W") if dynamic \
        else f"fixed {batch_size}x3x{height}x{width}"
    logger.info("exported ONNX opset %d (%s%s) to %s in %.1f s, %d bytes", opset, shape,
                ", fused" if fuse else "", path, time.perf_counter() - start, Path(path).stat().st_size)
    return Path(path)


class OnnxModel(nn.Module):
    """An exported ONNX file run by onnxruntime on the CPU, as an ``nn.Module`` with the model's interface.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime ``intra_op_num_threads`` (``None``: onnxruntime's default).

    Forward:
        x (B, 3, H, W) float tensor -> ``(loc, logits, landmarks)`` float32 tensors on ``x``'s device. A file
        whose batch axis is fixed at 1 (the default export) runs a batch of B one sample at a time.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
            raise ExportError(
                f"{self.path}: expected input {[INPUT_NAME]} and outputs {list(OUTPUT_NAMES)}, "
                f"found inputs {inputs} and outputs {outputs}"
            )

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the file's input is fixed at (``None``: a dynamic batch axis)."""
        dim = self.session.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        chunks = [array[i:i + 1] for i in range(len(array))] if self.fixed_batch == 1 and len(array) > 1 else [array]
        runs = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk}) for chunk in chunks]
        outputs = [torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0]) for parts in zip(*runs)]
        return tuple(o.to(x.device) for o in outputs)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return str(self.path)


# ------------------------------------------------------------------------------------------- TorchScript
def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int] = (640, 640),
    batch_size: int = 1,
    check: bool = True,
    atol: float = CHECK_ATOL,
    device: str | torch.device = "cpu",
) -> Path:
    """Trace ``model`` with ``torch.jit.trace`` (eval mode) and save it atomically to ``path``.

    The traced graph reads every size it needs from its input, so the file runs at any batch size and
    any H, W (the check below verifies it at another size). ODConv blocks are traced in their
    batch-independent matmul formulation. Load with :func:`load_exported` or ``torch.jit.load`` (no
    featherface import needed, but ``import torchvision`` first, for its ``deform_conv2d`` operator); the
    metadata is in the extra file ``featherface.json``.

    The file is tied to the tracing ``device``: torchvision's ``deform_conv2d`` creates its zero bias on
    the input's device, and the tracer records that device as a constant. Trace with ``device="cuda"``
    for a GPU file.

    Args:
        model: the model.
        path: destination file (``.pt`` by convention).
        input_size: (H, W) of the tracing input.
        batch_size: B of the tracing input.
        check: reload the file and compare it with the eager model (max abs diff <= ``atol``) at the
            tracing shape and at another batch size and odd input size, before it is moved into place.
        atol: tolerance of that comparison.
        device: where to trace (and where the file runs).

    Returns:
        The written path.

    Raises:
        ValueError: bad ``input_size`` / ``batch_size``.
        ExportError: the check failed (``path`` is left as it was).
    """
    height, width = _check_size(input_size, batch_size, "export_torchscript")
    device = torch.device(device)
    net = _export_copy(model).to(device)
    x = _example_input(batch_size, height, width).to(device)
    start = time.perf_counter()
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(net, (x,), check_trace=False)
    meta = _metadata(net, "torchscript", input_size=[height, width], batch_size=batch_size, device=str(device))
    with _atomic_target(path) as tmp:
        with _quiet_tracing():  # torch.jit.save / load warn that TorchScript is deprecated
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta, indent=1)})
        if check:
            loaded = load_exported(tmp, device=device)
            shapes = [s.to(device) for s in _probe_inputs(batch_size, height, width, dynamic=True)]
            _self_check(net, loaded, shapes, f"export_torchscript {path}", atol)
    logger.info("exported TorchScript (traced at %dx3x%dx%d on %s) to %s in %.1f s, %d bytes", batch_size, height,
                width, device, path, time.perf_counter() - start, Path(path).stat().st_size)
    return Path(path)


# ----------------------------------------------------------------------------------- loading and parity
def detect_format(path: str | os.PathLike[str]) -> ExportFormat:
    """``"torchscript"`` for a TorchScript archive (a zip file), ``"onnx"`` otherwise (by content, not suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    return "torchscript" if zipfile.is_zipfile(path) else "onnx"


def load_exported(
    path: str | os.PathLike[str], *, threads: int | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """An exported file as an ``nn.Module``: :class:`OnnxModel` or the loaded TorchScript module.

    Args:
        path: a ``.onnx`` or TorchScript file (format detected from the content).
        threads: onnxruntime intra-op threads (ONNX only; for TorchScript use ``torch.set_num_threads``).
        device: ``map_location`` of a TorchScript file (it must match its tracing device, see
            :func:`export_torchscript`). ONNX files run on the CPU and return tensors on the input's device.
    """
    if detect_format(path) == "torchscript":
        import torchvision  # noqa: F401  (registers torchvision::deform_conv2d for the loaded graph)

        with _quiet_tracing():  # TorchScript's deprecation warning
            return torch.jit.load(str(path), map_location=torch.device(device)).eval()
    return OnnxModel(path, threads=threads)


def _worse(a: float, b: float) -> float:
    """max(a, b), but NaN wins (a NaN difference must not be hidden)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def check_parity(
    model: nn.Module,
    exported_path: str | os.PathLike[str],
    inputs: Sequence[Tensor],
    *,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Max abs difference between ``model`` (eager, eval mode) and an exported file, per output.

    The ONNX file runs in onnxruntime (CPUExecutionProvider), a TorchScript file through ``torch.jit.load``
    on ``device``; the eager model runs where it lives (its train / eval mode is restored afterwards).

    Args:
        model: the eager model the file was exported from.
        exported_path: a ``.onnx`` or TorchScript file (format detected from the content).
        inputs: (B, 3, H, W) float tensors (any batch sizes and sizes the file accepts).
        threads: onnxruntime intra-op threads.
        device: where a TorchScript file runs (its tracing device).

    Returns:
        ``{"loc": d, "logits": d, "landmarks": d}``, the max over all inputs of ``|exported - eager|``
        (NaN when any difference is NaN).

    Raises:
        ValueError: no inputs, or an input that is not a 4-D float tensor.
        ExportError: the exported file returns other output names, counts or shapes.
    """
    if len(inputs) == 0:
        raise ValueError("check_parity: inputs is empty; pass at least one (B, 3, H, W) tensor")
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"check_parity: inputs[{i}] must be a (B, 3, H, W) float tensor, got "
                             f"{type(x).__name__}{tuple(x.shape) if isinstance(x, Tensor) else ''}")
    exported = load_exported(exported_path, threads=threads, device=device)
    model_device = next(iter(model.parameters()), torch.empty(0)).device
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in inputs:
                reference = model(x.to(model_device))
                diffs = _max_abs_diff(reference, exported(x.to(device)), f"check_parity {exported_path}")
                worst = {k: _worse(worst[k], diffs[k]) for k in OUTPUT_NAMES}
    finally:
        model.train(was_training)
    return worst


def measure_latency(model: nn.Module, x: Tensor, *, runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """Wall-clock latency of ``model(x)`` without gradients: ``warmup`` untimed calls, then ``runs`` timed ones.

    Thread counts are the caller's: ``torch.set_num_threads`` for eager / TorchScript, ``threads`` of
    :func:`load_exported` for onnxruntime. Returns ``{"median_ms", "min_ms", "max_ms", "runs"}``.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"measure_latency: need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    return {"median_ms": median * 1e3, "min_ms": times[0] * 1e3, "max_ms": times[-1] * 1e3, "runs": float(runs)}


# ---------------------------------------------------------------------------------------- entry points
def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    format: ExportFormat | None = None,
    **options: Any,
) -> Path:
    """:func:`export_onnx` or :func:`export_torchscript`, chosen by ``format`` or by the suffix of ``path``.

    Raises:
        ValueError: unknown format, or no format and a suffix that names none (see :data:`EXPORT_FORMATS`).
    """
    if format is None:
        suffix = Path(path).suffix.lower()
        by_suffix = [f for f, suffixes in EXPORT_FORMATS.items() if suffix in suffixes]
        if not by_suffix:
            raise ValueError(f"export: cannot tell the format from the suffix of {path}; pass format='onnx' or "
                             f"'torchscript' (suffixes: {EXPORT_FORMATS})")
        format = by_suffix[0]  # type: ignore[assignment]
    if format == "onnx":
        return export_onnx(model, path, **options)
    if format == "torchscript":
        unknown = sorted(set(options) - {"input_size", "batch_size", "check", "atol", "device"})
        if unknown:
            raise ValueError(f"export: option(s) {unknown} do not apply to TorchScript")
        return export_torchscript(model, path, **options)
    raise ValueError(f"export: unknown format {format!r}; known: {list(EXPORT_FORMATS)}")


def _fused_record(path: Path) -> Any:
    """The ``featherface.fused`` metadata entry of an ONNX export: what :func:`fuse_for_export` rewrote."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(meta.get("featherface.fused", "null"))


def export_pretrained(
    model: str | None,
    weights: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: ExportFormat | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    parity_sizes: Sequence[tuple[int, int, int]] = ((1, 640, 640), (2, 481, 353)),
    **options: Any,
) -> dict[str, Any]:
    """Build a model, load its weights, export it and measure parity: the ``featherface export`` verb.

    Args:
        model: a registered model name, or ``None`` to rebuild the architecture recorded in a checkpoint
            of ours (fork state dicts need a name, e.g. ``"featherface_v1"``).
        weights: a checkpoint of ours or a FeatherFace fork state dict.
        output: the destination file.
        format: ``"onnx"`` / ``"torchscript"``, or ``None`` for the suffix of ``output``.
        model_overrides: config fields for ``create_model``.
        parity_sizes: (B, H, W) of the seeded random inputs used for the parity figures (for a file
            exported with ``dynamic=False`` only its own shape is used; a file with a batch axis fixed at 1 runs
            a larger B one sample at a time).
        **options: :func:`export_onnx` / :func:`export_torchscript` options (opset, dynamic, dynamic_batch,
            fuse, input_size, batch_size, check, atol).

    Returns:
        A JSON-ready summary: ``path``, ``format``, ``bytes``, ``model``, ``weights``, ``options``, ``parity``
        (max abs diff per output over the parity inputs), ``parity_inputs`` (their shapes) and, for ONNX, ``fused``
        (what the exact deployment rewrites changed; ``None`` with ``fuse=False``).
    """
    from featherface.models.checkpoints import build_model_from_checkpoint, load_weights
    from featherface.models.registry import create_model

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    if model is None:
        net = build_model_from_checkpoint(weights)
    else:
        net = create_model(model, **dict(model_overrides or {}))
        load_weights(net, weights)
    net.eval()
    path = export_model(net, output, format=format, **options)
    fmt = detect_format(path)
    batch = int(options.get("batch_size", 1))
    if fmt == "onnx" and options.get("dynamic", True) is False:
        h, w = options.get("input_size", (640, 640))
        parity_sizes = ((batch, int(h), int(w)),)
    elif fmt == "onnx" and not options.get("dynamic_batch", False) and batch != 1:
        parity_sizes = tuple((batch, h, w) for _, h, w in parity_sizes)  # the batch axis is fixed at batch_size
    inputs = [_example_input(b, h, w, seed=10 + i) for i, (b, h, w) in enumerate(parity_sizes)]
    device = options.get("device", "cpu") if fmt == "torchscript" else "cpu"
    parity = check_parity(net.to(device), path, inputs, device=device)
    return {
        "path": str(path),
        "format": fmt,
        "bytes": path.stat().st_size,
        "model": model,
        "weights": str(weights),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "parity": parity,
        "parity_inputs": [list(s) for s in parity_sizes],
        "fused": _fused_record(path) if fmt == "onnx" else None,
    }
