"""The result of a WIDER FACE evaluation (:func:`featherface.eval.widerface.evaluate`): AP per setting, the
precision / recall curves and what took part, and its JSON form (``ap.json``; NaN written as ``null``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from featherface.eval.ground_truth import SETTINGS

__all__ = ["PRCurve", "WiderResult", "percent"]


def percent(value: float | None) -> str:
    """A fraction (an AP) as a percentage with two decimals (``"n/a"`` for ``None`` or NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


@dataclass(frozen=True)
class PRCurve:
    """A precision / recall curve over the score thresholds.

    Attributes:
        thresholds: float64 (T,) normalised-score thresholds, descending.
        proposals: int64 (T,) predictions counted as proposals at each threshold.
        recalled: int64 (T,) listed faces recalled at each threshold.
        precision: float64 (T,) ``recalled / proposals`` (NaN where there is no proposal, as in the reference).
        recall: float64 (T,) ``recalled / listed faces``.
    """

    thresholds: np.ndarray
    proposals: np.ndarray
    recalled: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _none_to_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class WiderResult:
    """Easy / Medium / Hard AP of one prediction set, with its PR curves and what took part.

    Attributes:
        ap: ``{"easy", "medium", "hard"}`` -> AP in [0, 1] (NaN for a setting without any listed face).
        pr_curves: per setting, the :class:`PRCurve`.
        num_images: images that took part (those with predictions).
        num_images_total: images in the ground truth (3,226 for WIDER FACE val).
        num_faces: per setting, listed faces of the images that took part (the recall denominators).
        num_faces_total: per setting, listed faces of the whole ground truth.
        num_predictions: predictions over the images that took part.
        iou_thresh: IoU needed for a match.
        score_range: ``(lo, hi)`` the reference's normalisation bounds, ``min(1, min score)`` and
            ``max(0, max score)``.
    """

    ap: Mapping[str, float]
    pr_curves: Mapping[str, PRCurve]
    num_images: int
    num_images_total: int
    num_faces: Mapping[str, int]
    num_faces_total: Mapping[str, int]
    num_predictions: int
    iou_thresh: float
    score_range: tuple[float, float]
    settings: tuple[str, ...] = field(default=SETTINGS)

    @property
    def is_subset(self) -> bool:
        """Whether only part of the ground truth's images took part."""
        return self.num_images < self.num_images_total

    def summary(self) -> str:
        """One line, e.g. ``Easy 0.9409  Medium 0.9198  Hard 0.5913  (3226 of 3226 images)``."""
        aps = "  ".join(f"{s.capitalize()} {self.ap[s]:.4f}" for s in self.settings)
        return f"{aps}  ({self.num_images} of {self.num_images_total} images)"

    def to_dict(self, include_curves: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN written as ``None``); :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {
            "ap": {s: (None if math.isnan(self.ap[s]) else self.ap[s]) for s in self.settings},
            "num_images": self.num_images,
            "num_images_total": self.num_images_total,
            "subset": self.is_subset,
            "num_faces": dict(self.num_faces),
            "num_faces_total": dict(self.num_faces_total),
            "num_predictions": self.num_predictions,
            "iou_thresh": self.iou_thresh,
            "score_range": list(self.score_range),
        }
        if include_curves:
            out["pr_curves"] = {
                s: {
                    "thresholds": c.thresholds.tolist(),
                    "proposals": c.proposals.tolist(),
                    "recalled": c.recalled.tolist(),
                    "precision": _nan_to_none(c.precision),
                    "recall": _nan_to_none(c.recall),
                }
                for s, c in self.pr_curves.items()
            }
        return out

    def to_json(self, include_curves: bool = True, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text (strict JSON: no NaN literals)."""
        return json.dumps(self.to_dict(include_curves), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WiderResult:
        """Rebuild a result written by :meth:`to_dict` (``include_curves=True``)."""
        if "pr_curves" not in data:
            raise KeyError("result dict has no 'pr_curves' (written with include_curves=False?)")
        settings = tuple(data["ap"])
        curves = {
            s: PRCurve(
                thresholds=np.asarray(c["thresholds"], dtype=np.float64),
                proposals=np.asarray(c["proposals"], dtype=np.int64),
                recalled=np.asarray(c["recalled"], dtype=np.int64),
                precision=_none_to_nan(c["precision"]),
                recall=_none_to_nan(c["recall"]),
            )
            for s, c in data["pr_curves"].items()
        }
        return cls(
            ap={s: (math.nan if v is None else float(v)) for s, v in data["ap"].items()},
            pr_curves=curves,
            num_images=int(data["num_images"]),
            num_images_total=int(data["num_images_total"]),
            num_faces={s: int(v) for s, v in data["num_faces"].items()},
            num_faces_total={s: int(v) for s, v in data["num_faces_total"].items()},
            num_predictions=int(data["num_predictions"]),
            iou_thresh=float(data["iou_thresh"]),
            score_range=(float(data["score_range"][0]), float(data["score_range"][1])),
            settings=settings,
        )
