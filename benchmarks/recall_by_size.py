"""Where detectors differ: recall of one WIDER FACE setting's faces by face height, at fixed score thresholds.

A face counts as found when a prediction scoring at least the threshold has it as its best match with IoU >= 0.5
(the official evaluation's rule, :mod:`featherface.eval.widerface`); only images with a prediction file count.

Usage::

    python benchmarks/recall_by_size.py --gt data/builtin/widerface/val \\
        builtin=results/builtin/long3/predict/predictions v1=results/ablation/featherface_none-checkpoint-seed0/predict/predictions
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featherface.eval.ground_truth import WiderGroundTruth, load_ground_truth  # noqa: E402
from featherface.eval.prediction_files import read_prediction_folder  # noqa: E402
from featherface.eval.widerface import _pairwise_best_match  # noqa: E402

HEIGHT_BINS = (0, 8, 12, 16, 24, 32, 64, 10**9)


def recall_by_height(gt: WiderGroundTruth, preds: Mapping[str, np.ndarray], setting: str,
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(found, total) faces of ``setting`` per bin of :data:`HEIGHT_BINS` (face height in pixels), over the images
    that have predictions (``preds``: image key -> (N, 5) ``x, y, w, h, score``)."""
    images = [i for i, image in enumerate(gt.images) if image.key in preds and gt.offsets[i + 1] > gt.offsets[i]]
    boxes, offsets, listed, dets, owner = [], [0], [], [], []
    for position, i in enumerate(images):
        start, stop = gt.offsets[i], gt.offsets[i + 1]
        boxes.append(gt.boxes[start:stop])
        listed.append(gt.listed_mask[setting][start:stop])
        offsets.append(offsets[-1] + stop - start)
        d = np.asarray(preds[gt.images[i].key], np.float64).reshape(-1, 5)
        d = d[d[:, 4] >= threshold]
        dets.append(d[:, :4])
        owner.append(np.full(len(d), position, np.int64))
    size = len(HEIGHT_BINS) - 1
    if not images:
        return np.zeros(size), np.zeros(size)
    faces = np.concatenate(boxes).astype(np.float64)
    match = _pairwise_best_match(np.concatenate(dets), np.concatenate(owner), faces, np.asarray(offsets, np.int64),
                                 0.5, 2_000_000)
    found = np.zeros(len(faces), bool)
    found[match[match >= 0]] = True
    mask = np.concatenate(listed)
    bins = np.digitize(faces[mask, 3], HEIGHT_BINS) - 1
    return np.bincount(bins, found[mask], size), np.bincount(bins, minlength=size).astype(float)


def detector_comparison_parser(description: str, thresholds: list[float]) -> argparse.ArgumentParser:
    """The command line of the scripts that compare detectors' prediction folders on one WIDER setting."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("predictions", nargs="+", help="NAME=FOLDER of WIDER prediction files")
    parser.add_argument("--gt", required=True, help="folder with wider_face_val.mat and wider_<setting>_val.mat")
    parser.add_argument("--setting", default="hard", choices=("easy", "medium", "hard"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=thresholds)
    return parser


def bin_labels(bins: tuple[int, ...]) -> list[str]:
    """Column labels of consecutive bins: ``lo-hi``, the last (open) one ``>=lo``."""
    return [f"{lo}-{hi}" if hi < 10**9 else f">={lo}" for lo, hi in zip(bins[:-1], bins[1:])]


def main(argv: list[str] | None = None) -> None:
    parser = detector_comparison_parser(__doc__.splitlines()[0], [0.3, 0.5])
    args = parser.parse_args(argv)
    gt = load_ground_truth(args.gt)
    labels = bin_labels(HEIGHT_BINS)
    totals: np.ndarray | None = None
    rows = []
    for spec in args.predictions:
        name, _, folder = spec.partition("=")
        for threshold in args.thresholds:
            found, total = recall_by_height(gt, read_prediction_folder(folder), args.setting, threshold)
            if totals is not None and not np.array_equal(total, totals):
                parser.error(f"{name}: predictions for other images than the first detector's; compare detectors "
                             "run on the same images")
            totals = total
            rows.append(f"| {name} | {threshold:g} | " + " | ".join(
                f"{f / t:.3f}" if t else "-" for f, t in zip(found, total)) + " |")
    assert totals is not None
    print(f"Recall of the {args.setting} faces by face height (px), IoU >= 0.5")
    print("| detector | score >= | " + " | ".join(f"{b} ({int(t)})" for b, t in zip(labels, totals)) + " |")
    print("|---|---:|" + "---:|" * len(labels))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
