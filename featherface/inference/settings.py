"""Detector settings and the network conventions every detector shares (torch-free).

:class:`DetectorSettings` is the one post-processing and input-size policy of every detector of the package: the
torch :class:`~featherface.inference.detector.FaceDetector`, the torch-free
:class:`~featherface.inference.onnx.OnnxFaceDetector` and the peers of :mod:`featherface.inference.peers`; the
``predict:`` section of ``params.yaml`` (:class:`featherface.config.PredictConfig`) builds one.

The anchor (prior) and input-normalisation defaults below are the single source of those numbers:
:class:`featherface.models.featherface.FeatherFaceConfig` takes its defaults from here (the torch path reads them
from the model's config), and the torch-free path (:mod:`featherface.inference.np_ops`, ONNX files without
prior metadata) uses them directly. Importing this module imports neither torch nor numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from difflib import get_close_matches
from typing import Any

__all__ = [
    "DEFAULT_MIN_SIZES",
    "DEFAULT_STEPS",
    "VARIANCES",
    "MEAN_BGR",
    "SettingError",
    "DetectorSettings",
    "WIDER_PROTOCOL",
    "RuntimeSettings",
    "WIDER_SETTINGS",
]

#: Prior sides in pixels per detection level (P3, P4, P5), two square priors per feature-map cell (RetinaFace).
DEFAULT_MIN_SIZES: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
#: Stride in pixels of each detection level's feature map.
DEFAULT_STEPS: tuple[int, ...] = (8, 16, 32)
#: Box coding variances ``(v0, v1)``: centre offsets are in units of ``v0`` prior sizes, log sizes in units of ``v1``.
VARIANCES: tuple[float, float] = (0.1, 0.2)
#: Network input convention (DESIGN.md section 1): BGR minus this mean, no scaling (standard deviation 1).
MEAN_BGR: tuple[float, float, float] = (104.0, 117.0, 123.0)


class SettingError(ValueError):
    """A detector setting out of its range; ``name``, ``rule`` (e.g. ``"must be in [0, 1)"``) and ``value``
    let callers with their own key names (``predict.keep_top_k``) word the message."""

    def __init__(self, name: str, rule: str, value: Any) -> None:
        super().__init__(f"{name} {rule}, got {value!r}")
        self.name, self.rule, self.value = name, rule, value


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and int(value) == value


@dataclass(frozen=True)
class DetectorSettings:
    """Post-processing and input-size policy of a detector (frozen, validated).

    Attributes:
        score_threshold: keep detections whose face score is strictly greater.
        nms_iou: suppress boxes overlapping a better one by more than this IoU.
        pre_nms_top_k: candidates (best scores) entering NMS.
        max_detections: detections kept per image after NMS.
        long_side: ``None`` runs at the original size; an integer resizes so the longer side has that many
            pixels (detections are mapped back to original pixels).
        nms_offset: pixel-size convention of the NMS IoU: 1 the reference "+1" (``x2 - x1 + 1`` wide, the WIDER
            protocol of RetinaFace / FeatherFace), 0 continuous coordinates.
        batch_size: images per forward pass of the torch detector (same-size images only); detectors that run
            one image at a time (ONNX, peers) ignore it.
        box_voting: after NMS, replace each survivor's box and landmarks by the score-weighted mean of its own and
            those of the boxes it suppressed (its score is kept). On by default, as it places the built-in
            detector's boxes better (README, "Box voting"); off in the evaluation protocol (:data:`WIDER_PROTOCOL`)
            and for RetinaFace and YuNet (:mod:`featherface.inference.peers`), which run as their authors ship them
            (the ``featherface_onnx`` entry there is ours and votes).

    Raises:
        SettingError: a value out of range (naming the field).
    """

    score_threshold: float = 0.5
    nms_iou: float = 0.4
    pre_nms_top_k: int = 5000
    max_detections: int = 750
    long_side: int | None = None
    nms_offset: float = 1.0
    batch_size: int = 8
    box_voting: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise SettingError("score_threshold", "must be in [0, 1)", self.score_threshold)
        if not 0.0 < self.nms_iou <= 1.0:
            raise SettingError("nms_iou", "must be in (0, 1]", self.nms_iou)
        for name in ("pre_nms_top_k", "max_detections", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value):
                raise SettingError(name, "must be an integer >= 1", value)
            if value < 1:
                raise SettingError(name, "must be >= 1", value)
        if self.long_side is not None and (not _is_int(self.long_side) or self.long_side < 32):
            raise SettingError("long_side", "must be None or an integer >= 32", self.long_side)
        if self.nms_offset not in (0, 1):
            raise SettingError("nms_offset", "must be 0 (continuous) or 1 (reference '+1')", self.nms_offset)
        if not isinstance(self.box_voting, bool):
            raise SettingError("box_voting", "must be true or false", self.box_voting)

    @classmethod
    def names(cls) -> list[str]:
        """The setting names, in field order."""
        return [f.name for f in fields(cls)]

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (for the detectors' constructors)."""
        return {name: getattr(self, name) for name in self.names()}

    def updated(self, **overrides: Any) -> DetectorSettings:
        """A copy with ``overrides`` replacing fields (validated).

        Raises:
            ValueError: a name that is not a setting (with a suggestion), or a bad value.
        """
        known = self.names()
        for name in overrides:
            if name not in known:
                close = get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown detector setting {name!r}{hint}; known settings: {known}")
        return replace(self, **overrides)


#: The WIDER FACE evaluation protocol (DESIGN.md section 3): original size, score > 0.02, top 5000, NMS IoU 0.4
#: with the "+1" convention, keep 750.
WIDER_PROTOCOL = DetectorSettings(score_threshold=0.02, nms_iou=0.4, pre_nms_top_k=5000, max_detections=750,
                                  box_voting=False)

#: Former name of :class:`DetectorSettings` in :mod:`featherface.inference.onnx` (kept for existing callers).
RuntimeSettings = DetectorSettings
#: Former name of :data:`WIDER_PROTOCOL` in :mod:`featherface.inference.onnx` (the same object).
WIDER_SETTINGS = WIDER_PROTOCOL
