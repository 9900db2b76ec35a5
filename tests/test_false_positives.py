"""benchmarks/false_positives.py: each detection's outcome under the WIDER matching rule, on a hand-made case."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from featherface.eval.ground_truth import GroundTruthImage, WiderGroundTruth

from tests.benchmark_scripts import load_benchmark_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark_script("false_positives")


def test_classify_image_by_hand(script: ModuleType) -> None:
    faces = np.array([[0, 0, 9, 9], [100, 100, 19, 19], [200, 0, 9, 9]], np.float64)
    listed = np.array([True, True, False])
    dets = np.array([[0, 0, 9, 9, 0.9],        # face 0: found
                     [1, 0, 9, 9, 0.8],        # face 0 again (IoU 90 / 110): duplicate
                     [200, 0, 9, 9, 0.8],      # face 2, not listed: ignored
                     [105, 100, 19, 19, 0.7],  # face 1 at IoU 300 / 500 = 0.6: found
                     [5, 0, 9, 9, 0.6],        # face 0 at IoU 1/3: poor box
                     [400, 400, 9, 9, 0.5]])   # nothing near: background
    assert script.classify_image(dets, faces, listed) == ["found", "duplicate", "ignored", "found", "poor box",
                                                          "background"]
    # det 0 vs face 0 at IoU 1/3: overlap 5 x 10 = 50, union 100 + 100 - 50 = 150 (the "+1" widths)
    poor = np.array([[5, 0, 9, 9, 0.9]])
    assert script.classify_image(poor, faces[:1], listed[:1]) == ["poor box"]
    assert script.classify_image(poor, np.array([[0, 0, 9, 14]], np.float64), listed[:1]) == ["background"]  # 50 / 200
    assert script.classify_image(dets, np.zeros((0, 4)), np.zeros(0, bool)) == ["background"] * 6


def test_count_outcomes_by_threshold_and_height(script: ModuleType) -> None:
    faces = np.array([[0, 0, 9, 9], [100, 100, 39, 39]], np.float64)
    listed = {setting: np.array([1, 2]) for setting in ("easy", "medium", "hard")}
    gt = WiderGroundTruth([GroundTruthImage("0--Parade", "a", faces, listed),
                           GroundTruthImage("0--Parade", "b", faces, listed)])
    preds = {"0--Parade/a": np.array([[0, 0, 9, 9, 0.9],          # found, 9 px high
                                      [300, 300, 49, 49, 0.8],    # background, 49 px high
                                      [500, 500, 19, 19, 0.3]])}  # background, 19 px, below 0.5
    counts = script.count_outcomes(gt, preds, "hard", 0.5)  # image b has no prediction file: left out
    assert counts["found"].tolist() == [1, 0, 0]
    assert counts["background"].tolist() == [0, 0, 1]
    assert not any(counts[o].any() for o in ("ignored", "duplicate", "poor box"))
    counts = script.count_outcomes(gt, preds, "hard", 0.2)
    assert counts["background"].tolist() == [0, 1, 1]
