"""CPU cost of the modulated deformable convolution: torchvision's operator against our grid_sample form.

Shapes: the SSH convolutions of the width-52 FeatherFace at the P3 level (the largest map): 52 -> 26 and
13 -> 13, 3x3, padding 1; for training (forward + backward, batch 8, 320 px input: 40x40 maps) and for
inference (forward only, batch 1, 640 px input: 80x80 maps). Offsets are random (a few pixels), the mask in
[0, 2]. The two implementations are timed interleaved (one call each per round) after a warm-up; the figure
is the median over rounds and the ratio is torchvision / ours (> 1: ours is faster).

Usage::

    python benchmarks/bench_deform.py                 # 2 threads, 20 rounds
    python benchmarks/bench_deform.py --threads 1 --rounds 50 --json results/bench_deform.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torchvision.ops import deform_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featherface.nn.deform import deform_conv2d_by_sampling  # noqa: E402

CASES = (  # name, batch, C_in, C_out, map side, backward
    ("train 52->26 @40x40, batch 8", 8, 52, 26, 40, True),
    ("train 13->13 @40x40, batch 8", 8, 13, 13, 40, True),
    ("infer 52->26 @80x80, batch 1", 1, 52, 26, 80, False),
    ("infer 13->13 @80x80, batch 1", 1, 13, 13, 80, False),
)


def make_call(impl: str, batch: int, cin: int, cout: int, side: int, backward: bool) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cin, side, side, generator=gen, requires_grad=backward)
    offset = (torch.randn(batch, 18, side, side, generator=gen) * 2).requires_grad_(backward)
    mask = (torch.rand(batch, 9, side, side, generator=gen) * 2).requires_grad_(backward)
    weight = torch.randn(cout, cin, 3, 3, generator=gen, requires_grad=backward)

    def run() -> torch.Tensor:
        if impl == "torchvision":
            return deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
        return deform_conv2d_by_sampling(x, offset, weight, mask, 1, 1)

    def call() -> None:
        if backward:
            torch.autograd.grad(run().sum(), (x, offset, weight, mask))
        else:
            with torch.no_grad():
                run()

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds (median ms)")
    print(f"{'case':32s} {'torchvision':>12s} {'ours':>9s} {'ratio':>7s}")
    for name, *shape in CASES:
        calls = {impl: make_call(impl, *shape) for impl in ("torchvision", "sampling")}
        times: dict[str, list[float]] = {impl: [] for impl in calls}
        for i in range(args.warmup + args.rounds):
            for impl, call in calls.items():
                start = time.perf_counter()
                call()
                if i >= args.warmup:
                    times[impl].append((time.perf_counter() - start) * 1e3)
        tv, ours = statistics.median(times["torchvision"]), statistics.median(times["sampling"])
        rows.append({"case": name, "torchvision_ms": tv, "sampling_ms": ours, "ratio": tv / ours})
        print(f"{name:32s} {tv:12.2f} {ours:9.2f} {tv / ours:7.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
