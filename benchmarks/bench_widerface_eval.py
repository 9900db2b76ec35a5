"""Benchmark: vectorised WIDER FACE evaluation vs a plain per-image loop implementation of the same protocol.

Both evaluate the same folder of official prediction files (written once from a golden ``preds_*.npz``) against
the official ``.mat`` ground truth, and must agree. Timed:

- ``ours_end_to_end``: ``evaluate_folder(pred_dir, gt_dir)``: reads the four ``.mat`` files, reads and checks
  every prediction file, matches, builds the curves and the three APs;
- ``ours_gt_cached``: the same with the ground truth loaded beforehand (prediction files still read);
- ``ours_in_memory``: predictions already in memory (the ``{key: array}`` mapping), ground truth loaded;
- ``baseline``: the plain implementation below, end to end (its own .mat and file reading), once.

The baseline is written here, plainly, structured like the widely used Python port of the official kit
(loops over settings, events, images, predictions and the 1000 thresholds; numpy only for the per-image IoU
matrix), as the yardstick.

Usage::

    python benchmarks/bench_widerface_eval.py [--preds PATH.npz] [--gt-dir DIR] [--repeat N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featherface.eval.prediction_files import write_prediction_folder  # noqa: E402
from featherface.eval.ground_truth import load_ground_truth  # noqa: E402
from featherface.eval.widerface import evaluate, evaluate_folder  # noqa: E402

SETTINGS = ("easy", "medium", "hard")


# ------------------------------------------------------------------------------------ the plain baseline


def baseline_read_predictions(pred_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{event: {name: (N, 5) array}} read line by line."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for event in sorted(os.listdir(pred_dir)):
        per_event = {}
        for file_name in sorted(os.listdir(pred_dir / event)):
            with open(pred_dir / event / file_name) as handle:
                lines = handle.readlines()
            name = lines[0].strip().split("/")[-1]
            if name.endswith(".jpg"):
                name = name[:-4]
            rows = []
            for line in lines[2:]:
                parts = line.split()
                if parts:
                    rows.append([float(v) for v in parts[:5]])
            per_event[name] = np.array(rows).reshape(-1, 5)
        out[event] = per_event
    return out


def baseline_iou(dets: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, K) IoU of x1 y1 x2 y2 boxes, "+1 pixel" widths, 0 unless both overlaps are positive."""
    iw = np.minimum(dets[:, None, 2], faces[None, :, 2]) - np.maximum(dets[:, None, 0], faces[None, :, 0]) + 1
    ih = np.minimum(dets[:, None, 3], faces[None, :, 3]) - np.maximum(dets[:, None, 1], faces[None, :, 1]) + 1
    det_area = (dets[:, 2] - dets[:, 0] + 1) * (dets[:, 3] - dets[:, 1] + 1)
    face_area = (faces[:, 2] - faces[:, 0] + 1) * (faces[:, 3] - faces[:, 1] + 1)
    inter = iw * ih
    union = det_area[:, None] + face_area[None, :] - inter
    iou = np.zeros_like(inter)
    ok = (iw > 0) & (ih > 0)
    iou[ok] = inter[ok] / union[ok]
    return iou


def baseline_image(dets: np.ndarray, faces: np.ndarray, counted: np.ndarray, iou_thresh: float):
    """Greedy matching in file order: (recalled so far per prediction, proposal flag per prediction)."""
    d = dets[:, :4].copy()
    d[:, 2] += d[:, 0]
    d[:, 3] += d[:, 1]
    f = faces.copy()
    f[:, 2] += f[:, 0]
    f[:, 3] += f[:, 1]
    iou = baseline_iou(d, f)
    state = np.zeros(len(faces))  # 0 untouched, 1 recalled, -1 ignored face hit
    recalled_so_far = np.zeros(len(dets))
    proposal = np.ones(len(dets))
    for i in range(len(dets)):
        best = iou[i].max()
        j = iou[i].argmax()
        if best >= iou_thresh:
            if not counted[j]:
                state[j] = -1
                proposal[i] = -1
            elif state[j] == 0:
                state[j] = 1
        recalled_so_far[i] = np.count_nonzero(state == 1)
    return recalled_so_far, proposal


def baseline_image_curve(norm_scores: np.ndarray, recalled_so_far: np.ndarray, proposal: np.ndarray) -> np.ndarray:
    curve = np.zeros((1000, 2))
    for t in range(1000):
        above = np.where(norm_scores >= 1 - (t + 1) / 1000)[0]
        if len(above):
            last = above[-1]
            curve[t, 0] = np.count_nonzero(proposal[: last + 1] == 1)
            curve[t, 1] = recalled_so_far[last]
    return curve


def baseline_voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(p) - 1, 0, -1):
        p[i - 1] = np.maximum(p[i - 1], p[i])
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def baseline_evaluate(pred_dir: Path, gt_dir: Path, iou_thresh: float = 0.5) -> dict[str, float]:
    preds = baseline_read_predictions(pred_dir)
    face_mat = scipy.io.loadmat(str(gt_dir / "wider_face_val.mat"))
    lists = {s: scipy.io.loadmat(str(gt_dir / f"wider_{s}_val.mat"))["gt_list"] for s in SETTINGS}
    lo, hi = 1.0, 0.0
    for per_event in preds.values():
        for dets in per_event.values():
            if len(dets):
                lo, hi = min(lo, dets[:, 4].min()), max(hi, dets[:, 4].max())
    for per_event in preds.values():
        for dets in per_event.values():
            if len(dets):
                dets[:, 4] = (dets[:, 4] - lo) / (hi - lo)
    aps = {}
    for setting in SETTINGS:
        total = np.zeros((1000, 2))
        n_faces = 0
        for i, event_cell in enumerate(face_mat["event_list"]):
            event = str(event_cell[0][0])
            if event not in preds:
                continue
            for j, file_cell in enumerate(face_mat["file_list"][i][0]):
                name = str(file_cell[0][0])
                if name not in preds[event]:
                    continue
                dets = preds[event][name]
                faces = face_mat["face_bbx_list"][i][0][j][0].astype(float)
                listed = lists[setting][i][0][j][0].reshape(-1).astype(int)
                n_faces += len(listed)
                if len(faces) == 0 or len(dets) == 0:
                    continue
                counted = np.zeros(len(faces), dtype=bool)
                counted[listed - 1] = True
                recalled_so_far, proposal = baseline_image(dets, faces, counted, iou_thresh)
                total += baseline_image_curve(dets[:, 4], recalled_so_far, proposal)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = total[:, 1] / total[:, 0]
        aps[setting] = baseline_voc_ap(total[:, 1] / n_faces, precision)
    return aps


# ------------------------------------------------------------------------------------------------- main


def _default_shared() -> Path:
    return Path(os.environ.get("FEATHERFACE_SHARED", REPO.parent / "shared"))


def _timed(fn, repeat: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def main(argv: list[str] | None = None) -> int:
    shared = _default_shared()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preds", type=Path, default=shared / "golden/widerface_eval/preds_full_jitter.npz")
    parser.add_argument("--gt-dir", type=Path, default=shared / "data/widerface/val")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each variant of ours (default 5)")
    parser.add_argument("--skip-baseline", action="store_true", help="time ours only")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    with np.load(args.preds) as data:
        preds = {key: data[key] for key in data.files}
    expected_path = args.preds.parent / "expected_ap.json"
    set_name = args.preds.stem.removeprefix("preds_")
    expected = json.loads(expected_path.read_text()).get(set_name) if expected_path.is_file() else None

    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(tmp) / "preds"
        write_prediction_folder(preds, pred_dir)
        evaluate_folder(pred_dir, args.gt_dir)  # warm-up (imports, page cache)
        end_to_end, result = _timed(lambda: evaluate_folder(pred_dir, args.gt_dir), args.repeat)
        gt_load, gt = _timed(lambda: load_ground_truth(args.gt_dir), args.repeat)
        gt_cached, _ = _timed(lambda: evaluate(pred_dir, gt), args.repeat)
        in_memory, _ = _timed(lambda: evaluate(preds, gt), args.repeat)
        baseline_s, baseline_ap = None, None
        if not args.skip_baseline:
            start = time.perf_counter()
            baseline_ap = baseline_evaluate(pred_dir, args.gt_dir)
            baseline_s = time.perf_counter() - start

    ours_ap = dict(result.ap)
    report = {
        "preds": str(args.preds),
        "images": f"{result.num_images} of {result.num_images_total}",
        "num_predictions": result.num_predictions,
        "ap": ours_ap,
        "expected_ap": {s: expected[s] for s in SETTINGS} if expected else None,
        "max_abs_diff_vs_expected": max(abs(ours_ap[s] - expected[s]) for s in SETTINGS) if expected else None,
        "baseline_ap": baseline_ap,
        "max_abs_diff_vs_baseline": max(abs(ours_ap[s] - baseline_ap[s]) for s in SETTINGS) if baseline_ap else None,
        "seconds": {
            "ours_end_to_end_median": statistics.median(end_to_end),
            "ours_end_to_end_min": min(end_to_end),
            "ground_truth_load_median": statistics.median(gt_load),
            "ours_gt_cached_median": statistics.median(gt_cached),
            "ours_in_memory_median": statistics.median(in_memory),
            "baseline": baseline_s,
        },
        "speedup_end_to_end": (baseline_s / statistics.median(end_to_end)) if baseline_s else None,
        "repeat": args.repeat,
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count()},
    }
    sec = report["seconds"]
    print(f"WIDER FACE eval on {args.preds.name}: {report['images']} images, {result.num_predictions} predictions")
    print(f"  AP ours      {result.summary()}")
    if expected:
        print(f"  vs expected  max |diff| = {report['max_abs_diff_vs_expected']:.3g}")
    if baseline_ap:
        print(f"  vs baseline  max |diff| = {report['max_abs_diff_vs_baseline']:.3g}")
    print(f"  ours, end to end (.mat + files + eval), median of {args.repeat}: {sec['ours_end_to_end_median']:.3f} s")
    print(f"    ground truth .mat load:                           {sec['ground_truth_load_median']:.3f} s")
    print(f"    ground truth cached (files + eval):               {sec['ours_gt_cached_median']:.3f} s")
    print(f"    in memory (eval only):                            {sec['ours_in_memory_median']:.3f} s")
    if baseline_s is not None:
        print(f"  baseline, plain loops, end to end:                  {baseline_s:.2f} s")
        print(f"  ratio baseline / ours (end to end):                 {report['speedup_end_to_end']:.0f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok_expected = expected is None or report["max_abs_diff_vs_expected"] <= 1e-9
    ok_baseline = baseline_ap is None or report["max_abs_diff_vs_baseline"] <= 1e-9
    return 0 if ok_expected and ok_baseline else 1


if __name__ == "__main__":
    sys.exit(main())
