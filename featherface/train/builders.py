"""What a training run is made of, built from its :class:`~featherface.train.config.TrainConfig`: the device,
the model (with its initial weights), the frozen teacher and the extra loss terms, the training set, the
optimiser and which parameters and BatchNorm layers train.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from featherface.config import ConfigError, resolve_path
from featherface.data.dataset import WiderTrainDataset
from featherface.data.transforms import TrainTransform
from featherface.models.convert import load_fork_weights, load_imagenet_backbone
from featherface.models.loading import load_trained_model
from featherface.models.registry import create_model
from featherface.models.transfer import transfer_weights
from featherface.train.config import TrainConfig
from featherface.train.distill import DistillationLoss
from featherface.train.distributed import DistEnv
from featherface.train.loss import ExtraLoss
from featherface.weights import builtin_weights

__all__ = [
    "ConcatTrainDataset",
    "FirstN",
    "build_dataset",
    "build_extra_losses",
    "build_model",
    "build_optimizer",
    "build_teacher",
    "freeze_untrainable",
    "is_attention_parameter",
    "param_groups",
    "select_device",
    "set_train_mode",
    "weights_path",
]

log = logging.getLogger(__name__)


def select_device(config: TrainConfig, env: DistEnv = DistEnv()) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is asked for (``auto`` and available, or ``cuda``), else ``cpu``.

    Raises:
        ConfigError: ``train.device: cuda`` without a CUDA device.
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but torch.cuda.is_available() is False")
    if config.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))


def weights_path(value: str, base: str | Path) -> Path:
    """A weights setting resolved: ``builtin`` is the package's built-in checkpoint, anything else a path relative
    to ``base``."""
    if value == "builtin":
        return builtin_weights()
    return resolve_path(value, base)


def build_teacher(config: TrainConfig, weights_base: str | Path = ".") -> nn.Module | None:
    """The frozen teacher of ``train.teacher_weights`` (None when it is empty), in eval mode."""
    if not config.teacher_weights:
        return None
    path = weights_path(config.teacher_weights, weights_base)
    teacher = load_trained_model(path, config.teacher_model or None).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    log.info("teacher: %s (%s)", path, config.teacher_model or "architecture recorded in the checkpoint")
    return teacher


def build_extra_losses(config: TrainConfig, model: nn.Module, device: torch.device,
                       weights_base: str | Path = ".") -> list[ExtraLoss]:
    """The extra loss terms ``config`` asks for: :class:`~featherface.train.distill.DistillationLoss` with the
    teacher of :func:`build_teacher` (on ``device``) when ``train.teacher_weights`` is set; else none."""
    teacher = build_teacher(config, weights_base)
    if teacher is None:
        return []
    return [DistillationLoss.from_config(config, teacher.to(device), model)]


def build_model(config: TrainConfig, weights_base: str | Path = ".", load_init: bool = True) -> nn.Module:
    """The model of ``config``, seeded with ``config.seed``, with its initial weights (``config.init``).

    Args:
        config: the training configuration.
        weights_base: the folder relative weight paths are resolved against (the parameter file's folder).
        load_init: read the ``imagenet`` / ``fork_trunk`` weights (False when a checkpoint will overwrite them).
    """
    overrides: dict[str, Any] = {}
    if config.width:
        overrides["width"] = config.width
    if config.bifpn_repeats:
        overrides["bifpn_repeats"] = config.bifpn_repeats
    torch.manual_seed(config.seed)
    try:
        model = create_model(config.model, **overrides)
    except KeyError as err:
        raise ConfigError(f"train.model: {err.args[0]}") from None
    except ValueError as err:
        raise ConfigError(f"train.width / train.bifpn_repeats: {err}") from None
    if load_init and config.init == "imagenet":
        path = resolve_path(config.imagenet_weights, weights_base)
        report = load_imagenet_backbone(model.backbone, path)
        log.info("init: ImageNet backbone from %s (%d tensors)", path, len(report.loaded))
    elif load_init and config.init == "fork_trunk":
        path = resolve_path(config.fork_weights, weights_base)
        report = load_fork_weights(model, path, strict_trunk=True)
        log.info("init: fork trunk from %s (%d tensors; %d attention tensors keep their initialisation)",
                 path, len(report.loaded), len(report.not_loaded))
    elif load_init and config.init == "checkpoint":
        path = weights_path(config.init_weights, weights_base)
        source = load_trained_model(path, config.init_model or None)
        report = transfer_weights(source, model, seed=config.seed, source_name=str(path))
        log.info("init: %s (%d tensors loaded, %d kept their initialisation, %d source tensors unused)", path,
                 len(report.loaded), len(report.not_loaded), len(report.skipped))
    elif load_init:
        log.info("init: random (seed %d)", config.seed)
    return model


class ConcatTrainDataset(Dataset):
    """Several training datasets one after the other, forwarding ``set_epoch`` to each (``seed`` is the first's)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])  # type: ignore[arg-type]

    @property
    def seed(self) -> int | None:
        return getattr(self.datasets[0], "seed", None)

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"ConcatTrainDataset: index {index} out of range [0, {len(self)})")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.datasets[part][index - int(self.offsets[part])]


class FirstN(Dataset):
    """The first ``n`` samples of a dataset, forwarding ``set_epoch`` (and ``seed``) to it."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset = dataset
        self.n = min(int(n), len(dataset))  # type: ignore[arg-type]

    @property
    def seed(self) -> int | None:
        return getattr(self.dataset, "seed", None)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.n:
            raise IndexError(f"FirstN: index {index} out of range [0, {self.n})")
        return self.dataset[index]


def build_dataset(config: TrainConfig, train_dir: str | Path, label_file: str | Path | None = None,
                  extra_dirs: Sequence[str | Path] = ()) -> Dataset:
    """:class:`~featherface.data.dataset.WiderTrainDataset` of ``train_dir`` (followed by those of ``extra_dirs``)
    with the training augmentation at ``config.image_size``, seeded with ``config.seed``, cut to
    ``config.max_train_images`` when non-zero."""
    transform = TrainTransform(image_size=config.image_size, scales=tuple(config.crop_scales))
    dataset: Dataset = WiderTrainDataset(train_dir, label_file, transform, min_face_px=config.min_face_px,
                                         seed=config.seed)
    if extra_dirs:
        extra = [WiderTrainDataset(d, None, transform, min_face_px=config.min_face_px, seed=config.seed)
                 for d in extra_dirs]
        dataset = ConcatTrainDataset([dataset, *extra])
        log.info("training on %d images from %d folders", len(dataset), 1 + len(extra))
    if config.max_train_images and config.max_train_images < len(dataset):  # type: ignore[arg-type]
        log.info("train.max_train_images: using the first %d of %d images", config.max_train_images,
                 len(dataset))  # type: ignore[arg-type]
        dataset = FirstN(dataset, config.max_train_images)
    return dataset


def is_attention_parameter(name: str) -> bool:
    """True for parameters of the model's attention blocks (``attention.<site>.*``)."""
    return name.startswith("attention.")


def param_groups(model: nn.Module, attention_lr_mult: float) -> list[dict[str, Any]]:
    """Optimiser groups: ``trunk`` (``lr_mult`` 1) and ``attention`` (``lr_mult = attention_lr_mult``,
    the parameters under ``attention.``). Empty groups are left out; frozen parameters are skipped."""
    trunk, attention = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (attention if is_attention_parameter(name) else trunk).append(p)
    groups = [{"params": trunk, "lr_mult": 1.0, "name": "trunk"}]
    if attention:
        groups.append({"params": attention, "lr_mult": float(attention_lr_mult), "name": "attention"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW over :func:`param_groups`; rates are set by the schedule."""
    groups = param_groups(model, config.attention_lr_mult)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def freeze_untrainable(model: nn.Module, trainable: Sequence[str]) -> int:
    """Freeze every parameter whose name starts with none of the ``trainable`` prefixes (empty: train all).

    Returns:
        The number of parameters left trainable.

    Raises:
        ConfigError: a prefix that matches no parameter.
    """
    if not trainable:
        return sum(1 for p in model.parameters() if p.requires_grad)
    names = [n for n, _ in model.named_parameters()]
    unmatched = [t for t in trainable if not any(n.startswith(t) for n in names)]
    if unmatched:
        raise ConfigError(f"train.trainable: {unmatched} match no parameter of the model (names start with "
                          f"{sorted({n.split('.')[0] for n in names})})")
    count = 0
    for name, p in model.named_parameters():
        keep = any(name.startswith(t) for t in trainable)
        p.requires_grad_(keep)
        count += keep
    return count


def set_train_mode(model: nn.Module, config: TrainConfig) -> None:
    """``model.train()``, then BatchNorm layers back to eval mode (running statistics, not updated) where
    ``train.freeze_bn`` is on or all of their parameters are frozen (``train.trainable``)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen = all(not p.requires_grad for p in module.parameters())
            if config.freeze_bn or frozen:
                module.eval()
