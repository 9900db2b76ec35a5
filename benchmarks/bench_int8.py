"""Benchmark: INT8 static quantisation (onnxruntime, QDQ S8S8) of the FeatherFace V1 ONNX export: WIDER AP and
CPU speed of float vs INT8, and the ship decision (every |AP change| <= 1 point).

Steps: build ``featherface_v1`` and load the fork checkpoint; export ONNX (dynamic H, W); calibrate on the first
``--calib`` training images (sorted, a fixed stride through the folder) at ``--calib-size``; predict every val
image with both files (WIDER protocol, original size); evaluate; time both (one thread, median).

Usage::

    python benchmarks/bench_int8.py [--weights PATH] [--data DIR] [--calib 32] [--calib-size 640]
        [--method minmax|percentile|entropy] [--activations int8|uint8] [--exclude-nodes PATTERN ...]
        [--work DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featherface.deploy.export import export_onnx  # noqa: E402
from featherface.inference.images import list_images  # noqa: E402
from featherface.models.loading import load_weights  # noqa: E402
from featherface.models.registry import create_model  # noqa: E402
from featherface.deploy.quantize import compare_int8, quantize_static_onnx  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO.parent / "shared/weights/featherface_v1_fork.pth")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/widerface")
    parser.add_argument("--model", default="featherface_v1")
    parser.add_argument("--calib", type=int, default=32, help="number of training images for calibration")
    parser.add_argument("--calib-size", type=int, default=640)
    parser.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    parser.add_argument("--activations", default="int8", choices=["int8", "uint8"])
    parser.add_argument("--exclude-nodes", nargs="*", default=[],
                        help="fnmatch patterns of node names kept float, e.g. '/heads/*'")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_int8"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    args.work.mkdir(parents=True, exist_ok=True)
    model = create_model(args.model)
    report = load_weights(model, args.weights)
    logging.info("weights %s: %d tensors loaded, %d skipped, %d not loaded", args.weights, len(report.loaded),
                 len(report.skipped), len(report.not_loaded))
    fp32 = export_onnx(model.eval(), args.work / "fp32.onnx")

    train = list_images(args.data / "train/images")
    stride = max(1, len(train) // args.calib)
    calib = train[::stride][: args.calib]
    t0 = time.perf_counter()
    tag = f"{args.method}_{args.activations}" + ("_partial" if args.exclude_nodes else "")
    int8 = quantize_static_onnx(fp32, args.work / f"int8_{tag}.onnx", calib, size=args.calib_size,
                                method=args.method, activations=args.activations, exclude_nodes=args.exclude_nodes)
    quant_s = time.perf_counter() - t0

    result = compare_int8(fp32, int8, args.data / "val/images", args.data / "val", args.work / f"cmp_{tag}")
    result.update({
        "model": args.model, "weights": str(args.weights), "calibration_images": len(calib),
        "calibration_size": args.calib_size, "method": args.method, "activations": args.activations,
        "exclude_nodes": args.exclude_nodes, "quantize_seconds": round(quant_s, 1),
        "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        "platform": platform.platform(), "processor": platform.processor(),
    })
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
