"""WIDER FACE AP of a runtime detector on a val image folder: the accuracy column of ``featherface benchmark``.

The detector (our ONNX export through :class:`~featherface.inference.onnx.OnnxFaceDetector`, or a peer of
:mod:`featherface.inference.peers`) runs with the WIDER protocol settings (:data:`~featherface.inference.onnx.WIDER_SETTINGS`:
score 0.02, NMS 0.4, top 5000, keep 750) on every image of the folder at its original size; the detections are
scored in memory by :func:`featherface.eval.widerface.evaluate`, the evaluation ``featherface evaluate`` runs.
With the 233 val images of ``shared/data/widerface`` this takes one to two minutes per model on one thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featherface.eval.prediction_files import prediction_key
from featherface.eval.widerface import evaluate
from featherface.inference.images import list_images

__all__ = ["ModelAccuracy", "wider_ap"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelAccuracy:
    """WIDER AP (in [0, 1]) of one detector on ``images`` images (``num_images_total`` in the ground truth)."""

    model: str
    easy: float
    medium: float
    hard: float
    images: int
    num_images_total: int
    seconds: float


def wider_ap(
    name: str,
    detector: Callable[[Path], Any],
    images_dir: str | Path,
    gt: Any,
    limit: int | None = None,
) -> ModelAccuracy:
    """AP of ``detector`` on the images under ``images_dir`` (``<event>/<name>.jpg``; the first ``limit`` in
    sorted order when given) against the ground truth ``gt`` (a folder with the four ``wider_*_val.mat`` files,
    or a loaded :class:`~featherface.eval.ground_truth.WiderGroundTruth`).

    Raises:
        FileNotFoundError: no such folder, or no images in it.
        PredictionFileError: an image that is not in the ground truth.
    """
    images_dir = Path(images_dir)
    paths = list_images(images_dir)[:limit] if limit else list_images(images_dir)
    if not paths:
        raise FileNotFoundError(f"benchmark AP: no images under {images_dir}")
    preds: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for path in paths:
        rel = path.relative_to(images_dir)
        event = rel.parent.as_posix() if rel.parent != Path(".") else ""
        preds[prediction_key(event, path.stem)] = detector(path).to_wider_rows()
    seconds = time.perf_counter() - start
    result = evaluate(preds, gt)
    log.info("benchmark AP %s: %s in %.0f s", name, result.summary(), seconds)
    return ModelAccuracy(name, float(result.ap["easy"]), float(result.ap["medium"]), float(result.ap["hard"]),
                         int(result.num_images), int(result.num_images_total), round(seconds, 1))
