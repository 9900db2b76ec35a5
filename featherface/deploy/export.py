"""Deployment exports of a FeatherFace model: ONNX here, TorchScript in :mod:`featherface.deploy.torchscript`; the
``featherface export`` verb (:func:`export_pretrained`).

Both formats hold the network only, the raw outputs of ``FeatherFace.forward`` (layout, names and metadata:
:mod:`featherface.deploy.contract`). Decoding, score threshold and NMS stay in
:mod:`featherface.inference.postprocess` (the WIDER protocol needs the reference "+1" NMS, which ONNX's
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
* TorchScript (:func:`featherface.deploy.torchscript.export_torchscript`): ``torch.jit.trace``, runs at any batch
  size and H, W.
* :func:`featherface.deploy.parity.check_parity` compares an exported file with the eager model;
  :func:`featherface.deploy.parity.load_exported` gives an ``nn.Module`` for either format.

Exports work on a copy of the model in eval mode (on the CPU; TorchScript: on the ``device`` asked for);
the caller's model is not touched. Files are written to a temporary name in the destination folder
(:func:`featherface.utils.io.atomic_target`), checked, then renamed into place, so a failed export never leaves
a partial or unchecked file at ``path``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from featherface.deploy.contract import (
    CHECK_ATOL,
    INPUT_NAME,
    OUTPUT_NAMES,
    ExportError,
    ExportFormat,
    check_size,
    example_input,
    export_copy,
    logger,
    metadata,
    probe_inputs,
    quiet_tracing,
    self_check,
)
from featherface.deploy.onnx_ops import DEFORM_CONV_MIN_OPSET, register_deform_conv_symbolic
from featherface.deploy.parity import OnnxModel, check_parity, detect_format
from featherface.deploy.rewrites import fuse_for_export
from featherface.deploy.torchscript import export_torchscript
from featherface.models.loading import build_model_from_checkpoint, load_weights
from featherface.models.registry import create_model
from featherface.nn.ssh import ModulatedDeformConv2d
from featherface.utils.io import atomic_target

try:  # a private module of torch: where the constant lives depends on the torch version
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as _EXPORTER_MAX_OPSET
except ImportError:  # pragma: no cover - depends on the torch version
    _EXPORTER_MAX_OPSET = 20

__all__ = ["EXPORT_FORMATS", "export_model", "export_onnx", "export_pretrained", "max_onnx_opset"]

#: Export formats, and the file suffixes that select them in :func:`export_model`.
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "torchscript": (".pt", ".pth", ".ts", ".torchscript", ".jit"),
}


def max_onnx_opset() -> int:
    """The highest opset the TorchScript-based ONNX exporter of the installed torch emits (20 in torch 2.x)."""
    return int(_EXPORTER_MAX_OPSET)


def _has_deform_conv(model: nn.Module) -> bool:
    """True when ``model`` holds a deformable convolution (ours or torchvision's)."""
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
    import onnx  # an optional extra (featherface[export]): TorchScript exports run without it

    height, width = check_size(input_size, batch_size, "export_onnx")
    _check_opset(model, opset)
    net = export_copy(model)
    x = example_input(batch_size, height, width)
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
    with atomic_target(path) as tmp:
        with quiet_tracing(), torch.no_grad():
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
        meta = metadata(net, "onnx", opset=opset, dynamic=dynamic, dynamic_batch=dynamic_batch,
                         input_size=[height, width], batch_size=batch_size, fused=fused)
        onnx.helper.set_model_props(proto, meta)
        proto.doc_string = "FeatherFace face detector (raw outputs); see the featherface.* metadata entries."
        onnx.save(proto, str(tmp))
        if check:
            try:
                onnx.checker.check_model(str(tmp), full_check=True)
            except onnx.checker.ValidationError as err:
                raise ExportError(f"export_onnx: {path}: onnx.checker rejected the graph: {err}") from err
            shapes = probe_inputs(batch_size, height, width, dynamic, dynamic_batch)
            self_check(net, OnnxModel(tmp), shapes, f"export_onnx {path}", atol)
    shape = ("dynamic batch, H, W" if dynamic_batch else f"batch {batch_size}, dynamic H, W") if dynamic \
        else f"fixed {batch_size}x3x{height}x{width}"
    logger.info("exported ONNX opset %d (%s%s) to %s in %.1f s, %d bytes", opset, shape,
                ", fused" if fuse else "", path, time.perf_counter() - start, Path(path).stat().st_size)
    return Path(path)


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
    import onnx  # optional, as in export_onnx

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
    inputs = [example_input(b, h, w, seed=10 + i) for i, (b, h, w) in enumerate(parity_sizes)]
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
