"""What an exported FeatherFace file is, and how an export is checked before it is moved into place.

Every export (:mod:`featherface.deploy.export` for ONNX, :mod:`featherface.deploy.torchscript`) holds the network
only, with the raw outputs of ``FeatherFace.forward``::

    input      (B, 3, H, W) float32, BGR minus mean (104, 117, 123), no scaling
    loc        (B, P, 4)    encoded box offsets (variances 0.1, 0.2)
    logits     (B, P, 2)    class logits, column 1 = face
    landmarks  (B, P, 10)   encoded landmark offsets

with ``P = 2 * sum_s ceil(H / s) * ceil(W / s)``, s in (8, 16, 32). The input and output names are those the
torch-free runtime :mod:`featherface.inference.onnx` reads. This module holds the parts both exporters share: the
checks of their arguments, a copy of the model to trace, the seeded example inputs, the metadata written into the
file and the built-in comparison with the eager model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

import featherface
from featherface.inference.images import MEAN_BGR
from featherface.inference.onnx import INPUT_NAME, OUTPUT_WIDTHS
from featherface.ops.box_coding import VARIANCES
from featherface.ops.priors import DEFAULT_MIN_SIZES, DEFAULT_STEPS

__all__ = [
    "CHECK_ATOL",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "ExportError",
    "ExportFormat",
    "check_size",
    "example_input",
    "export_copy",
    "max_abs_diff",
    "metadata",
    "probe_inputs",
    "quiet_tracing",
    "self_check",
]

#: The exporters' logger: the check's messages keep the name they had when all of it was in export.py (CLI output).
logger = logging.getLogger("featherface.deploy.export")

ExportFormat = Literal["onnx", "torchscript"]
#: Names of the graph outputs, in ``FeatherFace.forward`` order.
OUTPUT_NAMES: tuple[str, str, str] = tuple(OUTPUT_WIDTHS)  # type: ignore[assignment]
#: Max abs difference (raw outputs, exported vs eager) the built-in export check accepts.
CHECK_ATOL = 1e-3


class ExportError(RuntimeError):
    """An export that failed its check (the file was not written to its destination)."""


def check_size(input_size: Sequence[int], batch_size: int, where: str) -> tuple[int, int]:
    if len(input_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in input_size):
        raise ValueError(f"{where}: input_size must be (H, W) positive integers, got {tuple(input_size)!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive integer, got {batch_size!r}")
    return int(input_size[0]), int(input_size[1])


def example_input(batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    """A seeded (B, 3, H, W) float32 input in the network's range (uint8 BGR minus the mean)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 3, height, width), generator=generator).float()
    return pixels - torch.tensor(MEAN_BGR).view(1, 3, 1, 1)


def probe_inputs(batch: int, height: int, width: int, dynamic: bool, dynamic_batch: bool = True) -> list[Tensor]:
    """Inputs of the built-in check: the export shape and, for a dynamic file, an odd size (with another batch
    size when the batch axis is dynamic too)."""
    inputs = [example_input(batch, height, width, seed=1)]
    if dynamic:
        other = batch + 1 if dynamic_batch else batch
        inputs.append(example_input(other, height // 2 + 3, width // 2 + 5, seed=2))
    return inputs


def export_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` in eval mode without gradients (exports never touch the caller's model)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    net = copy.deepcopy(model).cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def metadata(model: nn.Module, fmt: str, **extra: Any) -> dict[str, str]:
    """String metadata stored in the exported file: input convention, outputs, priors, config, versions."""
    config = getattr(model, "config", None)
    meta = {
        "featherface.version": featherface.__version__,
        "featherface.format": fmt,
        "featherface.input": f"(B, 3, H, W) float32, BGR minus mean {list(MEAN_BGR)}, no scaling",
        "featherface.outputs": json.dumps({name: ["B", "P", w] for name, w in OUTPUT_WIDTHS.items()}),
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
def quiet_tracing() -> Iterator[None]:
    """Log (debug) instead of showing the tracer's and TorchScript / legacy exporter's warnings (shape checks
    turned into constants, deprecation notices)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        logger.debug("export: %s: %s", w.category.__name__, w.message)


def max_abs_diff(reference: Sequence[Tensor], outputs: Sequence[Tensor], where: str) -> dict[str, float]:
    if len(outputs) != len(OUTPUT_NAMES):
        raise ExportError(f"{where}: expected {len(OUTPUT_NAMES)} outputs {OUTPUT_NAMES}, got {len(outputs)}")
    diffs: dict[str, float] = {}
    for name, ref, out in zip(OUTPUT_NAMES, reference, outputs):
        out = out.to(device=ref.device, dtype=ref.dtype)
        if out.shape != ref.shape:
            raise ExportError(f"{where}: output {name!r} has shape {tuple(out.shape)}, eager gives {tuple(ref.shape)}")
        diffs[name] = float((out - ref).abs().max()) if ref.numel() else 0.0
    return diffs


def self_check(eager: nn.Module, exported: nn.Module, inputs: Sequence[Tensor], where: str, atol: float) -> None:
    """Raise :class:`ExportError` unless ``exported`` matches ``eager`` within ``atol`` on every input."""
    for x in inputs:
        with torch.no_grad():
            diffs = max_abs_diff(eager(x), exported(x), where)
        worst = max(diffs.values())
        logger.info("%s: input %s, max abs diff %s", where, tuple(x.shape), {k: f"{v:.2e}" for k, v in diffs.items()})
        if not math.isfinite(worst) or worst > atol:
            raise ExportError(
                f"{where}: the exported model differs from the eager one on an input of shape {tuple(x.shape)}: "
                f"max abs diff {diffs} > {atol}"
            )
