"""benchmarks/recall_by_size.py: faces found per height bin on a hand-made case (the WIDER matching rule)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from featherface.eval.ground_truth import GroundTruthImage, WiderGroundTruth

from tests.benchmark_scripts import load_benchmark_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark_script("recall_by_size")


def test_recall_by_height_by_hand(script: ModuleType) -> None:
    # faces (x, y, w, h): 10 px high (bin 8-12), 20 px (16-24), 40 px (32-64); the 40 px one is not listed as hard
    boxes = np.array([[0, 0, 10, 10], [50, 0, 20, 20], [100, 0, 40, 40]], np.float64)
    listed = {"easy": np.array([3]), "medium": np.array([2, 3]), "hard": np.array([1, 2])}
    other = GroundTruthImage("0--Parade", "b", np.array([[0, 0, 30, 30]], np.float64),
                             {"easy": np.array([1]), "medium": np.array([1]), "hard": np.array([1])})
    gt = WiderGroundTruth([GroundTruthImage("0--Parade", "a", boxes, listed), other])
    preds = {"0--Parade/a": np.array([[0, 0, 10, 10, 0.9],      # the 10 px face
                                      [52, 2, 20, 20, 0.4],     # the 20 px face, IoU 0.68, low score
                                      [100, 0, 40, 40, 0.95]])}  # a face that is not hard
    found, total = script.recall_by_height(gt, preds, "hard", 0.3)
    bins = list(script.HEIGHT_BINS)
    expected_total = np.zeros(len(bins) - 1)
    expected_total[bins.index(8)] = expected_total[bins.index(16)] = 1  # image b has no predictions: left out
    np.testing.assert_array_equal(total, expected_total)
    np.testing.assert_array_equal(found, expected_total)
    found, _ = script.recall_by_height(gt, preds, "hard", 0.5)  # the 20 px face's detection is below 0.5
    assert found[bins.index(16)] == 0 and found[bins.index(8)] == 1
    found, total = script.recall_by_height(gt, {}, "hard", 0.3)
    assert not found.any() and not total.any()
