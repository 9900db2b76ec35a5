"""onnxruntime sessions for the torch-free detectors: loading a model from a path or bytes, describing its
inputs and outputs in error messages. Imports onnxruntime only when a session is made."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

__all__ = ["ModelSource", "OnnxFormatError", "load_session", "fixed_dim", "describe_io"]

log = logging.getLogger(__name__)

#: An ONNX model: the path of a ``.onnx`` file or the file's bytes.
ModelSource = Union[str, os.PathLike, bytes]


class OnnxFormatError(ValueError):
    """An ONNX file that is not a model this runtime can run (unreadable, or another model's inputs/outputs)."""


def load_session(
    model: ModelSource, *, threads: int | None = None, providers: Sequence[str] | None = None, what: str = "model"
) -> Any:
    """An ``onnxruntime.InferenceSession`` for an ONNX file path or its bytes.

    Args:
        model: a path to a ``.onnx`` file, or the file's bytes.
        threads: intra-op threads (``None``: onnxruntime's default, one per physical core).
        providers: execution providers (default ``["CPUExecutionProvider"]``).
        what: how to name the model in error messages.

    Raises:
        FileNotFoundError: a path that does not exist.
        OnnxFormatError: bytes or a file onnxruntime cannot load (naming it and onnxruntime's reason).
    """
    import onnxruntime as ort  # optional dependency (featherface[runtime]): imported when a session is made

    options = ort.SessionOptions()
    if threads is not None:
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if isinstance(model, (bytes, bytearray, memoryview)):
        source: Any = bytes(model)
        where = f"{what} ({len(source)} bytes)"
    else:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{what} not found: {path}")
        source, where = str(path), str(path)
    asked = list(providers or ["CPUExecutionProvider"])
    try:
        with warnings.catch_warnings():  # a missing provider is reported below, with what to do
            warnings.filterwarnings("ignore", message=".*provider.*", category=UserWarning)
            session = ort.InferenceSession(source, sess_options=options, providers=asked)
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OnnxFormatError(f"{where}: not a loadable ONNX model: {reason}") from err
    _warn_about_fallback(asked, list(session.get_providers()), where)
    return session


def _warn_about_fallback(asked: Sequence[str], active: Sequence[str], where: str) -> list[str]:
    """Log a warning for each execution provider that was asked for but is not running the session (onnxruntime
    falls back to the CPU without raising); returns the missing ones."""
    missing = [p for p in asked if p not in active]
    if missing:
        log.warning("%s: %s asked for but not available; running on %s instead. For CUDA install the "
                    "onnxruntime-gpu package that matches your CUDA version (pip uninstall onnxruntime && pip "
                    "install onnxruntime-gpu)", where, ", ".join(missing), ", ".join(active) or "nothing")
    return missing


def fixed_dim(dim: Any) -> int | None:
    """A static ONNX dimension as an int, ``None`` for a symbolic / unknown one."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def describe_io(args: Sequence[Any]) -> str:
    """onnxruntime inputs / outputs as ``'name' type [shape], ...`` for error messages."""
    return ", ".join(f"{a.name!r} {a.type} {list(a.shape)}" for a in args) or "none"

