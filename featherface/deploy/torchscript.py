"""TorchScript export: ``torch.jit.trace`` of a copy of the model, checked at a second size before it is moved into
place.

Every size-dependent step of the model (BiFPN nearest resize to the finer map, TF-"same" max-pool padding, head
reshapes, channel shuffle) reads the input's shape in the traced graph, so the file runs at any batch size and H, W;
the built-in check runs it at a second size to make sure. The file layout is :mod:`featherface.deploy.contract`'s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from featherface.deploy.contract import (
    CHECK_ATOL,
    check_size,
    example_input,
    export_copy,
    logger,
    metadata,
    probe_inputs,
    quiet_tracing,
    self_check,
)
from featherface.deploy.parity import load_exported
from featherface.utils.io import atomic_target

__all__ = ["TORCHSCRIPT_METADATA", "export_torchscript"]

#: Name of the metadata entry inside a TorchScript file.
TORCHSCRIPT_METADATA = "featherface.json"


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
    height, width = check_size(input_size, batch_size, "export_torchscript")
    device = torch.device(device)
    net = export_copy(model).to(device)
    x = example_input(batch_size, height, width).to(device)
    start = time.perf_counter()
    with quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(net, (x,), check_trace=False)
    meta = metadata(net, "torchscript", input_size=[height, width], batch_size=batch_size, device=str(device))
    with atomic_target(path) as tmp:
        with quiet_tracing():  # torch.jit.save / load warn that TorchScript is deprecated
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta, indent=1)})
        if check:
            loaded = load_exported(tmp, device=device)
            shapes = [s.to(device) for s in probe_inputs(batch_size, height, width, dynamic=True)]
            self_check(net, loaded, shapes, f"export_torchscript {path}", atol)
    logger.info("exported TorchScript (traced at %dx3x%dx%d on %s) to %s in %.1f s, %d bytes", batch_size, height,
                width, device, path, time.perf_counter() - start, Path(path).stat().st_size)
    return Path(path)
