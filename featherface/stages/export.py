"""The export stage: the model the pipeline scored, exported to ONNX and checked against eager PyTorch.

(:mod:`featherface.deploy.export` does the export, with the exact rewrites of :mod:`featherface.deploy.rewrites`;
this module only drives the stage.)

It reads the ``predict:`` section's model and weights (in the default pipeline, the train stage's checkpoint), so
the ONNX file is of the model whose AP the score stage measured, and the ``export:`` section's settings
(:class:`featherface.config.ExportConfig`). Entry point: ``featherface export --params params.yaml``.

Outputs: ``results/export/<model>.onnx`` (written only once it matches eager PyTorch), ``summary.json`` (the parity
figures) and ``provenance.json`` (the settings, the sha256 of the weights and of the ONNX file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from featherface.config import Params, resolve_path
from featherface.deploy.export import export_pretrained
from featherface.utils.io import sha256_file, write_json_atomic
from featherface.utils.provenance import write_record

__all__ = ["EXPORT_DIR", "deployed_model", "run", "write_export_record"]

#: The stage's output folder, relative to the project root.
EXPORT_DIR = "results/export"


def deployed_model(params: Params, root: Path) -> tuple[str, Path]:
    """The predict section's model name and weights path (resolved against the project root ``root``): the model
    the export and benchmark stages deploy."""
    return params.predict.model, resolve_path(params.predict.weights, root)


def write_export_record(output: Path, settings: Mapping[str, Any], weights: str | Path) -> Path:
    """Write ``provenance.json`` beside an exported file: the export ``settings``, the sha256 of ``weights`` and
    of ``output``; returns its path."""
    return write_record(output.parent, "export", {"export": dict(settings)}, inputs=[weights],
                        extra={"outputs_sha256": {str(output): sha256_file(output)}})


def run(params: Params, root: str | Path) -> dict[str, Any]:
    """Export the predict section's model to ``results/export/<model>.onnx`` with the ``export:`` settings.

    Writes the ONNX file (only after it matches eager PyTorch), ``summary.json`` and ``provenance.json`` and
    returns the summary.

    Raises:
        FileNotFoundError: the weights are missing. ValueError: the exported file does not match eager PyTorch.
    """
    root = Path(root)
    model, weights = deployed_model(params, root)
    out_dir = root / EXPORT_DIR
    output = out_dir / f"{model}.onnx"
    cfg = params.export
    options = {"opset": cfg.opset, "dynamic": cfg.dynamic, "dynamic_batch": cfg.dynamic_batch, "fuse": cfg.fuse,
               "input_size": tuple(cfg.input_size), "batch_size": 1, "check": True}
    summary = export_pretrained(model, weights, output, format="onnx", **options)
    write_json_atomic(out_dir / "summary.json", summary)
    write_export_record(output, {"model": model, "weights": str(params.predict.weights), "format": "onnx",
                                 **options}, weights)
    return summary
