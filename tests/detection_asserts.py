"""One comparison of two detection lists, shared by the API, export and runtime tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def assert_same_detections_up_to_ties(
    got: tuple[Any, Any, Any], ref: tuple[Any, Any, Any], px_tol: float = 1e-3, score_tol: float = 1e-5
) -> None:
    """Same detections in the same order: scores within ``score_tol``, boxes and landmarks within ``px_tol`` pixels.

    ``got`` and ``ref`` are ``(boxes (N, 4), scores (N,), landmarks (N, 5, 2) or (N, 10))``, tensors or arrays.
    Two computations that differ by float rounding (another deformable-convolution kernel, onnxruntime) may order
    detections whose scores tie within ``score_tol`` either way, so only such detections may trade places.
    """
    got_boxes, got_scores, got_points = (_numpy(x) for x in got)
    ref_boxes, ref_scores, ref_points = (_numpy(x) for x in ref)
    assert len(got_scores) == len(ref_scores), f"{len(got_scores)} detections, expected {len(ref_scores)}"
    np.testing.assert_allclose(got_scores, ref_scores, atol=score_tol, rtol=0)
    got_points = got_points.reshape(len(got_scores), -1)
    ref_points = ref_points.reshape(len(ref_scores), -1)
    for i in range(len(ref_scores)):
        ties = np.flatnonzero(np.abs(ref_scores - ref_scores[i]) <= score_tol)
        candidates = [i] + [int(k) for k in ties if k != i]
        j = next((k for k in candidates if np.abs(got_boxes[k] - ref_boxes[i]).max() <= px_tol), None)
        assert j is not None, f"detection {i} {ref_boxes[i]} (score {ref_scores[i]}) has no twin"
        np.testing.assert_allclose(got_points[j], ref_points[i], atol=px_tol, rtol=0)
