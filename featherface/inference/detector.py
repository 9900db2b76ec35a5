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

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featherface.inference.cache import PRIOR_CACHE_SIZE, SizeCache
from featherface.inference.images import (
    ColorOrder,
    ImageInput,
    LargeImageNotice,
    as_image_list,
    load_image,
    resize_long_side,
    to_tensor,
)
from featherface.inference.np_ops import wider_rows
from featherface.inference.postprocess import Detections, detect_batch, face_scores
from featherface.inference.settings import WIDER_PROTOCOL, DetectorSettings
from featherface.models.loading import load_trained_model, load_weights
from featherface.models.featherface import FeatherFaceConfig
from featherface.models.registry import create_model
from featherface.ops.priors import make_priors
from featherface.weights import builtin_weights

__all__ = ["PRIOR_CACHE_SIZE", "WIDER_PROTOCOL", "DetectorSettings", "FaceDetector", "default_device", "to_wider_rows"]

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FaceDetector:
    """A face detector around a FeatherFace model (any module returning ``(loc, logits, landmarks)``).

    The priors, box-coding variances and input mean are those of the model's :class:`FeatherFaceConfig`
    (``model.config``; the defaults for a module without one).

    Args:
        model: the network; put in eval mode and moved to ``device``.
        settings: a :class:`~featherface.inference.settings.DetectorSettings`; keyword arguments override its
            fields.
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
        self.settings = (settings or DetectorSettings()).updated(**overrides)
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.eval().to(self.device)
        config = getattr(model, "config", None)
        self.anchors = config if isinstance(config, FeatherFaceConfig) else FeatherFaceConfig()
        self._priors = SizeCache(lambda h, w: make_priors(h, w, self.anchors.min_sizes, self.anchors.steps,
                                                          device=self.device))
        self._large_image_notice = LargeImageNotice()

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

    def _prepare(self, image: ImageInput, color: ColorOrder, index: int) -> tuple[np.ndarray, tuple[float, float]]:
        array, where = load_image(image, color, f"image {index}")
        self.large_input_warning(array.shape[0], array.shape[1], where)
        return resize_long_side(array, self.settings.long_side)

    def large_input_warning(self, height: int, width: int, where: str) -> str | None:
        """The first time this detector meets an image too large to run at its original size (see
        :func:`~featherface.inference.images.large_image_warning`): log a warning suggesting ``long_side`` and
        return it; ``None`` otherwise (later large images are not reported)."""
        return self._large_image_notice(height, width, self.settings.long_side, where)

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
            priors = self._priors(height, width)
            for start in range(0, len(members), s.batch_size):
                chunk = members[start : start + s.batch_size]
                x = torch.stack([to_tensor(prepared[i][0], self.anchors.mean_bgr) for i in chunk]).to(self.device)
                loc, logits, landmarks = self.model(x)
                dets = detect_batch(
                    loc, face_scores(logits), landmarks, priors, (height, width),
                    score_threshold=s.score_threshold, pre_nms_top_k=s.pre_nms_top_k, nms_iou=s.nms_iou,
                    keep_top_k=s.max_detections, scales=[prepared[i][1] for i in chunk],
                    variances=self.anchors.variances, nms_offset=s.nms_offset, box_voting=s.box_voting,
                )
                for i, det in zip(chunk, dets):
                    results[i] = det.to("cpu")
        return results[0] if single else results

    __call__ = detect


def to_wider_rows(dets: Detections) -> np.ndarray:
    """Detections as WIDER prediction rows ``(N, 5)`` float64 (:func:`featherface.inference.np_ops.wider_rows`):
    ``x y w h score`` with the RetinaFace / FeatherFace evaluation scripts' integer convention."""
    return wider_rows(dets.boxes.detach().cpu().numpy(), dets.scores.detach().cpu().numpy())
