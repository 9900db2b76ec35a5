"""The ``train:`` section of ``params.yaml``: a frozen, validated :class:`TrainConfig`.

Load it with ``featherface.config.from_dict(TrainConfig, mapping, "train")``: unknown keys are rejected with a
suggestion, values of the wrong type name their dotted key, and :meth:`TrainConfig.__post_init__` rejects
out-of-range values with a :class:`~featherface.config.ConfigError` naming ``train.<key>``.

The defaults are the RetinaFace / FeatherFace recipe (DESIGN.md section 4: SGD momentum 0.9, weight decay
5e-4, lr 1e-3, batch 32, 640 px, 350 epochs, matching IoU 0.35, hard negatives 7:1, loss weights 2 / 1 / 1)
with the ODConv temperature schedule of Li et al. 2022 (T from 30 to 1 over the first 10 epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from featherface.data.transforms import MAX_CROP_SCALE
from featherface.errors import ConfigError

__all__ = ["FEATURE_MODULES", "RESUME_TOLERATED_KEYS", "TrainConfig"]

#: Keys that may differ between the run that wrote ``last.pt`` and the run that resumes from it (they do not
#: change what is computed, or, for ``epochs``, only extend / shorten the run; the learning-rate schedule is
#: then recomputed for the new length and a warning is logged).
RESUME_TOLERATED_KEYS: tuple[str, ...] = (
    "epochs",
    "num_workers",
    "log_every",
    "checkpoint_every",
    "threads",
    "probe_images",
    "device",
)

#: Distillation feature name (``train.distill_features``) -> the submodule of
#: :class:`~featherface.models.featherface.FeatherFace` whose output it is (used by
#: :mod:`featherface.train.distill`; here so that the config validates names without importing torch).
FEATURE_MODULES: dict[str, str] = {
    "c3": "attention.c3", "c4": "attention.c4", "c5": "attention.c5",
    "p3": "attention.p3", "p4": "attention.p4", "p5": "attention.p5",
    "s3": "context.0", "s4": "context.1", "s5": "context.2",
}


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"train.{key}: {message}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trainer reads (the ``train:`` section of ``params.yaml``).

    Model and initialisation:
        model: a registered model name (:func:`featherface.models.registry.create_model`).
        width, bifpn_repeats: override the registered model's BiFPN width C / cell count R (0 keeps the
            registered value; e.g. ``width: 16, bifpn_repeats: 1`` for a tiny CPU smoke run).
        init: ``imagenet`` loads ``imagenet_weights`` into the backbone (the recipe), ``fork_trunk`` loads the
            trunk of a FeatherFace fork checkpoint (``fork_weights``, same width and cell count; the attention
            blocks keep their initialisation), ``checkpoint`` starts from a trained model (``init_weights``,
            ``init_model``) by :func:`featherface.models.transfer.transfer_weights` (tensors copied by name,
            static convs turned into ODConvs), ``none`` keeps the random initialisation.
        imagenet_weights, fork_weights: paths relative to the parameter file's folder.
        init_weights: for ``init: checkpoint``: a checkpoint of ours or a fork state dict (path relative to the
            parameter file's folder), or ``builtin`` for the package's built-in weights.
        init_model: the registered model of ``init_weights`` when it is a fork state dict (ours record theirs).

    Data:
        train_dir: the ``widerface/train`` folder (``images/`` and ``label.txt``); empty means
            ``<data.root>/widerface/train``. Relative to the parameter file's folder.
        image_size: side S of the square training crops (640).
        crop_scales: crop side as a fraction of the short image side, one drawn per try (RetinaFace's
            0.3 / 0.45 / 0.6 / 0.8 / 1.0); larger values keep faces nearer the scale they have in the original image,
            and values above 1 (up to 4) zoom out, padding with the mean colour, to train on smaller faces.
        max_train_images: use only the first N images of the label file (0 = all of them).
        min_face_px: drop faces smaller than this (pixels of the original image) when the labels are read.
        num_workers: data-loader processes (0 loads in the training process).
        extra_train_dirs: more folders of the same layout (``images/`` and ``label.txt``) trained on together with
            ``train_dir`` (e.g. ``widerface_train_extra``).

    Optimisation:
        epochs, batch_size: ``batch_size`` is per process (the global batch is ``batch_size * world_size``).
        optimizer: ``sgd`` (``momentum``, Nesterov off) or ``adamw`` (betas 0.9 / 0.999); ``weight_decay``
            for both (decoupled for AdamW), applied to every parameter as in RetinaFace.
        lr: peak learning rate (of the trunk; see ``attention_lr_mult``).
        warmup_epochs: linear warm-up length in (fractional) epochs, counted in steps (0 = none); a warm-up
            longer than the run is cut to the run (the rate then reaches ``lr`` at the last step).
        schedule: ``cosine`` (from ``lr`` to ``lr * min_lr_ratio`` over the steps after the warm-up) or
            ``step`` (``lr * gamma ** k`` after the k-th epoch of ``step_epochs``); see
            :mod:`featherface.train.schedule`.
        attention_lr_mult: learning-rate multiplier of the parameters under the model's ``attention.``
            modules (the six attention sites); 2.0 in the founding configuration.
        grad_clip: maximum global L2 norm of the gradients (0 = no clipping).
        ema_decay: keep an exponential moving average of the weights with this decay (0 = off; e.g. 0.998, an
            average over about the last 500 steps, bias-corrected) and write it as ``final.pt``; see
            :mod:`featherface.train.ema`.

        trainable: parameter-name prefixes that train (e.g. ``[context]`` for the SSH modules alone); empty trains
            every parameter. The other parameters are frozen and their BatchNorm layers kept in eval mode.
        freeze_bn: keep every BatchNorm on its running statistics (eval mode), as when fine-tuning a trained
            model with small batches.

    Loss (:class:`featherface.train.loss.MultiBoxLoss`):
        neg_pos_ratio, match_iou, loc_weight, landm_weight.
        gt_weight: weight of the ground-truth loss (0 for a phase that only imitates a teacher).

    Teacher (:mod:`featherface.train.distill`; off while ``teacher_weights`` is empty):
        teacher_model: the teacher's registered model when ``teacher_weights`` is a fork state dict (ours record
            theirs). teacher_weights: its checkpoint (relative to the parameter file's folder, or ``builtin``).
        distill_cls, distill_box, distill_landm: weights of the output-level terms (KL of the face probability,
            smooth L1 to the teacher's boxes and landmarks where it sees a face).
        distill_feature: weight of the feature-level term (mean squared difference of ``distill_features``,
            names among c3..c5, p3..p5, s3..s5), for a teacher whose trunk has the student's shapes there.
        distill_score_threshold: the teacher's face probability above which a prior counts as a face.

    ODConv temperature (:func:`featherface.nn.odconv.temperature_at`; ignored by models without ODConv):
        temperature_start, temperature_end, temperature_epochs: T falls linearly from start to end over the
            first ``temperature_epochs`` epochs (at most half the run, so that a short run still ends at ``end``),
            then stays at ``end``.
        temperature_per: ``step`` updates T before every optimiser step with the fractional epoch
            ``epoch + i / steps_per_epoch`` (as the official ODConv training script); ``epoch`` once per
            epoch with the whole epoch number.

    Run control:
        seed: seeds the model initialisation, the shuffle order and the augmentation streams.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: mixed precision (``torch.autocast`` + ``GradScaler`` for float16) on CUDA; ignored with a log line
            on CPU. ``amp_dtype``: ``float16`` or ``bfloat16`` (no loss scaling needed).
        threads: ``torch.set_num_threads`` for CPU training (0 leaves PyTorch's default).
        checkpoint_every: write ``last.pt`` every N epochs (and after the last one); a kill loses at most N
            epochs.
        log_every: log a progress line every N steps (0 = only per epoch).
        probe_images: size of the fixed probe batch on which the ODConv attention entropies are measured at
            every epoch end (0 = no entropy columns).
    """

    model: str = "featherface_odconv"
    width: int = 0
    bifpn_repeats: int = 0
    init: Literal["imagenet", "fork_trunk", "checkpoint", "none"] = "imagenet"
    imagenet_weights: str = "data/weights/mobilenetV1X0.25_pretrain.tar"
    fork_weights: str = "data/weights/featherface_eca_cbam_fork.pth"
    init_weights: str = ""
    init_model: str = ""

    train_dir: str = ""
    image_size: int = 640
    crop_scales: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
    max_train_images: int = 0
    min_face_px: float = 0.0
    num_workers: int = 2
    extra_train_dirs: tuple[str, ...] = ()

    epochs: int = 350
    batch_size: int = 32
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    schedule: Literal["cosine", "step"] = "cosine"
    min_lr_ratio: float = 0.0
    step_epochs: tuple[int, ...] = (266, 308)
    gamma: float = 0.1
    attention_lr_mult: float = 2.0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    trainable: tuple[str, ...] = ()
    freeze_bn: bool = False

    neg_pos_ratio: int = 7
    match_iou: float = 0.35
    loc_weight: float = 2.0
    landm_weight: float = 1.0
    gt_weight: float = 1.0

    teacher_model: str = ""
    teacher_weights: str = ""
    distill_cls: float = 1.0
    distill_box: float = 1.0
    distill_landm: float = 1.0
    distill_feature: float = 0.0
    distill_features: tuple[str, ...] = ("s3", "s4", "s5")
    distill_score_threshold: float = 0.5

    temperature_start: float = 30.0
    temperature_end: float = 1.0
    temperature_epochs: int = 10
    temperature_per: Literal["step", "epoch"] = "step"

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    threads: int = 0
    checkpoint_every: int = 1
    log_every: int = 50
    probe_images: int = 8

    def __post_init__(self) -> None:
        _require(bool(self.model.strip()), "model", "name a registered model")
        for key in ("width", "bifpn_repeats", "max_train_images", "num_workers", "threads", "probe_images",
                    "log_every", "seed"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _require(self.width % 4 == 0, "width", f"must be divisible by 4 (0 keeps the model's), got {self.width}")
        for key in ("epochs", "batch_size", "image_size", "checkpoint_every", "neg_pos_ratio", "temperature_epochs"):
            _require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        _require(self.image_size % 32 == 0, "image_size", f"must be a multiple of 32 (the P5 stride), got "
                 f"{self.image_size}")
        for key in ("lr", "weight_decay", "warmup_epochs", "min_face_px", "grad_clip", "attention_lr_mult",
                    "momentum", "min_lr_ratio", "gamma", "loc_weight", "landm_weight", "gt_weight", "distill_cls",
                    "distill_box", "distill_landm", "distill_feature"):
            value = getattr(self, key)
            _require(math.isfinite(value) and value >= 0, key, f"must be a finite number >= 0, got {value}")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(math.isfinite(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay",
                 f"must be in [0, 1) (0 = no weight average), got {self.ema_decay}")
        _require(self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        _require(self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _require(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        _require(0 < self.match_iou <= 1, "match_iou", f"must be in (0, 1], got {self.match_iou}")
        _require(len(self.crop_scales) > 0 and all(0 < c <= MAX_CROP_SCALE for c in self.crop_scales), "crop_scales",
                 f"give one or more fractions in (0, {MAX_CROP_SCALE}], got {list(self.crop_scales)}")
        _require(self.init != "checkpoint" or bool(self.init_weights.strip()), "init_weights",
                 "init: checkpoint needs init_weights (a checkpoint path, or builtin)")
        _require(0 <= self.distill_score_threshold < 1, "distill_score_threshold",
                 f"must be in [0, 1), got {self.distill_score_threshold}")
        unknown = [n for n in self.distill_features if n not in FEATURE_MODULES]
        _require(not unknown, "distill_features", f"unknown feature names {unknown}; known: {sorted(FEATURE_MODULES)}")
        if not self.teacher_weights:
            _require(self.gt_weight > 0, "gt_weight", "must be > 0 without a teacher (nothing else to learn from)")
        for key in ("temperature_start", "temperature_end"):
            value = getattr(self, key)
            _require(math.isfinite(value) and value > 0, key, f"must be a finite number > 0, got {value}")
        if self.schedule == "step":
            steps = self.step_epochs
            _require(len(steps) > 0, "step_epochs", "give at least one epoch for schedule: step")
            _require(all(b > a for a, b in zip(steps, steps[1:])), "step_epochs",
                     f"must be strictly increasing, got {list(steps)}")
            _require(all(0 < s < self.epochs for s in steps), "step_epochs",
                     f"every epoch must lie in [1, train.epochs - 1] = [1, {self.epochs - 1}], got {list(steps)}")
