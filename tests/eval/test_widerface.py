"""The vectorised WIDER FACE evaluation: hand-computed cases, a plain-loop oracle, and the golden reference."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from featherface.eval.plots import plot_pr_curves, write_pr_csv
from featherface.eval.prediction_files import PredictionFileError, write_prediction_folder
from featherface.eval.ground_truth import GroundTruthImage, WiderGroundTruth, load_ground_truth
from featherface.eval.results import PRCurve, WiderResult
from featherface.eval.widerface import evaluate, evaluate_folder, score_thresholds, voc_ap

GOLDEN_SETS = ("full_jitter", "full_dup", "dev_jitter")


def _image(key: str, boxes: list[list[float]], easy: list[int], medium: list[int], hard: list[int]) -> GroundTruthImage:
    event, name = key.split("/")
    listed = {s: np.array(v, dtype=np.int64) for s, v in (("easy", easy), ("medium", medium), ("hard", hard))}
    return GroundTruthImage(event, name, np.array(boxes, dtype=np.float64).reshape(-1, 4), listed)


def _box(x: float, y: float, score: float, w: float = 9, h: float = 9) -> list[float]:
    return [x, y, w, h, score]


# ------------------------------------------------------------------------------------------ hand-made cases


def test_thresholds_match_the_reference_formula() -> None:
    expected = [1 - (t + 1) / 1000 for t in range(1000)]
    assert score_thresholds().tolist() == expected


def test_voc_ap_by_hand() -> None:
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75, abs=1e-15)
    # interpolation: precision at recall 0.5 is the best precision at any recall >= 0.5
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([0.4, 0.8, 0.6])) == pytest.approx(0.7, abs=1e-15)
    # NaN precision (no proposal) at recall 0 does not weigh in
    assert voc_ap(np.array([0.0, 0.5]), np.array([np.nan, 1.0])) == pytest.approx(0.5, abs=1e-15)


def test_ignored_faces_duplicates_and_settings() -> None:
    """Three faces; f3 is listed by Hard only. Scores span [0, 1], so normalisation is the identity."""
    faces = [[0, 0, 9, 9], [100, 100, 9, 9], [200, 200, 9, 9]]
    gt = WiderGroundTruth([_image("ev/a", faces, [1, 2], [1, 2], [1, 2, 3])])
    preds = {
        "ev/a": np.array(
            [
                _box(0, 0, 1.0),  # f1
                _box(200, 200, 0.8),  # f3: ignored by Easy / Medium (not a proposal there)
                _box(50, 50, 0.6),  # false positive
                _box(100, 100, 0.4),  # f2
                _box(1, 1, 0.2),  # f1 again: a duplicate is a false positive
                _box(300, 300, 0.0),  # false positive
            ]
        )
    }
    result = evaluate(preds, gt)
    # Easy: (proposals, recalled) = (1,1) (1,1) (2,1) (3,2) (4,2) (5,2) of 2 faces
    #       AP = 0.5 * 1 + 0.5 * max(2/3, 2/4, 2/5) = 5/6
    # Hard: (1,1) (2,2) (3,2) (4,3) (5,3) (6,3) of 3 faces -> AP = 2/3 * 1 + 1/3 * 3/4 = 11/12
    assert result.ap["easy"] == pytest.approx(5 / 6, abs=1e-12)
    assert result.ap["medium"] == pytest.approx(5 / 6, abs=1e-12)
    assert result.ap["hard"] == pytest.approx(11 / 12, abs=1e-12)
    assert result.num_faces == {"easy": 2, "medium": 2, "hard": 3}
    assert (result.num_images, result.num_images_total, result.num_predictions) == (1, 1, 6)
    easy = result.pr_curves["easy"]
    assert easy.proposals[0] == 1 and easy.recalled[0] == 1  # t = 0.999: only the 1.0 score
    assert easy.proposals[-1] == 5 and easy.recalled[-1] == 2  # t = 0: everything
    assert easy.precision[-1] == pytest.approx(0.4) and easy.recall[-1] == 1.0


def test_plus_one_pixel_iou_convention() -> None:
    """GT 10x10 pixels (w = 9); a 5x10 prediction has IoU exactly 0.5 only with "+1" widths (36/81 without)."""
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9]], [1], [1], [1])])
    half = evaluate({"ev/a": np.array([_box(0, 0, 1.0, w=4), _box(500, 500, 0.0)])}, gt)
    assert half.ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    less = evaluate({"ev/a": np.array([_box(0, 0, 1.0, w=3), _box(500, 500, 0.0)])}, gt)  # IoU 0.4
    assert less.ap["easy"] == 0.0
    assert evaluate({"ev/a": np.array([_box(0, 0, 1.0, w=3), _box(500, 500, 0.0)])}, gt, iou_thresh=0.4).ap[
        "easy"
    ] == 1.0


def test_last_prediction_above_threshold_in_file_order() -> None:
    """The reference counts each image up to its *last* prediction (file order) above the threshold.

    File order: f1 hit at score 0, f2 hit at score 1, false positive at 0.5. At every threshold the image
    contributes from its start to the last line above it, so the curve is (2, 2) then (3, 2): AP 1.
    A score-sorted evaluation would give 5/6.
    """
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9], [100, 100, 9, 9]], [1, 2], [1, 2], [1, 2])])
    result = evaluate({"ev/a": np.array([_box(0, 0, 0.0), _box(100, 100, 1.0), _box(50, 50, 0.5)])}, gt)
    assert result.ap["hard"] == 1.0
    curve = result.pr_curves["hard"]
    above = curve.thresholds > 0.5
    assert (curve.proposals[above] == 2).all() and (curve.recalled[above] == 2).all()
    assert (curve.proposals[~above] == 3).all() and (curve.recalled[~above] == 2).all()


@pytest.mark.parametrize(("listed", "ap"), [([2], 0.0), ([1], 1.0)])
def test_argmax_ties_take_the_first_face(listed: list[int], ap: float) -> None:
    """Two identical faces: a prediction on them matches the first. If only the second is listed, the match
    hits an ignored face: no recall, and no proposal at the top thresholds (precision NaN there)."""
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9], [0, 0, 9, 9]], listed, listed, listed)])
    result = evaluate({"ev/a": np.array([_box(0, 0, 1.0), _box(300, 300, 0.0)])}, gt)
    assert result.ap["easy"] == ap
    assert math.isnan(result.pr_curves["easy"].precision[0]) == (ap == 0.0)


def test_score_normalisation_bounds() -> None:
    """lo = min(1, min score), hi = max(0, max score): scores 4 and 2 -> 1 and 1/3; scores -1, -2 -> 0.5, 0."""
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9], [100, 100, 9, 9]], [1, 2], [1, 2], [1, 2])])
    big = evaluate({"ev/a": np.array([_box(0, 0, 4.0), _box(100, 100, 2.0)])}, gt)
    assert big.score_range == (1.0, 4.0)
    curve = big.pr_curves["easy"]
    assert np.array_equal(curve.recalled, np.where(curve.thresholds <= 1 / 3, 2, 1))
    negative = evaluate({"ev/a": np.array([_box(0, 0, -1.0), _box(100, 100, -2.0)])}, gt)
    assert negative.score_range == (-2.0, 0.0)
    curve = negative.pr_curves["easy"]
    expected = (curve.thresholds <= 0.5).astype(np.int64) + (curve.thresholds == 0.0)  # -2 -> 0 passes t = 0
    assert np.array_equal(curve.recalled, expected)
    assert negative.ap["easy"] == 1.0


def test_equal_scores_degenerate_like_the_reference(caplog: pytest.LogCaptureFixture) -> None:
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9]], [1], [1], [1])])
    with caplog.at_level(logging.WARNING):
        result = evaluate({"ev/a": np.array([_box(0, 0, 0.7), _box(0, 0, 0.7)])}, gt)
    assert result.ap["easy"] == 0.0 and "divides by zero" in caplog.text


def test_subset_and_faceless_images() -> None:
    """Only images with predictions take part; an image without faces contributes no proposal, but its
    scores still enter the normalisation; an empty prediction array takes part with no detection."""
    gt = WiderGroundTruth(
        [
            _image("ev/a", [[0, 0, 9, 9]], [1], [1], [1]),
            _image("ev/b", [[0, 0, 9, 9]], [1], [1], [1]),
            _image("ev/c", [], [], [], []),
            _image("ev/d", [[0, 0, 9, 9]] * 5, [1, 2], [1, 2, 3], [1, 2, 3, 4, 5]),
        ]
    )
    preds = {
        "ev/c": np.array([_box(0, 0, 1.0), _box(0, 0, 0.0)]),  # no face: never a proposal
        "ev/a": np.array([_box(0, 0, 0.5)]),
        "ev/b": np.zeros((0, 5)),
    }
    result = evaluate(preds, gt)
    assert (result.num_images, result.num_images_total) == (3, 4) and result.is_subset
    assert result.num_faces == {"easy": 2, "medium": 2, "hard": 2}
    assert result.num_faces_total == {"easy": 4, "medium": 5, "hard": 7}
    assert result.score_range == (0.0, 1.0)
    curve = result.pr_curves["easy"]
    assert np.array_equal(curve.proposals, (curve.thresholds <= 0.5).astype(np.int64))
    assert result.ap == {"easy": 0.5, "medium": 0.5, "hard": 0.5}
    assert "3 of 4 images" in result.summary()


def test_unknown_images(caplog: pytest.LogCaptureFixture) -> None:
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9]], [1], [1], [1])])
    preds = {"ev/a": np.array([_box(0, 0, 0.9), _box(50, 50, 0.1)]), "ev/zz": np.array([_box(0, 0, 5.0)])}
    with pytest.raises(PredictionFileError, match=r"1 prediction\(s\) for images not in the ground truth: 'ev/zz'"):
        evaluate(preds, gt)
    with caplog.at_level(logging.WARNING):
        ignored = evaluate(preds, gt, unknown="ignore")
    assert "'ev/zz'" in caplog.text
    assert ignored.to_dict() == evaluate({"ev/a": preds["ev/a"]}, gt).to_dict()
    with pytest.raises(PredictionFileError, match="expected '<event>/<name>'"):
        evaluate({"a": np.zeros((0, 5))}, gt)
    with pytest.raises(PredictionFileError, match=r"wrong event folder\? 'other/a' is 'ev'/"):
        evaluate({"other/a": np.zeros((0, 5))}, gt)


def test_bad_prediction_arrays() -> None:
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9]], [1], [1], [1])])
    with pytest.raises(PredictionFileError, match=r"'ev/a'.*shape \(N, 5\)"):
        evaluate({"ev/a": np.zeros((3, 4))}, gt)
    with pytest.raises(PredictionFileError, match=r"'ev/a', row 1: negative width or height"):
        evaluate({"ev/a": np.array([_box(0, 0, 0.5), _box(0, 0, 0.4, w=-2)])}, gt)
    with pytest.raises(PredictionFileError, match=r"'ev/a', row 0: non-finite"):
        evaluate({"ev/a": np.array([_box(0, 0, np.nan)])}, gt)


def test_ground_truth_validation() -> None:
    with pytest.raises(ValueError, match=r"'ev/a', setting 'easy': face index 2 is outside 1..1"):
        WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9]], [2], [1], [1])])
    with pytest.raises(ValueError, match=r"'ev/a', setting 'hard': repeated face indices"):
        WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9], [1, 1, 9, 9]], [1], [1], [2, 2])])
    with pytest.raises(ValueError, match="twice"):
        WiderGroundTruth([_image("ev/a", [], [], [], [])] * 2)


# ------------------------------------------------------------------------------- a plain-loop oracle


def _plain_eval(
    preds: dict[str, np.ndarray], gt: WiderGroundTruth, iou_thresh: float = 0.5
) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    """The protocol written as plainly as possible: loops over images, predictions, faces and thresholds.

    Returns per setting (AP, proposals per threshold, recalled faces per threshold).
    """
    scores = [float(s) for d in preds.values() for s in d[:, 4]]
    lo, hi = min(min(scores), 1.0), max(max(scores), 0.0)
    out = {}
    for setting in gt.settings:
        props, recs, n_faces = np.zeros(1000), np.zeros(1000), 0
        for key, dets in preds.items():
            image = gt[key]
            n_faces += len(image.listed[setting])
            if len(image.boxes) == 0 or len(dets) == 0:
                continue
            listed = {int(i) - 1 for i in image.listed[setting]}
            recalled_faces: set[int] = set()
            proposal, recalled_so_far = [], []
            for x, y, w, h, _ in dets:
                px2, py2 = x + w, y + h
                best, best_j = -1.0, -1
                for j, (gx, gy, gw, gh) in enumerate(image.boxes):
                    gx2, gy2 = gw + gx, gh + gy
                    iw = min(px2, gx2) - max(x, gx) + 1
                    ih = min(py2, gy2) - max(y, gy) + 1
                    iou = 0.0
                    if iw > 0 and ih > 0:
                        iou = iw * ih / ((px2 - x + 1) * (py2 - y + 1) + (gx2 - gx + 1) * (gy2 - gy + 1) - iw * ih)
                    if iou > best:
                        best, best_j = iou, j
                is_proposal = True
                if best >= iou_thresh:
                    if best_j not in listed:
                        is_proposal = False
                    else:
                        recalled_faces.add(best_j)
                proposal.append(is_proposal)
                recalled_so_far.append(len(recalled_faces))
            norm = (dets[:, 4] - lo) / (hi - lo)
            for t in range(1000):
                above = [i for i in range(len(dets)) if norm[i] >= 1 - (t + 1) / 1000]
                if above:
                    props[t] += sum(proposal[: above[-1] + 1])
                    recs[t] += recalled_so_far[above[-1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[setting] = (voc_ap(recs / n_faces, recs / props), props, recs)
    return out


def _random_case(seed: int) -> tuple[WiderGroundTruth, dict[str, np.ndarray]]:
    """Random faces (some degenerate), jittered / duplicated / integer / unsorted predictions, tied scores."""
    rng = np.random.default_rng(seed)
    images, preds = [], {}
    for i in range(12):
        n = int(rng.integers(0, 9))
        xy = rng.integers(0, 200, (n, 2)).astype(float)
        wh = rng.integers(-2, 40, (n, 2)).astype(float)
        boxes = np.concatenate([xy, wh], axis=1)
        if n >= 2 and rng.random() < 0.5:
            boxes[1] = boxes[0]  # identical faces: argmax ties
        lists = [sorted(rng.choice(n, int(rng.integers(0, n + 1)), replace=False) + 1) if n else [] for _ in range(3)]
        images.append(_image(f"ev{i % 3}/img_{i}", boxes.tolist(), *lists))
        if rng.random() < 0.2:
            continue  # not evaluated
        hits = boxes[rng.integers(0, n, int(rng.integers(0, 2 * n + 1)))] if n else np.zeros((0, 4))
        hits = hits + rng.normal(0, 2, hits.shape) * (rng.random() < 0.5)
        hits[:, 2:] = np.abs(hits[:, 2:])
        fps = np.concatenate([rng.integers(0, 200, (3, 2)), rng.integers(0, 40, (3, 2))], axis=1)
        dets4 = np.concatenate([hits, fps])[rng.permutation(len(hits) + 3)]
        score = rng.choice([0.1, 0.3, 0.5, 0.55, 0.9], len(dets4)) if rng.random() < 0.5 else rng.random(len(dets4))
        preds[images[-1].key] = np.column_stack([dets4, score])
    if seed % 2:  # scores above 1: the reference's normalisation bounds differ from plain min-max
        preds = {key: dets + [0, 0, 0, 0, 2.0] for key, dets in preds.items()}
    return WiderGroundTruth(images), preds


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_loop_oracle(seed: int) -> None:
    gt, preds = _random_case(seed)
    expected = _plain_eval(preds, gt)
    result = evaluate(preds, gt)
    for setting, (ap, proposals, recalled) in expected.items():
        assert result.ap[setting] == pytest.approx(ap, abs=1e-12, nan_ok=True), setting
        assert np.array_equal(result.pr_curves[setting].proposals, proposals), setting
        assert np.array_equal(result.pr_curves[setting].recalled, recalled), setting
    for chunk in (1, 7):  # memory-bounded chunks give the same curves
        chunked = evaluate(preds, gt, chunk_pairs=chunk)
        for setting in gt.settings:
            assert np.array_equal(chunked.pr_curves[setting].proposals, result.pr_curves[setting].proposals)
            assert np.array_equal(chunked.pr_curves[setting].recalled, result.pr_curves[setting].recalled)


# --------------------------------------------------------------------------- results: JSON and plots


def test_json_round_trip_and_plot(tmp_path: Path) -> None:
    gt = WiderGroundTruth([_image("ev/a", [[0, 0, 9, 9], [0, 0, 9, 9]], [2], [1], [1, 2])])
    result = evaluate({"ev/a": np.array([_box(0, 0, 1.0), _box(300, 300, 0.0)])}, gt)
    text = result.to_json()
    assert "NaN" not in text  # strict JSON: precision without proposals is null
    back = WiderResult.from_dict(json.loads(text))
    assert back.to_dict() == result.to_dict()
    assert np.array_equal(back.pr_curves["easy"].precision, result.pr_curves["easy"].precision, equal_nan=True)
    assert "pr_curves" not in result.to_dict(include_curves=False)

    one = plot_pr_curves(result, tmp_path / "plots" / "pr.png")
    two = plot_pr_curves({"a": result, "b": back}, tmp_path / "pr2.png", title="two runs")
    for png in (one, two):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plots", "pr.png", "pr2.png"]


# ------------------------------------------------------------------------- official ground truth, golden


@pytest.fixture(scope="module")
def val_gt(widerface_dir: Path) -> WiderGroundTruth:
    return load_ground_truth(widerface_dir / "val")


@pytest.mark.parametrize("name", GOLDEN_SETS)
def test_golden_reference(name: str, golden_dir: Path, val_gt: WiderGroundTruth, tmp_path: Path) -> None:
    """Write the golden predictions as official files, read and evaluate them, compare to the reference port."""
    folder = golden_dir / "widerface_eval"
    expected = json.loads((folder / "expected_ap.json").read_text())[name]
    with np.load(folder / f"preds_{name}.npz") as data:
        preds = {key: data[key] for key in data.files}
    write_prediction_folder(preds, tmp_path / "preds")
    result = evaluate_folder(tmp_path / "preds", val_gt)
    for setting in ("easy", "medium", "hard"):
        assert abs(result.ap[setting] - expected[setting]) <= 1e-9, (setting, result.ap[setting], expected[setting])
    assert result.num_images == len(preds) == (233 if name == "dev_jitter" else 3226)
    assert result.num_images_total == 3226
    assert result.is_subset == (name == "dev_jitter")
    assert result.to_dict() == evaluate(preds, val_gt).to_dict()  # in-memory input: same result


def test_golden_from_the_mat_folder(golden_dir: Path, widerface_dir: Path, tmp_path: Path) -> None:
    """`evaluate_folder(pred_dir, gt_dir)`, the CLI's entry point, with the .mat folder itself."""
    folder = golden_dir / "widerface_eval"
    expected = json.loads((folder / "expected_ap.json").read_text())["dev_jitter"]
    with np.load(folder / "preds_dev_jitter.npz") as data:
        write_prediction_folder({key: data[key] for key in data.files}, tmp_path)
    result = evaluate_folder(tmp_path, widerface_dir / "val")
    assert result.ap == pytest.approx({s: expected[s] for s in ("easy", "medium", "hard")}, abs=1e-9)
    assert (result.num_images, result.num_faces["hard"]) == (233, 5777)


def test_pr_curves_as_csv_for_dvc_plots(tmp_path: Path) -> None:
    curve = PRCurve(thresholds=np.array([0.9, 0.5, 0.1]), proposals=np.array([0, 2, 4]),
                    recalled=np.array([0, 1, 3]), precision=np.array([np.nan, 0.5, 0.75]),
                    recall=np.array([0.0, 0.25, 0.75]))
    result = WiderResult(ap={"easy": 0.5, "medium": 0.5, "hard": 0.5}, pr_curves={s: curve for s in ("easy", "medium",
                         "hard")}, num_images=1, num_images_total=1, num_faces={}, num_faces_total={},
                         num_predictions=4, iou_thresh=0.5, score_range=(0.0, 1.0))
    paths = write_pr_csv(result, tmp_path / "pr")
    assert [p.name for p in paths] == ["easy.csv", "medium.csv", "hard.csv"]
    # the threshold without a proposal has no precision: left out
    assert paths[0].read_text() == "threshold,recall,precision\n0.5000,0.250000,0.500000\n0.1000,0.750000,0.750000\n"
