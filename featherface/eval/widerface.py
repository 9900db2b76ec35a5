"""The official WIDER FACE evaluation (Easy / Medium / Hard AP), in vectorised numpy.

Reproduces the protocol of the official evaluation kit as ported to Python by wondervictor
(``WiderFace-Evaluation/evaluation.py``, shipped in biubug6/Pytorch_Retinaface), which every RetinaFace /
FeatherFace number is computed with (Yang et al., "WIDER FACE: A Face Detection Benchmark", CVPR 2016):

1. Scores are min-max normalised over all predictions of the run, with the reference's bounds
   ``lo = min(1, min score)``, ``hi = max(0, max score)``: ``s' = (s - lo) / (hi - lo)``.
2. Per image and per prediction *in file order*, the ground-truth box of highest IoU (first one on ties;
   IoU with the "+1 pixel" convention: ``x2 = x + w``, widths ``x2 - x1 + 1``) is its match if IoU >= 0.5.
   A match on a face that is not in the setting's list removes the prediction from the proposals; the first
   match on a listed face recalls it; further matches on it are ordinary false positives. Faces stay
   matchable (no one-to-one assignment). Images without ground-truth boxes contribute no proposals.
3. For the 1000 thresholds ``t_k = 1 - (k + 1) / 1000``, each image contributes the proposals and recalled
   faces up to and including its *last* prediction (in file order) with ``s' >= t_k``.
   Precision = recalled / proposals, recall = recalled / listed faces of the evaluated images.
4. AP is the VOC all-point interpolated area under that curve.

How it is vectorised: a prediction's match does not depend on the other predictions, so all predictions of
all images are matched at once (IoU over every same-image (prediction, face) pair, in memory-bounded chunks);
"first match per face" is a stable unique; and "up to the last prediction above t" becomes a per-image
suffix minimum of each prediction's threshold index, so each curve is one ``bincount`` and one ``cumsum``.
No Python loop runs over images, predictions or thresholds.

Subset evaluation: only images that have predictions take part, and only their faces count; the result
always says how many of the ground truth's images took part. The ground truth (the official ``.mat`` files)
is read by :mod:`featherface.eval.ground_truth`; the result types are :mod:`featherface.eval.results`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from featherface.eval.ground_truth import WiderGroundTruth, load_ground_truth
from featherface.eval.prediction_files import (
    PredictionFileError,
    check_detections,
    read_prediction_folder,
    split_key,
)
from featherface.eval.results import PRCurve, WiderResult

__all__ = [
    "NUM_THRESHOLDS",
    "UnknownImagesError",
    "evaluate",
    "evaluate_folder",
    "score_thresholds",
    "voc_ap",
]

log = logging.getLogger(__name__)

NUM_THRESHOLDS = 1000
DEFAULT_CHUNK_PAIRS = 2_000_000


# ------------------------------------------------------------------------------------------------ thresholds


def score_thresholds(num: int = NUM_THRESHOLDS) -> np.ndarray:
    """float64 (num,) the reference's descending thresholds ``1 - (k + 1) / num``, k = 0 .. num - 1."""
    return 1.0 - np.arange(1, num + 1, dtype=np.int64) / num


# ------------------------------------------------------------------------------------------ the algorithm


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP (the reference's ``voc_ap``).

    Args:
        recall: (T,) recall at each threshold, non-decreasing.
        precision: (T,) precision at each threshold (NaN entries propagate towards lower recall, as in the
            reference; they never weigh in when they sit where recall is still 0).

    Returns:
        ``sum over recall steps of (r[i+1] - r[i]) * max(precision at recall >= r[i+1])``, with the curve
        padded by (0, 0) in front and (1, 0) behind.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _pairwise_best_match(
    pred_xywh: np.ndarray,
    pred_image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_offsets: np.ndarray,
    iou_thresh: float,
    chunk_pairs: int,
) -> np.ndarray:
    """For every prediction, the face it matches, or -1.

    Args:
        pred_xywh: float64 (P, 4) predictions, grouped by image (file order inside an image).
        pred_image: int64 (P,) ground-truth image position of each prediction (non-decreasing); every such
            image has at least one face.
        gt_boxes: float64 (F, 4) faces ``x, y, w, h`` of all images.
        gt_offsets: int64 (I + 1,) image ``i`` owns faces ``gt_offsets[i]:gt_offsets[i + 1]``.
        iou_thresh: IoU needed for a match.
        chunk_pairs: bound on (prediction, face) pairs held in memory at once (about 50 bytes each).

    Returns:
        int64 (P,) global index into ``gt_boxes`` of the face with the highest IoU (first on ties) when that
        IoU >= ``iou_thresh``, else -1. IoU as in the reference's ``bbox_overlaps`` ("+1 pixel" widths,
        0 unless both overlaps are positive), with its floating-point operation order.
    """
    num_pred = len(pred_xywh)
    match = np.full(num_pred, -1, dtype=np.int64)
    if num_pred == 0:
        return match
    px1, py1 = pred_xywh[:, 0], pred_xywh[:, 1]
    px2, py2 = pred_xywh[:, 2] + px1, pred_xywh[:, 3] + py1
    p_area = (px2 - px1 + 1) * (py2 - py1 + 1)
    gx1, gy1 = gt_boxes[:, 0], gt_boxes[:, 1]
    gx2, gy2 = gt_boxes[:, 2] + gx1, gt_boxes[:, 3] + gy1
    g_area = (gx2 - gx1 + 1) * (gy2 - gy1 + 1)

    faces_per_pred = (gt_offsets[pred_image + 1] - gt_offsets[pred_image]).astype(np.int64)
    first_face = gt_offsets[pred_image]
    pairs_end = np.cumsum(faces_per_pred)
    # Chunk boundaries (in predictions) so that each chunk holds at most `chunk_pairs` pairs
    # (a single prediction's faces always fit in one chunk, whatever the bound).
    bounds = [0]
    while bounds[-1] < num_pred:
        start_pairs = pairs_end[bounds[-1] - 1] if bounds[-1] else 0
        stop = int(np.searchsorted(pairs_end, start_pairs + chunk_pairs, side="right"))
        bounds.append(max(stop, bounds[-1] + 1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        reps = faces_per_pred[lo:hi]
        seg_start = np.cumsum(reps) - reps
        pair_pred = np.repeat(np.arange(lo, hi), reps)
        pair_face = np.arange(int(reps.sum())) - np.repeat(seg_start - first_face[lo:hi], reps)
        # Pairs whose boxes overlap ("+1" widths): the reference's IoU is 0 for all the others.
        iw = np.minimum(px2[pair_pred], gx2[pair_face]) - np.maximum(px1[pair_pred], gx1[pair_face]) + 1
        keep = np.flatnonzero(iw > 0)
        pair_pred, pair_face, iw = pair_pred[keep], pair_face[keep], iw[keep]
        ih = np.minimum(py2[pair_pred], gy2[pair_face]) - np.maximum(py1[pair_pred], gy1[pair_face]) + 1
        keep = np.flatnonzero(ih > 0)
        pair_pred, pair_face, iw, ih = pair_pred[keep], pair_face[keep], iw[keep], ih[keep]
        inter = iw * ih
        iou = inter / (p_area[pair_pred] + g_area[pair_face] - inter)  # union >= max(areas) >= inter > 0
        # A prediction matches iff its best IoU reaches the threshold, and then its best face is among the
        # pairs that reach it: keep those, then take each prediction's first face of highest IoU.
        keep = np.flatnonzero(iou >= iou_thresh)
        if keep.size == 0:
            continue
        pair_pred, pair_face, iou = pair_pred[keep], pair_face[keep], iou[keep]
        starts = np.flatnonzero(np.concatenate(([True], pair_pred[1:] != pair_pred[:-1])))
        best = np.maximum.reduceat(iou, starts)
        at_best = np.flatnonzero(iou == np.repeat(best, np.diff(np.append(starts, len(iou)))))
        first = at_best[np.concatenate(([True], pair_pred[at_best[1:]] != pair_pred[at_best[:-1]]))]
        match[pair_pred[first]] = pair_face[first]
    return match


def _segment_suffix_min(values: np.ndarray, segment: np.ndarray, bound: int) -> np.ndarray:
    """Per segment, the minimum of ``values`` from each element to the segment's end.

    Args:
        values: int64 (P,) in ``[0, bound)``.
        segment: int64 (P,) non-decreasing segment ids (>= 0).
        bound: exclusive upper bound of ``values``.
    """
    rev_seg = segment[::-1]
    keyed = values[::-1] + bound * rev_seg  # later segments come first and carry larger keys
    return (np.minimum.accumulate(keyed) - bound * rev_seg)[::-1]


def _normalise_scores(scores: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The reference's min-max normalisation; returns (normalised scores, (lo, hi))."""
    if scores.size == 0:
        return scores.copy(), (1.0, 0.0)
    lo = min(float(scores.min()), 1.0)
    hi = max(float(scores.max()), 0.0)
    if hi == lo:
        log.warning(
            "all %d prediction scores equal %r: the reference's normalisation divides by zero, so no prediction "
            "passes any threshold (AP 0)", scores.size, lo
        )
        return np.full(scores.shape, np.nan), (lo, hi)
    return (scores - lo) / (hi - lo), (lo, hi)


def _threshold_index(norm_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """int64 (P,) the first threshold index ``k`` with ``thresholds[k] <= score`` (``len(thresholds)`` if none).

    ``thresholds`` is descending, so the prediction is above every threshold from ``k`` on. NaN scores
    (degenerate normalisation) pass no threshold.
    """
    ascending = thresholds[::-1]
    k = len(thresholds) - np.searchsorted(ascending, norm_scores, side="right")
    k[np.isnan(norm_scores)] = len(thresholds)
    return k.astype(np.int64)


class UnknownImagesError(PredictionFileError):
    """Prediction files for images that are not in the ground truth (``unknown="error"``).

    Attributes:
        problem: what is wrong, without advice; keys: the prediction keys (``event/name``) not in the ground truth.
    """

    def __init__(self, problem: str, keys: Sequence[str],
                 hint: str = "pass unknown='ignore' to leave them out") -> None:
        self.problem, self.keys = problem, list(keys)
        super().__init__(f"{problem} ({hint})")

    def with_hint(self, hint: str) -> UnknownImagesError:
        """The same error with another piece of advice (e.g. the command-line flag)."""
        return UnknownImagesError(self.problem, self.keys, hint)


def _collect_predictions(
    preds: Mapping[str, np.ndarray], gt: WiderGroundTruth, unknown: Literal["error", "ignore"]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and concatenate predictions in ground-truth image order.

    Returns:
        ``(positions, counts, dets)``: int64 (J,) ground-truth positions of the images that take part
        (ascending), int64 (J,) their prediction counts, float64 (P, 5) all predictions image after image.
    """
    if unknown not in ("error", "ignore"):
        raise ValueError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    known: list[tuple[int, str]] = []
    strangers: list[str] = []
    for key in preds:
        split_key(key)
        pos = gt.index.get(key)
        if pos is None:
            strangers.append(key)
        else:
            known.append((pos, key))
    if strangers:
        shown = ", ".join(repr(k) for k in sorted(strangers)[:10])
        more = f" and {len(strangers) - 10} more" if len(strangers) > 10 else ""
        message = f"{len(strangers)} prediction(s) for images not in the ground truth: {shown}{more}"
        event_of = {image.name: image.event for image in gt.images}
        moved = [k for k in sorted(strangers) if k.rpartition("/")[2] in event_of][:3]
        if moved:
            hints = ", ".join(f"{k!r} is {event_of[k.rpartition('/')[2]]!r}/..." for k in moved)
            message += f" (wrong event folder? {hints})"
        if unknown == "error":
            raise UnknownImagesError(message, sorted(strangers))
        log.warning("%s; left out (their scores do not take part in the normalisation)", message)
    known.sort()
    arrays: list[np.ndarray] = []
    for _, key in known:
        arr = np.asarray(preds[key], dtype=np.float64)
        if arr.size == 0:
            arr = arr.reshape(0, 5)
        elif arr.ndim != 2 or arr.shape[1] != 5:
            raise PredictionFileError(f"prediction {key!r}: expected shape (N, 5) = x y w h score, got {arr.shape}")
        arrays.append(arr)
    positions = np.array([pos for pos, _ in known], dtype=np.int64)
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    dets = np.concatenate(arrays) if arrays else np.zeros((0, 5))
    if not np.isfinite(dets).all() or (dets[:, 2:4] < 0).any():
        for (_, key), arr in zip(known, arrays):
            check_detections(arr, f"prediction {key!r}")
    return positions, counts, dets


def evaluate(
    pred: Mapping[str, np.ndarray] | str | os.PathLike[str],
    gt: WiderGroundTruth | str | os.PathLike[str],
    iou_thresh: float = 0.5,
    *,
    unknown: Literal["error", "ignore"] = "error",
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> WiderResult:
    """WIDER FACE Easy / Medium / Hard AP of a prediction set, by the official protocol.

    Args:
        pred: ``{"<event>/<name>": dets}`` with dets (N, 5) ``x, y, w, h, score`` in pixels in the order the
            prediction file would list them (N may be 0: the image takes part with no detection); any
            ``Mapping`` will do, e.g. ``np.load("preds.npz")``. Or a folder of official prediction files
            (see :mod:`featherface.eval.prediction_files`).
        gt: a loaded :class:`WiderGroundTruth`, or the folder with the four official ``.mat`` files.
        iou_thresh: IoU ("+1 pixel" convention) needed for a match.
        unknown: what to do with predictions for images not in the ground truth: ``"error"`` (default) or
            ``"ignore"`` (left out entirely, with a warning naming them; note that the Python reference port
            would still fold their scores into the normalisation, the official MATLAB kit would not read them).
        chunk_pairs: memory bound, in (prediction, face) pairs (about 50 bytes each) processed at once.

    Returns:
        The :class:`WiderResult`. Only images with predictions take part; their listed faces alone count.

    Raises:
        PredictionFileError: malformed predictions or (``unknown="error"``) images not in the ground truth.
        FileNotFoundError: missing folders or ground-truth files.
    """
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be positive, got {chunk_pairs}")
    if not isinstance(gt, WiderGroundTruth):
        gt = load_ground_truth(gt)
    if not isinstance(pred, Mapping):
        pred = read_prediction_folder(pred)
    positions, counts, dets = _collect_predictions(pred, gt, unknown)

    thresholds = score_thresholds(NUM_THRESHOLDS)
    norm, score_range = _normalise_scores(dets[:, 4])
    image_of_pred = np.repeat(positions, counts)
    faces_of_image = gt.offsets[1:] - gt.offsets[:-1]
    # The reference skips images without faces: their predictions are never proposals.
    counted = faces_of_image[image_of_pred] > 0
    match = np.full(len(dets), -1, dtype=np.int64)
    match[counted] = _pairwise_best_match(
        dets[counted, :4], image_of_pred[counted], gt.boxes, gt.offsets, iou_thresh, chunk_pairs
    )
    matched = match >= 0
    # The first prediction (in image and file order) matching each face.
    _, first_idx = np.unique(match[matched], return_index=True)
    first_match = np.zeros(len(dets), dtype=bool)
    first_match[np.flatnonzero(matched)[first_idx]] = True
    # Each prediction counts from the threshold of the last prediction at or after it in its file.
    start = _segment_suffix_min(_threshold_index(norm, thresholds), image_of_pred, NUM_THRESHOLDS + 1)

    ap: dict[str, float] = {}
    curves: dict[str, PRCurve] = {}
    num_faces: dict[str, int] = {}
    for setting in gt.settings:
        listed = np.zeros(len(dets), dtype=bool)
        listed[matched] = gt.listed_mask[setting][match[matched]]
        proposal = counted & ~(matched & ~listed)
        recall_step = first_match & listed
        n_faces = int(gt.listed_count[setting][positions].sum())
        proposals = np.cumsum(np.bincount(start[proposal], minlength=NUM_THRESHOLDS + 1)[:NUM_THRESHOLDS])
        recalled = np.cumsum(np.bincount(start[recall_step], minlength=NUM_THRESHOLDS + 1)[:NUM_THRESHOLDS])
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = recalled / proposals
            recall = recalled / np.float64(n_faces)
        if n_faces == 0:
            log.warning("setting %r: the %d evaluated images list no face; its AP is NaN", setting, len(positions))
        ap[setting] = voc_ap(recall, precision)
        curves[setting] = PRCurve(thresholds, proposals.astype(np.int64), recalled.astype(np.int64), precision, recall)
        num_faces[setting] = n_faces

    result = WiderResult(
        ap=ap,
        pr_curves=curves,
        num_images=len(positions),
        num_images_total=len(gt),
        num_faces=num_faces,
        num_faces_total=gt.num_faces,
        num_predictions=len(dets),
        iou_thresh=float(iou_thresh),
        score_range=score_range,
        settings=gt.settings,
    )
    if result.is_subset:
        log.info("subset evaluation: %d of %d images took part", result.num_images, result.num_images_total)
    log.info("WIDER FACE AP: %s", result.summary())
    return result


def evaluate_folder(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str] | WiderGroundTruth,
    iou_thresh: float = 0.5,
    *,
    unknown: Literal["error", "ignore"] = "error",
) -> WiderResult:
    """Evaluate a folder of official prediction files (``<event>/<name>.txt``) against the ``.mat`` ground truth.

    The entry point of ``featherface evaluate``; see :func:`evaluate`.
    """
    return evaluate(Path(pred_dir), gt_dir, iou_thresh, unknown=unknown)
