"""Where detectors lose precision: each detection at a score threshold sorted into the WIDER matching's outcomes.

A detection of one WIDER FACE setting is, under the official evaluation's rule (:mod:`featherface.eval.widerface`:
its best-IoU face, matched at IoU >= 0.5, detections taken in file order):

* ``found``: the first match of a face the setting lists (a true positive);
* ``ignored``: matched to a face the setting does not list (neither true nor false);
* ``duplicate``: matched to a listed face an earlier detection already found (a false positive);
* ``poor box``: no match, but IoU >= 0.3 with some face (a false positive the box regression lost);
* ``background``: IoU < 0.3 with every face (a false positive on background, or on a face nobody labelled).

False positives are also counted by detection height (px). Only images with a prediction file count.

Usage::

    python benchmarks/false_positives.py --gt data/builtin/widerface/val \\
        builtin=results/builtin/zoom3/predict/predictions retinaface=results/peers/retinaface/predictions \\
        --thresholds 0.5 0.7
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from featherface.eval.ground_truth import WiderGroundTruth, load_ground_truth  # noqa: E402
from featherface.eval.prediction_files import read_prediction_folder  # noqa: E402
from featherface.eval.widerface import _pairwise_best_match  # noqa: E402
from recall_by_size import bin_labels, detector_comparison_parser  # noqa: E402

OUTCOMES = ("found", "ignored", "duplicate", "poor box", "background")
FALSE_POSITIVES = ("duplicate", "poor box", "background")
HEIGHT_BINS = (0, 16, 32, 10**9)
POOR_BOX_IOU = 0.3


def classify_image(dets: np.ndarray, faces: np.ndarray, listed: np.ndarray) -> list[str]:
    """The outcome (one of :data:`OUTCOMES`) of each of the (D, >=4) detections of one image, in their order, given
    its (F, 4) faces and the (F,) bool mask of the faces the setting lists. The matching (best-IoU face, the
    reference's "+1 pixel" IoU) is the evaluation's own."""
    if len(faces) == 0:
        return ["background"] * len(dets)
    boxes, image, offsets = dets[:, :4].astype(np.float64), np.zeros(len(dets), np.int64), np.array([0, len(faces)])

    def best_face(iou: float) -> np.ndarray:
        return _pairwise_best_match(boxes, image, faces.astype(np.float64), offsets, iou, 2_000_000)

    matched, near = best_face(0.5), best_face(POOR_BOX_IOU)
    found = np.zeros(len(faces), bool)
    outcomes = []
    for face, near_face in zip(matched, near):
        if face >= 0:
            if not listed[face]:
                outcomes.append("ignored")
            elif found[face]:
                outcomes.append("duplicate")
            else:
                found[face] = True
                outcomes.append("found")
        else:
            outcomes.append("poor box" if near_face >= 0 else "background")
    return outcomes


def count_outcomes(gt: WiderGroundTruth, preds: Mapping[str, np.ndarray], setting: str,
                   threshold: float) -> dict[str, np.ndarray]:
    """Detections scoring at least ``threshold`` per outcome and per bin of :data:`HEIGHT_BINS` (detection height),
    summed over the images with predictions (``preds``: image key -> (N, 5) ``x, y, w, h, score``)."""
    counts = {outcome: np.zeros(len(HEIGHT_BINS) - 1, np.int64) for outcome in OUTCOMES}
    for i, image in enumerate(gt.images):
        if image.key not in preds:
            continue
        dets = np.asarray(preds[image.key], np.float64).reshape(-1, 5)
        dets = dets[dets[:, 4] >= threshold]
        start, stop = gt.offsets[i], gt.offsets[i + 1]
        outcomes = classify_image(dets, gt.boxes[start:stop].astype(np.float64),
                                  gt.listed_mask[setting][start:stop])
        bins = np.digitize(dets[:, 3], HEIGHT_BINS) - 1
        for outcome, b in zip(outcomes, bins):
            counts[outcome][b] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    args = detector_comparison_parser(__doc__.splitlines()[0], [0.5, 0.7]).parse_args(argv)
    gt = load_ground_truth(args.gt)
    heights = bin_labels(HEIGHT_BINS)
    print(f"Detections of the {args.setting} setting by outcome (false positives also by detection height, px)")
    print("| detector | score >= | " + " | ".join(OUTCOMES) + " | precision | "
          + " | ".join(f"FP {h}" for h in heights) + " |")
    print("|---|---:|" + "---:|" * (len(OUTCOMES) + 1 + len(heights)))
    for spec in args.predictions:
        name, _, folder = spec.partition("=")
        preds = read_prediction_folder(folder)
        for threshold in args.thresholds:
            counts = count_outcomes(gt, preds, args.setting, threshold)
            totals = {outcome: int(c.sum()) for outcome, c in counts.items()}
            false = sum(counts[o] for o in FALSE_POSITIVES)
            judged = totals["found"] + int(false.sum())
            precision = f"{totals['found'] / judged:.3f}" if judged else "-"
            print(f"| {name} | {threshold:g} | " + " | ".join(str(totals[o]) for o in OUTCOMES)
                  + f" | {precision} | " + " | ".join(str(int(v)) for v in false) + " |")


if __name__ == "__main__":
    main()
