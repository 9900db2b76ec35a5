"""Latency timing: repeated calls of one callable, and several callables interleaved in rounds (milliseconds)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["time_callable", "time_interleaved"]


def time_callable(fn: Callable[[], Any], runs: int, warmup: int) -> tuple[float, float, float, Any]:
    """``warmup`` untimed then ``runs`` timed calls of ``fn``: ``(median_ms, min_ms, max_ms, last result)``."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times), max(times), result


def time_interleaved(fns: Mapping[str, Callable[[], Any]], rounds: int,
                     warmup: int) -> dict[str, dict[str, list[float]]]:
    """Per-call milliseconds of several callables timed in rounds: ``warmup`` untimed calls of each, then
    ``rounds`` rounds in which each runs once, the order rotating by one from round to round.

    Returns:
        ``{name: {"wall": [ms per round], "cpu": [ms per round]}}``: wall clock (``time.perf_counter``) and CPU
        time of the calling thread (``time.thread_time``), so ``times[a]["wall"][r] / times[b]["wall"][r]`` is the
        ratio of round r. The CPU time is the compute time of a runtime that works in the calling thread (ONNX
        Runtime and OpenVINO with one thread do), without the time the thread waited for a core.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {name: {"wall": [0.0] * rounds, "cpu": [0.0] * rounds} for name in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            wall, cpu = time.perf_counter(), time.thread_time()
            fns[name]()
            times[name]["cpu"][r] = (time.thread_time() - cpu) * 1e3
            times[name]["wall"][r] = (time.perf_counter() - wall) * 1e3
    return times
