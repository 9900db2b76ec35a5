"""featherface.stages.benchmark: the benchmark stage's helpers (the stages themselves run in tests/test_pipeline.py)."""

from __future__ import annotations

from featherface.deploy.benchmark_result import BenchmarkResult, LatencyRow
from featherface.stages.benchmark import latency_metrics


def _row(model: str, backend: str, threads: int, ms: float, cpu: float | None = None) -> LatencyRow:
    return LatencyRow(model, backend, threads, "640x640", ms, ms - 1, ms + 1, 10, cpu_median_ms=cpu)


def test_latency_metrics_are_the_flat_medians_of_the_deployed_model() -> None:
    result = BenchmarkResult(
        config={}, environment={}, models=[], ratios=[], profile=[], notes=[],
        latencies=[_row("featherface_odconv4", "ort", 1, 39.71234, 38.5), _row("featherface_odconv4", "e2e", 1, 43.2),
                   _row("featherface_odconv4", "ort", 2, 25.0), _row("other", "ort", 1, 5.0)],
    )
    assert latency_metrics(result, "featherface_odconv4") == {
        "model": "featherface_odconv4", "input_size": "640x640",
        "median_ms": {"ort_1t": 39.712, "ort_1t_cpu": 38.5, "e2e_1t": 43.2, "ort_2t": 25.0},
    }
    assert latency_metrics(result, "absent") == {"model": "absent", "input_size": None, "median_ms": {}}
