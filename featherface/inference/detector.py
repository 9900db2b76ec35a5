"""`FaceDetector`: run a FeatherFace model on pictures and get boxes, scores and 5 landmarks in original pixels.

    >>> detector = FaceDetector.builtin()          # the weights shipped with the package
    >>> detector = FaceDetector.from_pretrained("featherface_v1", "featherface_v1_fork.pth")
    >>> dets = detector("group.jpg")                 # one image -> Detections
    >>> dets.boxes, dets.scores, dets.landmarks      # (N, 4) xyxy px, (N,), (N, 5, 2) px

Batching: images whose network input has the same size are stacked into one forward pass (up to
``batch_size``). Images of different sizes go through separate passes: zero padding to a common size would change
the activations near the padded border (BatchNorm shifts and deformable sampling make the padded area non-zero),
so results would differ from running each image alone. Grouping by size keeps batched results equal to
one-by-one results up to float rounding (convolution kernels may depend on the batch size: measured 3e-5 px on
CPU, the same detections).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from featherface.inference.images import (
    ColorOrder,
    as_image_list,
    large_image_warning,
    read_image,
    resize_long_side,
    to_bgr,
    to_tensor,
)
from featherface.ops.priors import make_priors
from featherface.inference.postprocess import Detections, detect_batch, face_scores

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, np.ndarray]

#: Input sizes whose priors a detector keeps (least recently used dropped first). WIDER FACE val alone has
#: hundreds of distinct image heights; an unbounded cache would keep ~0.5 MB per size for the whole run.
PRIOR_CACHE_SIZE = 16


@dataclass(frozen=True)
class DetectorSettings:
    """Post-processing and input-size policy.

    Attributes:
        score_threshold: keep detections whose face probability is strictly greater.
        nms_iou: suppress boxes overlapping a better one by more than this IoU ("+1" pixel convention).
        pre_nms_top_k: candidates entering NMS.
        max_detections: detections kept per image after NMS.
        long_side: ``None`` runs at the original size; an integer resizes so the longer side has that many pixels
            (detections are mapped back to original pixels).
        batch_size: images per forward pass (same-size images only, see the module docstring).
    """

    score_threshold: float = 0.5
    nms_iou: float = 0.4
    pre_nms_top_k: int = 5000
    max_detections: int = 750
    long_side: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        for name in ("pre_nms_top_k", "max_detections", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.long_side is not None and self.long_side < 32:
            raise ValueError(f"long_side must be None or >= 32, got {self.long_side}")


#: The WIDER FACE evaluation protocol (DESIGN.md section 3): original size, 0.02, top 5000, NMS 0.4, keep 750.
WIDER_PROTOCOL = DetectorSettings(score_threshold=0.02, nms_iou=0.4, pre_nms_top_k=5000, max_detections=750)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FaceDetector:
    """A face detector around a FeatherFace model (any module returning ``(loc, logits, landmarks)``).

    Args:
        model: the network; put in eval mode and moved to ``device``.
        settings: a :class:`DetectorSettings`; keyword arguments override its fields.
        device: where to run (default: CUDA if available, else CPU).

    Raises:
        ValueError: an override that is not a :class:`DetectorSettings` field (with a suggestion) or a bad value.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: DetectorSettings | None = None,
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> None:
        known = [f.name for f in fields(DetectorSettings)]
        for name in overrides:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown detector setting {name!r}{hint}; known settings: {known}")
        self.settings = replace(settings or DetectorSettings(), **overrides)
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.eval().to(self.device)
        self._priors: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._warned_large = False

    @classmethod
    def builtin(
        cls,
        *,
        settings: DetectorSettings | None = None,
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> FaceDetector:
        """The detector with the built-in weights (``featherface/weights/``; see its ``MODEL_CARD.md``).

        >>> detector = FaceDetector.builtin()
        >>> dets = detector("group.jpg")
        """
        from featherface.weights import builtin_weights

        return cls.from_pretrained(None, builtin_weights(), settings=settings, device=device, **overrides)

    @classmethod
    def from_pretrained(
        cls,
        model: str | None,
        weights: str | os.PathLike[str],
        *,
        model_overrides: Mapping[str, Any] | None = None,
        settings: DetectorSettings | None = None,
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> FaceDetector:
        """Build a registered model and load weights from an explicit path.

        Args:
            model: a registered name (``featherface.models.registry.list_models()``); ``None`` rebuilds the
                architecture recorded in a checkpoint of ours.
            weights: a checkpoint of ours, or a FeatherFace fork state dict (trunk keys mapped).
            model_overrides: config fields for ``create_model`` (e.g. ``width=56``).

        Raises:
            FileNotFoundError: ``weights`` does not exist.
            KeyError: unknown model name (from the registry, with a suggestion).
            CheckpointError: an unreadable file, or weights that do not fit the model (listing the missing and
                unexpected keys and the shape mismatches), or a fork state dict with ``model=None``.
        """
        from featherface.models.loading import load_trained_model, load_weights
        from featherface.models.registry import create_model

        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights file not found: {weights}")
        if model is not None and model_overrides:
            net = create_model(model, **dict(model_overrides))
            report = load_weights(net, weights)
            log.info("loaded %s into %s: %d tensors", weights, model, len(report.loaded))
        else:
            net = load_trained_model(weights, model)
        return cls(net, settings, device, **overrides)

    def _priors_for(self, height: int, width: int) -> torch.Tensor:
        key = (height, width)
        if key in self._priors:
            self._priors.move_to_end(key)
        else:
            self._priors[key] = make_priors(height, width, device=self.device)
            while len(self._priors) > PRIOR_CACHE_SIZE:
                self._priors.popitem(last=False)
        return self._priors[key]

    def _prepare(self, image: ImageInput, color: ColorOrder, index: int) -> tuple[np.ndarray, tuple[float, float]]:
        if isinstance(image, (str, os.PathLike)):
            array = read_image(image)
        else:
            array = to_bgr(image, color, where=f"image {index}")
        where = str(image) if isinstance(image, (str, os.PathLike)) else f"image {index}"
        self.large_input_warning(array.shape[0], array.shape[1], where)
        return resize_long_side(array, self.settings.long_side)

    def large_input_warning(self, height: int, width: int, where: str) -> str | None:
        """The first time this detector meets an image too large to run at its original size (see
        :func:`~featherface.inference.images.large_image_warning`): log a warning suggesting ``long_side`` and return it;
        ``None`` otherwise (later large images are not reported)."""
        if self._warned_large:
            return None
        message = large_image_warning(height, width, self.settings.long_side, where)
        if message:
            log.warning("%s (further large images are not reported)", message)
            self._warned_large = True
        return message

    @torch.inference_mode()
    def detect(self, images: ImageInput | Sequence[ImageInput], color: ColorOrder = "bgr") -> Any:
        """Detect faces.

        Args:
            images: an image path, an ``(H, W[, C])`` array (uint8; grayscale, BGR/RGB or with alpha), or a list
                of them (any sizes).
            color: channel order of array inputs (paths are always decoded correctly).

        Returns:
            One :class:`~featherface.inference.postprocess.Detections` (CPU tensors, original pixels) for a single image, a
            list of them for a list.
        """
        single, batch = as_image_list(images)
        prepared = [self._prepare(image, color, i) for i, image in enumerate(batch)]
        results: list[Detections | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (array, _) in enumerate(prepared):
            groups.setdefault(array.shape[:2], []).append(i)
        s = self.settings
        for (height, width), members in groups.items():
            priors = self._priors_for(height, width)
            for start in range(0, len(members), s.batch_size):
                chunk = members[start : start + s.batch_size]
                x = torch.stack([to_tensor(prepared[i][0]) for i in chunk]).to(self.device)
                loc, logits, landmarks = self.model(x)
                dets = detect_batch(
                    loc, face_scores(logits), landmarks, priors, (height, width),
                    score_threshold=s.score_threshold, pre_nms_top_k=s.pre_nms_top_k, nms_iou=s.nms_iou,
                    keep_top_k=s.max_detections, scales=[prepared[i][1] for i in chunk],
                )
                for i, det in zip(chunk, dets):
                    results[i] = det.to("cpu")
        return results[0] if single else results

    __call__ = detect


def to_wider_rows(dets: Detections) -> np.ndarray:
    """Detections as WIDER prediction rows ``(N, 5)``: ``x y w h score`` with the RetinaFace / FeatherFace
    evaluation scripts' integer convention (``x = int(x1)``, ``w = int(x2) - int(x1)``)."""
    boxes = dets.boxes.detach().cpu().numpy().astype(np.float64)
    scores = dets.scores.detach().cpu().numpy().astype(np.float64)
    x1, y1 = np.trunc(boxes[:, 0]), np.trunc(boxes[:, 1])
    x2, y2 = np.trunc(boxes[:, 2]), np.trunc(boxes[:, 3])
    return np.stack([x1, y1, x2 - x1, y2 - y1, scores], axis=1) if len(scores) else np.zeros((0, 5))
