"""The benchmark stage: CPU latency of the model the pipeline scored and exported.

(:mod:`featherface.deploy.benchmark` does the measuring; this module only drives the stage.)

It times the ``predict:`` section's model and weights (the export stage's model) in ONNX Runtime, bare network and
end to end, with the ``benchmark:`` section's settings (:class:`featherface.config.BenchmarkStageConfig`). Entry
point: ``featherface benchmark --params params.yaml``.

Outputs (in ``results/benchmark``, with ``provenance.json``): ``latency.json`` (every measurement), ``latency.md``
(the tables) and ``latency_ms.json`` (the medians of the model by backend and thread count: the stage's DVC
metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from featherface.config import Params, to_dict
from featherface.deploy.benchmark import BenchmarkConfig, run_benchmark
from featherface.deploy.benchmark_result import BenchmarkResult, format_markdown
from featherface.stages.export import deployed_model
from featherface.utils.io import write_json_atomic, write_text_atomic
from featherface.utils.provenance import write_record

__all__ = ["BENCHMARK_DIR", "LATENCY_METRICS", "latency_metrics", "run", "write_benchmark_record"]

#: The stage's output folder, relative to the project root.
BENCHMARK_DIR = "results/benchmark"
#: The stage's metrics file (inside :data:`BENCHMARK_DIR`).
LATENCY_METRICS = "latency_ms.json"


def latency_metrics(result: BenchmarkResult, model: str) -> dict[str, Any]:
    """The medians of ``model`` in a :class:`~featherface.deploy.benchmark.BenchmarkResult`, as flat DVC metrics:
    ``{"model": ..., "input_size": "HxW", "median_ms": {"<backend>_<threads>t": ms, ...}}``, plus
    ``"<backend>_1t_cpu"`` where the benchmark measured the CPU time of one thread."""
    rows = [row for row in result.latencies if row.model == model]
    medians = {}
    for row in rows:
        medians[f"{row.backend}_{row.threads}t"] = round(row.median_ms, 3)
        if getattr(row, "cpu_median_ms", None) is not None:  # CPU time of one thread: steadier on a busy machine
            medians[f"{row.backend}_{row.threads}t_cpu"] = round(row.cpu_median_ms, 3)
    return {"model": model, "input_size": rows[0].size if rows else None, "median_ms": medians}


def write_benchmark_record(out_dir: Path, params: Mapping[str, Any], weights: Iterable[str | Path],
                           result: BenchmarkResult) -> Path:
    """Write ``<out_dir>/provenance.json`` of a benchmark run: the parameter sections ``params``, the sha256 of the
    ``weights`` files and the measuring environment of ``result``; returns its path."""
    return write_record(out_dir, "benchmark", params, inputs=weights, extra={"environment": result.environment})


def run(params: Params, root: str | Path) -> BenchmarkResult:
    """Time the predict section's model in ONNX Runtime (bare network and end to end) with the ``benchmark:``
    settings; write ``latency.json``, ``latency.md``, ``latency_ms.json`` and ``provenance.json`` into
    ``results/benchmark`` and return the :class:`~featherface.deploy.benchmark.BenchmarkResult`.

    Raises:
        FileNotFoundError: the weights are missing. KeyError: an unknown model name.
    """
    root = Path(root)
    model, weights = deployed_model(params, root)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    cfg = params.benchmark
    config = BenchmarkConfig(
        models=(model,), weights={model: str(weights)}, retinaface=False, yunet_path=None,
        input_size=tuple(cfg.input_size), threads=tuple(cfg.threads), runs=cfg.runs, warmup=cfg.warmup,
        torch_eager=cfg.torch_eager, profile=False,
    )
    result = run_benchmark(config)
    out_dir = root / BENCHMARK_DIR
    write_json_atomic(out_dir / "latency.json", result.to_dict())
    write_text_atomic(out_dir / "latency.md", format_markdown(result))
    write_json_atomic(out_dir / LATENCY_METRICS, latency_metrics(result, model))
    write_benchmark_record(out_dir, {"benchmark": to_dict(cfg),
                                     "predict": {"model": model, "weights": params.predict.weights}},
                           [weights], result)
    return result
