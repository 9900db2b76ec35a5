"""Running an exported file as an ``nn.Module`` and measuring how far it is from the eager model.

:func:`load_exported` gives an ``nn.Module`` for either format (:class:`OnnxModel` runs onnxruntime on the CPU; a
TorchScript file is loaded with ``torch.jit.load``), usable with :class:`featherface.inference.detector.FaceDetector`;
:func:`check_parity` is the max abs difference per output between such a file and the eager model.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision  # noqa: F401  (registers torchvision::deform_conv2d, which a loaded TorchScript graph calls)
from torch import Tensor, nn

from featherface.deploy.contract import INPUT_NAME, OUTPUT_NAMES, ExportError, ExportFormat, max_abs_diff, quiet_tracing

__all__ = ["OnnxModel", "check_parity", "detect_format", "load_exported"]


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
        import onnxruntime as ort  # an optional extra (featherface[export]): TorchScript files load without it

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
        with quiet_tracing():  # TorchScript's deprecation warning
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
                diffs = max_abs_diff(reference, exported(x.to(device)), f"check_parity {exported_path}")
                worst = {k: _worse(worst[k], diffs[k]) for k in OUTPUT_NAMES}
    finally:
        model.train(was_training)
    return worst
