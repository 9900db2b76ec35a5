"""CPU cost of ODConv2d against a plain Conv2d of the same shape (one thread).

Default shape: input 1x32x160x160, 3x3, 32 -> 32, padding 1, eval mode, T = 1, kernel_num 4 and 1.
Candidates, timed interleaved (round-robin, one call each per round, so drift hits all equally), after a
warm-up; the figure is the median over rounds:

* ``conv``: ``nn.Conv2d`` (no bias), the baseline;
* ``odconv_n{4,1}``: our eval path (attentions folded into one per-sample kernel, one conv per sample);
* ``official_n{4,1}``: the official formulation written out below (input times the channel attention,
  batch-folded grouped conv with the aggregated kernel, output times the filter attention);
* with onnxruntime (unless ``--no-onnx``): the same after ``torch.onnx.export`` (TorchScript exporter,
  opset 17), ours with a dynamic batch axis (the matmul formulation, chosen automatically while
  exporting), ours exported at a fixed batch with ``conv_impl="grouped"``, the official formulation
  at a fixed batch, and the plain conv;
* the FeatherFace attention block (``ODConvAttention`` with the recommended kwargs) at the six sites
  of a 640x640 input, eager and (dynamic-batch export) onnxruntime: what the attention adds to the trunk.

Usage::

    python benchmarks/bench_odconv.py            # full: 200 rounds
    python benchmarks/bench_odconv.py --quick    # 30 rounds
    python benchmarks/bench_odconv.py --json results/bench_odconv.json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featherface.nn.odconv import ODConv2d  # noqa: E402
from featherface.nn.odconv_attention import RECOMMENDED_KWARGS, ODConvAttention, site_channels  # noqa: E402


def official_style(m: ODConv2d, x: torch.Tensor) -> torch.Tensor:
    """The official OSVAI/ODConv ``_forward_impl_common`` formulation, on our module's weights."""
    att = m.attentions(x)
    b, _, h, w = x.shape
    k = m.kernel_size
    x = (x * att.channel).reshape(1, -1, h, w)
    agg = (att.spatial * att.kernel * m.weight.unsqueeze(0)).sum(dim=1)
    agg = agg.reshape(-1, m.in_channels // m.groups, k, k)
    y = F.conv2d(x, agg, None, m.stride, m.padding, m.dilation, m.groups * b)
    return y.reshape(b, m.out_channels, y.shape[-2], y.shape[-1]) * att.filter


class OfficialStyle(nn.Module):
    """Module wrapper of :func:`official_style` for export."""

    def __init__(self, m: ODConv2d) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return official_style(self.m, x)


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def export_session(model: nn.Module, example: torch.Tensor, dynamic_batch: bool):
    import onnxruntime as ort

    buffer = io.BytesIO()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes=axes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def table(title: str, times: dict[str, float], baseline: str) -> list[dict[str, object]]:
    rows = [{"name": n, "ms": t * 1e3, "ratio": t / times[baseline]} for n, t in times.items()]
    print(f"\n{title}")
    print(f"{'candidate':<34}{'median ms':>12}{'ratio':>9}")
    for r in rows:
        print(f"{r['name']:<34}{r['ms']:>12.3f}{r['ratio']:>9.3f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 rounds instead of 200")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime measurements")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args(argv)
    rounds, warmup = (30, 5) if args.quick else (200, 20)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    c, s = args.channels, args.size
    x = torch.randn(1, c, s, s)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
    ods = {n: ODConv2d(c, c, 3, padding=1, kernel_num=n).eval() for n in (4, 1)}
    results: dict[str, object] = {
        "shape": [1, c, s, s], "kernel": 3, "threads": 1, "rounds": rounds, "warmup": warmup,
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
    }

    with torch.inference_mode():
        for n, m in ods.items():  # the reference formulation must agree before it is timed
            torch.testing.assert_close(m(x), official_style(m, x), atol=1e-4, rtol=1e-4)
        fns: dict[str, Callable[[], object]] = {"conv": lambda: conv(x)}
        for n, m in ods.items():
            fns[f"odconv_n{n}"] = lambda m=m: m(x)
            fns[f"official_n{n}"] = lambda m=m: official_style(m, x)
        eager = time_interleaved(fns, rounds, warmup)
    results["eager"] = table(f"PyTorch eager, 1 thread, input 1x{c}x{s}x{s}, 3x3 {c}->{c}, median of {rounds}",
                             eager, "conv")

    if not args.no_onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("\nonnxruntime is not importable: ONNX timings skipped")
        else:
            example = torch.randn(2, c, s, s)
            sessions = {"conv": export_session(conv, example, True)}
            for n, m in ods.items():
                sessions[f"odconv_n{n} (dynamic batch)"] = export_session(m, example, True)
                grouped = ODConv2d(c, c, 3, padding=1, kernel_num=n, conv_impl="grouped").eval()
                grouped.load_state_dict(m.state_dict())
                sessions[f"odconv_n{n} grouped (batch 1 only)"] = export_session(grouped, x, False)
                sessions[f"official_n{n} (batch 1 only)"] = export_session(OfficialStyle(m).eval(), x, False)
            feed = {"x": x.numpy()}
            with torch.inference_mode():
                for name, sess in sessions.items():
                    reference = (conv if name == "conv" else ods[int(name.split("_n")[1][0])])(x).numpy()
                    err = float(abs(sess.run(None, feed)[0] - reference).max())
                    if err > 1e-4:
                        raise AssertionError(f"{name}: onnxruntime differs from eager by {err}")
            ort_times = time_interleaved({k: (lambda v=v: v.run(None, feed)) for k, v in sessions.items()},
                                         rounds, warmup)
            results["onnxruntime"] = table(f"onnxruntime {onnxruntime.__version__}, 1 thread, batch 1", ort_times,
                                           "conv")

    # The FeatherFace attention block at its six sites for a 640x640 input (strides 8, 16, 32).
    strides = {"c3": 8, "c4": 16, "c5": 32, "p3": 8, "p4": 16, "p5": 32}
    blocks, inputs = {}, {}
    for site, ch in site_channels(52).items():
        blocks[site] = ODConvAttention(ch, **RECOMMENDED_KWARGS).eval()
        with torch.no_grad():
            blocks[site].scale.fill_(0.1)
        inputs[site] = torch.randn(1, ch, 640 // strides[site], 640 // strides[site])
    with torch.inference_mode():
        site_times = {"eager": time_interleaved({k: (lambda k=k: blocks[k](inputs[k])) for k in blocks},
                                                rounds, warmup)}
    if not args.no_onnx and "onnxruntime" in sys.modules:
        site_sessions = {k: export_session(blocks[k], torch.cat([inputs[k]] * 2), True) for k in blocks}
        site_times["onnxruntime"] = time_interleaved(
            {k: (lambda k=k: site_sessions[k].run(None, {"x": inputs[k].numpy()})) for k in blocks}, rounds, warmup)
    kinds = list(site_times)
    print("\nODConvAttention (recommended kwargs) per site, 640x640 input, batch 1, 1 thread, median ms")
    print(f"{'site':<24}" + "".join(f"{k:>14}" for k in kinds))
    for site in blocks:
        print(f"{site + ' ' + str(tuple(inputs[site].shape[1:])):<24}"
              + "".join(f"{site_times[k][site] * 1e3:>14.3f}" for k in kinds))
    print(f"{'total':<24}" + "".join(f"{sum(site_times[k].values()) * 1e3:>14.3f}" for k in kinds))
    results["sites_ms"] = {k: {s: v * 1e3 for s, v in t.items()} for k, t in site_times.items()}

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
