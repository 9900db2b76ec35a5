"""The pipeline's export and benchmark stages: the model the pipeline scored, exported and timed.

(:mod:`featherface.deploy.rewrites` holds the exact rewrites the export applies; this module only drives the stages.)

Both read the ``predict:`` section's model and weights (in the default pipeline, the train stage's checkpoint), so
the ONNX file and the latency figures are of the model whose AP the score stage measured. Their settings are the
``export:`` and ``benchmark:`` sections of ``params.yaml`` (:class:`featherface.config.ExportConfig`,
:class:`featherface.config.BenchmarkStageConfig`). Entry points: ``featherface export --params params.yaml`` and
``featherface benchmark --params params.yaml``.

Outputs (each folder also gets a ``provenance.json``):

* ``results/export/<model>.onnx`` (checked against eager PyTorch before it is written) and ``summary.json``;
* ``results/benchmark/latency.json`` (every measurement), ``latency.md`` (the tables) and ``latency_ms.json``
  (the medians of the exported model by backend and thread count: the stage's DVC metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featherface.config import Params, resolve_path, to_dict

__all__ = ["EXPORT_DIR", "BENCHMARK_DIR", "LATENCY_METRICS", "latency_metrics", "run_benchmark_stage",
           "run_export_stage"]

#: The stages' output folders, relative to the project root.
EXPORT_DIR = "results/export"
BENCHMARK_DIR = "results/benchmark"
#: The benchmark stage's metrics file (inside :data:`BENCHMARK_DIR`).
LATENCY_METRICS = "latency_ms.json"


def _deployed(params: Params, root: Path) -> tuple[str, Path]:
    """The predict section's model name and weights path (resolved against the project root)."""
    return params.predict.model, resolve_path(params.predict.weights, root)


def run_export_stage(params: Params, root: str | Path) -> dict[str, Any]:
    """Export the predict section's model to ``results/export/<model>.onnx`` with the ``export:`` settings.

    Writes the ONNX file (only after it matches eager PyTorch), ``summary.json`` and ``provenance.json`` (the
    settings, the sha256 of the weights and of the ONNX file) and returns the summary.

    Raises:
        FileNotFoundError: the weights are missing. ValueError: the exported file does not match eager PyTorch.
    """
    from featherface.deploy.export import export_pretrained
    from featherface.utils.provenance import sha256_file, write_json, write_record

    root = Path(root)
    model, weights = _deployed(params, root)
    out_dir = root / EXPORT_DIR
    output = out_dir / f"{model}.onnx"
    cfg = params.export
    options = {"opset": cfg.opset, "dynamic": cfg.dynamic, "dynamic_batch": cfg.dynamic_batch, "fuse": cfg.fuse,
               "input_size": tuple(cfg.input_size), "batch_size": 1, "check": True}
    summary = export_pretrained(model, weights, output, format="onnx", **options)
    write_json(out_dir / "summary.json", summary)
    settings = {"model": model, "weights": str(params.predict.weights), "format": "onnx", **options}
    write_record(out_dir, "export", {"export": settings}, inputs=[weights],
                 extra={"outputs_sha256": {str(output): sha256_file(output)}})
    return summary


def latency_metrics(result: Any, model: str) -> dict[str, Any]:
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


def run_benchmark_stage(params: Params, root: str | Path) -> Any:
    """Time the predict section's model in ONNX Runtime (bare network and end to end) with the ``benchmark:``
    settings; write ``latency.json``, ``latency.md``, ``latency_ms.json`` and ``provenance.json`` into
    ``results/benchmark`` and return the :class:`~featherface.deploy.benchmark.BenchmarkResult`.

    Raises:
        FileNotFoundError: the weights are missing. KeyError: an unknown model name.
    """
    from featherface.deploy.benchmark import BenchmarkConfig, run_benchmark
    from featherface.deploy.benchmark_result import format_markdown
    from featherface.utils.provenance import atomic_write_text, write_json, write_record

    root = Path(root)
    model, weights = _deployed(params, root)
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
    write_json(out_dir / "latency.json", result.to_dict())
    atomic_write_text(out_dir / "latency.md", format_markdown(result))
    write_json(out_dir / LATENCY_METRICS, latency_metrics(result, model))
    write_record(out_dir, "benchmark", {"benchmark": to_dict(cfg),
                                        "predict": {"model": model, "weights": params.predict.weights}},
                 inputs=[weights], extra={"environment": result.environment})
    return result
