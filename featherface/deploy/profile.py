"""Where an ONNX model's time goes: ONNX Runtime's per-operator profile aggregated by op type, and the parameter
count of an ONNX file (its float initializers).

onnx and onnxruntime are the optional ``featherface[export]`` extra; this module is imported by the benchmark,
which needs both.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

__all__ = ["OpProfileRow", "onnx_parameter_count", "profile_onnx"]


@dataclass(frozen=True)
class OpProfileRow:
    """ORT time of one operator type per inference: ``total_ms`` summed over its nodes, ``share`` of all nodes;
    ``model``: the export profiled."""

    op_type: str
    total_ms: float
    nodes: int
    share: float
    model: str = ""


def onnx_parameter_count(model: bytes | str | os.PathLike[str]) -> int:
    """Elements of the float initializers of an ONNX model (its learnable parameters, as stored)."""
    proto = onnx.load_from_string(model) if isinstance(model, (bytes, bytearray)) else onnx.load(str(model))
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                   onnx.TensorProto.BFLOAT16}
    return int(sum(int(np.prod(t.dims)) if t.dims else 1 for t in proto.graph.initializer
                   if t.data_type in float_types))


def profile_onnx(model: bytes | str | os.PathLike[str], x: np.ndarray, runs: int = 10, threads: int = 1,
                 top: int = 10, name: str = "") -> list[OpProfileRow]:
    """Per-operator time of an ONNX model in ORT (CPU, ``threads`` intra-op), aggregated by ``op_type``.

    Runs one warm-up call, then ``runs`` profiled calls; ``total_ms`` is per call (the sum over the runs
    divided by ``runs``), ``nodes`` the number of graph nodes of that type. Returns the ``top`` op types by time,
    each row labelled ``name``.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="ff_profile_") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        session.run(None, {input_name: x})
        for _ in range(runs):
            session.run(None, {input_name: x})
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    totals: dict[str, float] = {}
    nodes: dict[str, set[str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "op_name" not in args or not str(event.get("name", "")).endswith(
                "_kernel_time"):
            continue
        op = str(args["op_name"])
        totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0.0))
        nodes.setdefault(op, set()).add(str(event["name"]))
    # the warm-up call is profiled too: runs + 1 calls in the trace
    calls = runs + 1
    grand = sum(totals.values()) or 1.0
    rows = [OpProfileRow(op, us / calls / 1e3, len(nodes[op]), us / grand, name) for op, us in totals.items()]
    rows.sort(key=lambda r: r.total_ms, reverse=True)
    return rows[:top]
