"""What the ODConvs of ``featherface_odconv_ssh`` cost in its ONNX export, against RetinaFace-MobileNet0.25 (one thread).

Exports, all batch 1 with dynamic height and width, timed interleaved in ONNX Runtime (fp32, one thread, 640x640;
ratio = median over rounds of the per-round CPU-time ratio against RetinaFace, as ``featherface benchmark --clock
cpu`` does):

* ``merged``: today's export (``fuse_for_export``): the kernels of the SSH ODConvs that read one tensor computed
  together, one attention branch per group (:class:`featherface.deploy.rewrites.MergedODConvKernels`);
* ``per_conv``: the same rewrites with one attention branch per ODConv (``merge_odconv=False``, the export before);
* ``frozen_kernels``: not a model, a bound: ``merged`` with every computed kernel replaced by the constant it takes on
  one random image and the attention branches removed, i.e. the same convolutions with no attention cost at all.

Also prints the node count of each file after ONNX Runtime's graph optimisation.

Usage::

    python benchmarks/bench_odconv_export.py                       # the built-in weights, 100 rounds
    python benchmarks/bench_odconv_export.py --weights final.pt --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featherface.deploy.export import export_onnx  # noqa: E402
from featherface.deploy.rewrites import fuse_for_export  # noqa: E402
from featherface.deploy.timing import time_interleaved  # noqa: E402
from featherface.inference.peers import retinaface_weights  # noqa: E402
from featherface.inference.sessions import load_session  # noqa: E402
from featherface.models.loading import build_model_from_checkpoint  # noqa: E402
from featherface.weights import builtin_weights  # noqa: E402


def optimized_node_count(model: bytes, path: Path) -> int:
    """Nodes of ``model`` after ONNX Runtime's graph optimisation (all levels, CPU), written to ``path``."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return len(onnx.load(str(path)).graph.node)


def frozen_kernels(path: Path, x: np.ndarray) -> bytes:
    """``path`` with each computed Conv kernel replaced by its value on ``x`` and the nodes only they used removed."""
    proto = onnx.load(str(path))
    constants = {t.name for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv" and n.input[1] not in constants]
    probe = onnx.load(str(path))
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n.input[1], onnx.TensorProto.FLOAT, None)
                              for n in convs)
    values = load_session(probe.SerializeToString(), threads=1).run([n.input[1] for n in convs], {"input": x})
    for node, value in zip(convs, values):
        name = node.input[1] + "_frozen"
        proto.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        node.input[1] = name
    needed, kept = {o.name for o in proto.graph.output}, []
    for node in reversed(list(proto.graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(kept))
    initializers = [t for t in proto.graph.initializer if t.name in needed]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(initializers)
    return proto.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="checkpoint of featherface_odconv_ssh (default: built-in)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    model = build_model_from_checkpoint(args.weights or builtin_weights()).eval()
    x = np.random.default_rng(0).uniform(-120, 120, (1, 3, 640, 640)).astype(np.float32)
    files: dict[str, bytes] = {"retinaface_mnet025": bytes(retinaface_weights())}
    with tempfile.TemporaryDirectory(prefix="bench_odconv_export_") as tmp:
        for name, merge in (("merged", True), ("per_conv", False)):
            fused, _ = fuse_for_export(model, merge_odconv=merge)
            path = export_onnx(fused, Path(tmp) / f"{name}.onnx", fuse=False)
            files[name] = path.read_bytes()
        files["frozen_kernels"] = frozen_kernels(Path(tmp) / "merged.onnx", x)
        nodes = {name: optimized_node_count(data, Path(tmp) / f"{name}.opt.onnx") for name, data in files.items()}
    runners = {}
    for name, data in files.items():
        s = load_session(data, threads=1, what=name)
        feed = {s.get_inputs()[0].name: x}
        runners[name] = (lambda s=s, feed=feed: s.run(None, feed))
    times = time_interleaved(runners, args.rounds, args.warmup)
    reference = times["retinaface_mnet025"]["cpu"]
    print(f"ONNX Runtime {ort.__version__}, 1 thread, 640x640, {args.rounds} rounds, CPU time of the calling thread")
    print("| export | ORT nodes (optimised) | CPU ms (median) | x RetinaFace-mnet0.25 |")
    print("|---|---:|---:|---:|")
    for name in files:
        cpu = times[name]["cpu"]
        ratio = statistics.median(a / b for a, b in zip(cpu, reference))
        print(f"| {name} | {nodes[name]} | {statistics.median(cpu):.2f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
