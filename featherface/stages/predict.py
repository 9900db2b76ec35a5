"""The predict stage: run the ``predict:`` section's model and weights over the val images with the evaluation
protocol and write the official WIDER prediction files (``results/predict/predictions/<event>/<name>.txt``),
``summary.json`` and ``provenance.json``. Entry point: ``featherface predict --params params.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featherface.config import Params, PredictConfig, resolve_path, to_dict
from featherface.eval.predict import PredictSummary, predict_folder
from featherface.inference.detector import FaceDetector
from featherface.utils.io import ProgressCallback, write_json_atomic
from featherface.utils.provenance import write_record

__all__ = ["PREDICT_DIR", "PredictRun", "build_detector", "run"]

#: The stage's output folder, relative to the project root (prediction files in its ``predictions/``).
PREDICT_DIR = "results/predict"


@dataclass(frozen=True)
class PredictRun:
    """What the stage did: the summary of :func:`~featherface.eval.predict.predict_folder`, the device it ran on
    and the folder of the prediction files."""

    summary: PredictSummary
    device: str
    predictions: Path


def build_detector(cfg: PredictConfig, model: str, weights: Path) -> FaceDetector:
    """A detector of ``model`` (empty: the architecture a checkpoint of ours records, overrides such as ``width``
    included) with ``weights`` and the section's protocol (score threshold, NMS IoU, pre-NMS top-k, keep top-k,
    long side, batch size) on the section's device (``auto``: CUDA when available)."""
    device = None if cfg.device == "auto" else cfg.device
    return FaceDetector.from_pretrained(model or None, weights, settings=cfg.detector_settings(), device=device)


def run(params: Params, root: str | Path, images: str | Path | None = None, out_dir: str | Path | None = None,
        progress: ProgressCallback | None = None) -> PredictRun:
    """Predict every image of ``images`` (default ``<data.root>/widerface/val/images``) into
    ``<out_dir>/predictions`` (default ``<root>/results/predict``); write ``summary.json`` and ``provenance.json``.

    Unreadable images are skipped (listed in ``summary.skipped``).

    Raises:
        FileNotFoundError: the weights or the image folder are missing. KeyError: an unknown model name.
    """
    root = Path(root)
    images = Path(images) if images else resolve_path(params.data.root, root) / "widerface/val/images"
    out_dir = Path(out_dir) if out_dir else root / PREDICT_DIR
    weights = resolve_path(params.predict.weights, root)
    detector = build_detector(params.predict, params.predict.model, weights)
    summary = predict_folder(detector, images, out_dir / "predictions", progress=progress)
    write_json_atomic(out_dir / "summary.json", {**summary.to_dict(), "device": str(detector.device)})
    write_record(out_dir, "predict", {"predict": to_dict(params.predict)}, inputs=[weights], extra=summary.to_dict())
    return PredictRun(summary, str(detector.device), out_dir / "predictions")
