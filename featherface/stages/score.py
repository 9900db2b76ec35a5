"""The score stage: WIDER FACE Easy / Medium / Hard AP of the predict stage's prediction files against the
official ground truth (:func:`featherface.eval.widerface.evaluate_folder`), with PR curves as a PNG and CSV files.
Entry point: ``featherface score --params params.yaml``.

:func:`score_folder` (scoring any prediction folder and writing ``ap.json``, ``pr_curves.png`` and ``pr/``) is
also what ``featherface evaluate`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from featherface.config import Params, resolve_path, to_dict
from featherface.eval.plots import PR_CSV_DIR, plot_pr_curves, write_pr_csv
from featherface.eval.widerface import WiderResult, evaluate_folder
from featherface.utils.io import write_text_atomic
from featherface.utils.provenance import write_record

__all__ = ["SCORE_DIR", "run", "score_folder"]

#: The stage's output folder, relative to the project root.
SCORE_DIR = "results/score"


def score_folder(pred_dir: Path, gt_dir: Path, out_dir: Path, iou: float,
                 unknown: Literal["error", "ignore"] = "error", title: str | None = None) -> WiderResult:
    """Score the prediction files of ``pred_dir`` against the ``wider_*_val.mat`` files of ``gt_dir`` with IoU
    threshold ``iou``; write ``ap.json``, ``pr_curves.png`` (titled ``title``) and the curves as
    ``pr/<setting>.csv`` into ``out_dir`` and return the result.

    Raises:
        UnknownImagesError: prediction files of images that are not in the ground truth (``unknown="error"``).
        PredictionFileError: a malformed prediction file (named, with its line).
    """
    result = evaluate_folder(pred_dir, gt_dir, iou, unknown=unknown)
    write_text_atomic(out_dir / "ap.json", result.to_json())
    plot_pr_curves(result, out_dir / "pr_curves.png", title=title)
    write_pr_csv(result, out_dir / PR_CSV_DIR)
    return result


def run(params: Params, root: str | Path, predictions: str | Path | None = None,
        out_dir: str | Path | None = None) -> WiderResult:
    """Score ``predictions`` (default ``<root>/results/predict/predictions``) against
    ``<data.root>/widerface/val`` with the ``score:`` section's IoU; write the outputs of :func:`score_folder` and
    ``provenance.json`` into ``out_dir`` (default ``<root>/results/score``) and return the result.

    Raises:
        UnknownImagesError: prediction files of images that are not in the ground truth.
    """
    root = Path(root)
    pred_dir = Path(predictions) if predictions else root / "results" / "predict" / "predictions"
    gt_dir = resolve_path(params.data.root, root) / "widerface" / "val"
    out_dir = Path(out_dir) if out_dir else root / SCORE_DIR
    title = f"{params.predict.model} on WIDER FACE val"
    result = score_folder(pred_dir, gt_dir, out_dir, params.score.iou_threshold, "error", title)
    write_record(
        out_dir, "score", {"score": to_dict(params.score), "predict": to_dict(params.predict)},
        inputs=sorted(gt_dir.glob("wider_*_val.mat")),
        extra={"ap": result.ap, "num_images": result.num_images, "num_images_total": result.num_images_total},
    )
    return result
