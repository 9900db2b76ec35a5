"""The training loop: model, optimiser, schedules, loader, checkpoints, metrics, resume, DDP.

:class:`Trainer` runs :class:`~featherface.train.config.TrainConfig` on a dataset of
``(image (3, S, S) float32, {"boxes", "landmarks", "has_landmarks"})`` samples (normally
:class:`~featherface.data.dataset.WiderTrainDataset`) and writes into its output folder:

* ``last.pt`` every ``checkpoint_every`` epochs and after the last one, atomically (temporary file + rename:
  a kill at any moment leaves the previous file intact). Our checkpoint format
  (:func:`~featherface.models.checkpoints.save_checkpoint`) with the extras ``kind="train_state"``,
  ``train_config`` (the resolved :class:`TrainConfig` as a dict), ``model_name``, ``optimizer`` (state dict),
  ``scheduler`` (``{"global_step", "steps_per_epoch"}``: the schedules are pure functions of the step),
  ``scaler`` (``GradScaler`` state or None), ``epoch`` (epochs completed), ``global_step`` (optimiser steps
  taken), ``rng`` (torch CPU / CUDA, numpy and Python generator states and the loader's generator), ``data``
  (the dataset's augmentation seed and the shuffle seed: with the epoch they fix every sample of the next
  epochs, see :mod:`featherface.data.dataset`) and ``wall_s``.
* ``final.pt`` at the end: the model, its config, ``train_config``, ``model_name`` and ``epoch``; readable by
  :func:`~featherface.models.loading.build_model_from_checkpoint`. The ODConv temperature buffers keep
  the value of the last step (``temperature_end`` once ``temperature_epochs`` have passed).
* ``metrics.csv``: one row per epoch (:mod:`featherface.train.metrics`): ``epoch`` (1-based, epochs completed),
  ``step`` (optimiser steps so far), ``lr`` / ``lr_attention`` (rates of the epoch's last step), ``loss``,
  ``loc``, ``cls``, ``landm`` (unweighted terms; ``loss`` the weighted total), ``num_pos`` (matched face priors
  per image), ``grad_norm`` (global L2 norm before clipping), all means over the epoch's steps and ranks;
  ``images`` (images trained on, all ranks), ``images_per_s`` (including data loading), ``epoch_s`` and
  ``wall_s`` (seconds: this epoch, all epochs so far including earlier runs), ``temperature`` (ODConv T at the
  epoch's last step; empty without ODConv) and the attention-entropy columns.

Resume (``fit(resume=True)``) continues from ``last.pt`` exactly: same weights, optimiser state, schedule
position, RNG states and data order, so the losses of the following steps equal those of an uninterrupted run
(on the same device and thread count). A run killed mid-epoch restarts that epoch. Mid-epoch checkpoints are
not written.

A non-finite loss term stops training with :class:`NonFiniteLossError` (epoch, step and the term named);
nothing is written for that epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from featherface.config import ConfigError, Params, from_dict, resolve_path, to_dict
from featherface.train.loss import MultiBoxLoss
from featherface.models.checkpoints import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from featherface.models.loading import load_trained_model
from featherface.models.transfer import transfer_weights
from featherface.nn.odconv import ODConv2d, set_temperature
from featherface.ops.priors import make_priors
from featherface.train import distributed
from featherface.train.config import RESUME_TOLERATED_KEYS, TrainConfig
from featherface.train.distill import Distiller
from featherface.train.distributed import DistEnv
from featherface.train.metrics import BASE_COLUMNS, MetricsLog, attention_entropies
from featherface.train.faults import TrainingInterrupted, loader_worker_error, resume_advice
from featherface.train.run_folder import RunFolderLock, prepare_run_folder
from featherface.train.schedule import LRSchedule, TemperatureSchedule

__all__ = [
    "NonFiniteLossError",
    "ResumeMismatchError",
    "Progress",
    "StepInfo",
    "Trainer",
    "build_dataset",
    "build_model",
    "build_optimizer",
    "load_train_params",
    "param_groups",
    "run_training",
    "select_device",
    "set_aside_stale_run",
]

log = logging.getLogger(__name__)

#: ``progress(done, total, what)``: called by rank 0 after every step (the CLI draws a bar per ``what``).
Progress = Callable[[int, "int | None", str], None]

LAST = "last.pt"
FINAL = "final.pt"
METRICS = "metrics.csv"


class ResumeMismatchError(ConfigError):
    """``last.pt`` was written by a run with other settings, so it cannot be continued exactly."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite. Attributes: ``epoch`` and ``step`` (1-based), ``terms`` (name -> value)."""

    def __init__(self, message: str, epoch: int, step: int, terms: Mapping[str, float]) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.terms = dict(terms)


@dataclass(frozen=True)
class StepInfo:
    """One optimiser step, as passed to ``on_step``: ``epoch`` and ``step`` are 0-based (step within the
    epoch), ``global_step`` the 0-based index of this step over the run; losses as in ``metrics.csv``."""

    epoch: int
    step: int
    global_step: int
    lr: float
    temperature: float | None
    loss: float
    loc: float
    cls: float
    landm: float
    num_pos: int
    grad_norm: float


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


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
        from featherface.weights import builtin_weights

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


def build_model(config: TrainConfig, weights_base: str | Path = ".", load_init: bool = True) -> nn.Module:
    """The model of ``config``, seeded with ``config.seed``, with its initial weights (``config.init``).

    Args:
        config: the training configuration.
        weights_base: the folder relative weight paths are resolved against (the parameter file's folder).
        load_init: read the ``imagenet`` / ``fork_trunk`` weights (False when a checkpoint will overwrite them).
    """
    from featherface.models.convert import load_fork_weights, load_imagenet_backbone
    from featherface.models.registry import create_model

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
    from featherface.data.dataset import WiderTrainDataset
    from featherface.data.transforms import TrainTransform

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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _rng_state(loader_generator: torch.Generator | None) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], loader_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if loader_generator is not None and state.get("loader") is not None:
        loader_generator.set_state(state["loader"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_device(targets: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def _collate_probe(dataset: Dataset, n: int) -> torch.Tensor | None:
    """The images of the first ``n`` samples as of epoch 0 (a fixed probe batch), (n, 3, S, S)."""
    n = min(n, len(dataset))  # type: ignore[arg-type]
    if n <= 0:
        return None
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    return torch.stack([dataset[i][0] for i in range(n)])


# ----------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """The mutable state of one :meth:`Trainer.fit` call."""

    model: nn.Module
    ddp_model: nn.Module
    params: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype
    loader: DataLoader
    steps_per_epoch: int
    lr_schedule: LRSchedule
    temp_schedule: TemperatureSchedule | None
    has_attention_group: bool
    criterion: MultiBoxLoss
    distiller: Distiller | None
    priors: torch.Tensor
    metrics: MetricsLog | None
    probe: torch.Tensor | None
    start_epoch: int
    global_step: int
    wall_s: float


@dataclass
class _EpochTotals:
    """One rank's sums over an epoch, and the rate and temperature of its last step."""

    loss: float = 0.0
    loc: float = 0.0
    cls: float = 0.0
    landm: float = 0.0
    num_pos: float = 0.0
    distill: float = 0.0
    images: int = 0
    steps: int = 0
    grad_sum: float = 0.0
    grad_count: int = 0
    lr: float = float("nan")
    temperature: float | None = None

    def add(self, values: list[float], batch: int) -> None:
        """``values`` = (total, loc, cls, landm, num_pos, grad_norm, distill) of one step of ``batch`` images."""
        self.loss += values[0]
        self.loc += values[1]
        self.cls += values[2]
        self.landm += values[3]
        self.num_pos += values[4]
        self.distill += values[6]
        self.images += batch
        self.steps += 1
        if math.isfinite(values[5]):  # float16 steps skipped by the GradScaler have an infinite norm
            self.grad_sum += values[5]
            self.grad_count += 1

    def as_tensor(self, device: torch.device) -> torch.Tensor:
        """(loss, loc, cls, landm, num_pos, images, steps, grad_sum, grad_count, distill) as float64, for
        all-reduce."""
        return torch.tensor([self.loss, self.loc, self.cls, self.landm, self.num_pos, self.images, self.steps,
                             self.grad_sum, self.grad_count, self.distill], dtype=torch.float64, device=device)



class Trainer:
    """Trains one model on one dataset and writes ``last.pt``, ``final.pt`` and ``metrics.csv`` to ``out_dir``.

    Args:
        config: the training configuration.
        out_dir: output folder (created).
        dataset: training samples ``(image (3, S, S), target dict)`` with an optional ``set_epoch``; S must equal
            ``config.image_size``. Its augmentation should be a function of (seed, epoch, index) for an exact
            resume, as :class:`~featherface.data.dataset.WiderTrainDataset`'s.
        model: a model to train as is; default: :func:`build_model` (``config.init`` weights resolved against
            ``weights_base``).
        weights_base: folder of the parameter file (relative weight paths).
        env: the process's place in a DDP run (default: :func:`distributed.detect`); the process group must be
            initialised by the caller (:func:`run_training` does).
        device: default :func:`select_device`.
        progress: ``progress(done, total, what)`` drawn by the caller (rank 0 only); None draws nothing.
        on_step: called with a :class:`StepInfo` after every optimiser step, on every rank (tests, tools).

    Attributes:
        model: the model being trained (the unwrapped module; set by :meth:`fit` when it builds one).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        dataset: Dataset,
        *,
        model: nn.Module | None = None,
        weights_base: str | Path = ".",
        env: DistEnv | None = None,
        device: torch.device | str | None = None,
        progress: Progress | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.weights_base = Path(weights_base)
        self.env = env if env is not None else distributed.detect()
        self.device = torch.device(device) if device is not None else select_device(config, self.env)
        self.progress = progress
        self.on_step = on_step
        self._model = model
        self.model: nn.Module | None = model
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError("Trainer: the training dataset is empty")

    @property
    def last_path(self) -> Path:
        return self.out_dir / LAST

    @property
    def final_path(self) -> Path:
        return self.out_dir / FINAL

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS

    # ------------------------------------------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> Path:
        """Train for ``config.epochs`` epochs (continuing from ``last.pt`` when ``resume`` and it exists).

        Returns:
            The path of ``final.pt`` (written by rank 0).

        Raises:
            NonFiniteLossError: a loss term became NaN / inf.
            ConfigError: resuming a ``last.pt`` written with a different configuration.
            TrainingInterrupted: Ctrl-C (``KeyboardInterrupt``); the message says what ``last.pt`` holds.
            CheckpointWriteError: a checkpoint could not be written (full disk); the message names it and says
                what ``last.pt`` holds.
        """
        cfg, env = self.config, self.env
        run = self._setup(resume)
        log.info("training %s for epochs %d..%d: %d steps per epoch, batch %d x %d process(es), %s on %s%s",
                 cfg.model, run.start_epoch + 1, cfg.epochs, run.steps_per_epoch, cfg.batch_size, env.world_size,
                 cfg.optimizer, self.device, f", amp {cfg.amp_dtype}" if run.use_amp else "")
        self._saved_epoch = run.start_epoch  # the epochs last.pt holds (0: none written by this run)
        epoch = run.start_epoch
        try:
            for epoch in range(run.start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                totals = self._train_epoch(run, epoch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self._end_epoch(run, epoch, totals, time.perf_counter() - t0)
            if run.distiller is not None:
                run.distiller.close()
            if env.is_main:
                save_checkpoint(self.final_path, run.model, kind="final", train_config=to_dict(cfg),
                                model_name=cfg.model, epoch=cfg.epochs)
                log.info("final model: %s", self.final_path)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"training interrupted in epoch {epoch + 1}/{cfg.epochs}; "
                                      f"{resume_advice(self.last_path, self._saved_epoch)}") from None
        except CheckpointWriteError as err:
            err.advice = f"Training stopped in epoch {epoch + 1}/{cfg.epochs}; " + resume_advice(
                self.last_path, self._saved_epoch)
            raise
        except RuntimeError as err:
            worker = loader_worker_error(err, f"in epoch {epoch + 1}/{cfg.epochs}")
            if worker is None:
                raise
            raise type(worker)(f"{worker}. {resume_advice(self.last_path, self._saved_epoch)}") from err
        distributed.barrier(env)
        return self.final_path

    # ------------------------------------------------------------------------------------------- the parts
    def _setup(self, resume: bool) -> "_Run":
        """Model (initial or resumed weights), optimiser, scaler, loader, schedules, loss, metrics log, probe."""
        from featherface.data.dataset import make_loader

        cfg, env, device = self.config, self.env, self.device
        if cfg.threads and device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        ckpt = self._read_resume_state() if resume else None
        if ckpt is None and env.is_main and self.last_path.is_file():
            log.warning("%s exists and will be overwritten (starting afresh; pass resume to continue it)",
                        self.last_path)
        model = self._model if self._model is not None else build_model(cfg, self.weights_base,
                                                                         load_init=ckpt is None)
        if ckpt is not None:
            load_state_dict_checked(model, ckpt["model"], str(self.last_path))
        self.model = model
        model.to(device)
        freeze_untrainable(model, cfg.trainable)
        set_train_mode(model, cfg)
        optimizer = build_optimizer(model, cfg)
        use_amp = cfg.amp and device.type == "cuda"
        if cfg.amp and not use_amp:
            log.info("train.amp: mixed precision needs CUDA; training in float32 on %s", device)
        amp_dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        start_epoch = int(ckpt["epoch"]) if ckpt is not None else 0
        loader = make_loader(self.dataset, cfg.batch_size, shuffle=True,  # type: ignore[arg-type]
                             num_workers=cfg.num_workers, seed=cfg.seed, epoch=start_epoch, drop_last=True,
                             distributed=env.distributed)
        steps_per_epoch = len(loader)
        if steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {len(self.dataset)} images, fewer than one batch of "  # type: ignore[arg-type]
                f"train.batch_size={cfg.batch_size} x {env.world_size} process(es): lower train.batch_size or use "
                "more images"
            )
        global_step = start_epoch * steps_per_epoch
        wall_s = 0.0
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler") and scaler.is_enabled():
                scaler.load_state_dict(ckpt["scaler"])
            saved_spe = int(ckpt["scheduler"]["steps_per_epoch"])
            if saved_spe == steps_per_epoch:
                global_step = int(ckpt["global_step"])
            else:
                log.warning("%s: %d steps per epoch when saved, %d now (dataset, batch size or process count "
                            "changed); the schedules continue from epoch %d", self.last_path, saved_spe,
                            steps_per_epoch, start_epoch)
            wall_s = float(ckpt.get("wall_s", 0.0))
            _set_rng_state(ckpt["rng"], loader.generator)
            log.info("resumed from %s: %d epochs done, global step %d", self.last_path, start_epoch, global_step)

        teacher = build_teacher(cfg, self.weights_base)
        distiller = None
        if teacher is not None:
            distiller = Distiller(teacher.to(device), model, cls_weight=cfg.distill_cls, box_weight=cfg.distill_box,
                                  landm_weight=cfg.distill_landm, feature_weight=cfg.distill_feature,
                                  features=cfg.distill_features, score_threshold=cfg.distill_score_threshold)
        has_odconv = any(isinstance(m, ODConv2d) for m in model.modules())
        metrics = probe = None
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            metrics = (MetricsLog.resume(self.metrics_path, start_epoch) if ckpt is not None
                       else MetricsLog(self.metrics_path, BASE_COLUMNS))
            if has_odconv and cfg.probe_images:
                probe = _collate_probe(self.dataset, cfg.probe_images)
                probe = probe.to(device) if probe is not None else None
        ddp_model: nn.Module = model
        if env.distributed:
            ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        return _Run(
            model=model,
            ddp_model=ddp_model,
            params=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            scaler=scaler,
            use_amp=use_amp,
            amp_dtype=amp_dtype,
            loader=loader,
            steps_per_epoch=steps_per_epoch,
            lr_schedule=LRSchedule.from_config(cfg, steps_per_epoch),
            temp_schedule=TemperatureSchedule.from_config(cfg, steps_per_epoch) if has_odconv else None,
            has_attention_group=len(optimizer.param_groups) > 1,
            criterion=MultiBoxLoss(cfg.neg_pos_ratio, cfg.match_iou, cfg.loc_weight, cfg.landm_weight),
            distiller=distiller,
            priors=make_priors(cfg.image_size, cfg.image_size, device=device),
            metrics=metrics,
            probe=probe,
            start_epoch=start_epoch,
            global_step=global_step,
            wall_s=wall_s,
        )

    def _train_epoch(self, run: "_Run", epoch: int) -> "_EpochTotals":
        """One pass over the loader; returns this rank's sums."""
        from featherface.data.dataset import set_loader_epoch

        cfg, device = self.config, self.device
        set_loader_epoch(run.loader, epoch)
        set_train_mode(run.model, cfg)
        totals = _EpochTotals()
        for i, (images, targets) in enumerate(run.loader):
            if tuple(images.shape[-2:]) != (cfg.image_size, cfg.image_size):
                raise ValueError(f"the loader yields images of {tuple(images.shape[-2:])}, expected "
                                 f"train.image_size = {cfg.image_size}")
            images = images.to(device, non_blocking=True)
            targets = _to_device(targets, device)
            step = run.global_step
            if run.temp_schedule is not None:
                t_new = run.temp_schedule.at(step)
                if t_new != totals.temperature:
                    set_temperature(run.model, t_new)
                    totals.temperature = t_new
            totals.lr = run.lr_schedule.apply(run.optimizer, cfg.lr, step)
            with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
                outputs = run.ddp_model(images)
            terms = run.criterion(tuple(o.float() for o in outputs), targets, run.priors)
            total = cfg.gt_weight * terms.total
            distill = total.new_zeros(())
            if run.distiller is not None:
                with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
                    distill = run.distiller(images, outputs).total
                total = total + distill
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(total).backward()
            if run.scaler.is_enabled():
                run.scaler.unscale_(run.optimizer)
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
            else:
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in run.params if p.grad is not None])
            dtype = total.dtype
            values = torch.stack([total.detach(), terms.loc.detach(), terms.cls.detach(), terms.landm.detach(),
                                  terms.num_pos.to(dtype), grad_norm.to(dtype), distill.detach().to(dtype)]
                                 ).cpu().tolist()
            if not all(math.isfinite(v) for v in (*values[:4], values[6])):
                self._non_finite(epoch, i, run.steps_per_epoch, step, values)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            totals.add(values, images.shape[0])
            run.global_step += 1
            info = StepInfo(epoch, i, step, totals.lr, totals.temperature, values[0], values[1], values[2],
                            values[3], int(values[4]), values[5])
            if self.on_step is not None:
                self.on_step(info)
            if self.env.is_main:
                self._report_step(info, run.steps_per_epoch)
        return totals

    def _report_step(self, info: StepInfo, steps_per_epoch: int) -> None:
        cfg = self.config
        if self.progress is not None:
            self.progress(info.step + 1, steps_per_epoch, f"epoch {info.epoch + 1}/{cfg.epochs}")
        if cfg.log_every and (info.step + 1) % cfg.log_every == 0:
            log.info("epoch %d/%d step %d/%d: loss %.4f (loc %.4f cls %.4f landm %.4f) lr %.3g%s",
                     info.epoch + 1, cfg.epochs, info.step + 1, steps_per_epoch, info.loss, info.loc, info.cls,
                     info.landm, info.lr, "" if info.temperature is None else f" T {info.temperature:.3g}")

    def _end_epoch(self, run: "_Run", epoch: int, totals: "_EpochTotals", epoch_s: float) -> None:
        """Sum the epoch over the ranks; on rank 0 append the metrics row and write ``last.pt`` when due."""
        cfg, env = self.config, self.env
        reduce_device = self.device if env.distributed and self.device.type == "cuda" else torch.device("cpu")
        summed = distributed.all_reduce_sum(totals.as_tensor(reduce_device), env).cpu().tolist()
        loss, loc, cls, landm, num_pos, images, steps, grad_sum, grad_count, distill = summed
        run.wall_s += epoch_s
        if not env.is_main:
            return
        steps = max(steps, 1.0)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": run.global_step,
            "lr": totals.lr,
            "lr_attention": totals.lr * cfg.attention_lr_mult if run.has_attention_group else None,
            "loss": loss / steps,
            "loc": loc / steps,
            "cls": cls / steps,
            "landm": landm / steps,
            "num_pos": num_pos / max(images, 1.0),
            "grad_norm": grad_sum / grad_count if grad_count else float("nan"),
            "images": int(images),
            "images_per_s": images / epoch_s if epoch_s > 0 else float("nan"),
            "epoch_s": epoch_s,
            "wall_s": run.wall_s,
            "temperature": totals.temperature,
        }
        if run.distiller is not None:
            row["distill"] = distill / steps
        if run.probe is not None:
            row.update(attention_entropies(run.model, run.probe))
        assert run.metrics is not None
        run.metrics.append(row)
        log.info("epoch %d/%d done: loss %.4f (loc %.4f cls %.4f landm %.4f), %.1f images/s, %.1f s", epoch + 1,
                 cfg.epochs, row["loss"], row["loc"], row["cls"], row["landm"], row["images_per_s"], epoch_s)
        done = epoch + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            self._save_last(run, done)

    # ---------------------------------------------------------------------------------------------- helpers
    def _non_finite(self, epoch: int, i: int, steps_per_epoch: int, global_step: int, values: list[float]) -> None:
        names = ("total", "loc", "cls", "landm")
        terms = dict(zip(names, values[:4]))
        bad = [n for n in names[1:] if not math.isfinite(terms[n])] or ["total"]
        shown = ", ".join(f"{n}={v:.6g}" for n, v in terms.items())
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}/{self.config.epochs}, step {i + 1}/{steps_per_epoch} "
            f"(global step {global_step + 1}, rank {self.env.rank}): {shown}; non-finite term(s): {', '.join(bad)}. "
            f"Training stopped; {self.last_path.name} holds the last finished checkpoint. Try a lower train.lr, "
            "train.grad_clip > 0, or check this batch's labels.",
            epoch + 1, i + 1, terms,
        )

    def _save_last(self, run: "_Run", epoch: int) -> None:
        seed = getattr(self.dataset, "seed", None)
        save_checkpoint(
            self.last_path, run.model,
            kind="train_state",
            train_config=to_dict(self.config),
            model_name=self.config.model,
            optimizer=run.optimizer.state_dict(),
            scheduler={"global_step": run.global_step, "steps_per_epoch": run.steps_per_epoch},
            scaler=run.scaler.state_dict() if run.scaler.is_enabled() else None,
            epoch=epoch,
            global_step=run.global_step,
            rng=_rng_state(run.loader.generator),
            data={"augment_seed": seed, "shuffle_seed": self.config.seed, "next_epoch": epoch,
                  "world_size": self.env.world_size},
            wall_s=run.wall_s,
        )
        self._saved_epoch = epoch

    def _read_resume_state(self) -> dict[str, Any] | None:
        """``last.pt`` checked against the current config, or None (with a log line) when there is none."""
        if not self.last_path.is_file():
            log.info("resume: no %s yet, starting from scratch", self.last_path)
            return None
        ckpt = load_checkpoint(self.last_path)
        if ckpt.get("kind") != "train_state":
            raise CheckpointError(f"{self.last_path}: not a training state (kind {ckpt.get('kind')!r}); cannot resume")
        saved = ckpt.get("train_config") or {}
        try:
            saved_cfg = from_dict(TrainConfig, saved, "train")
        except ConfigError as err:
            raise CheckpointError(f"{self.last_path}: its train_config is not valid here: {err}") from None
        current = dataclasses.asdict(self.config)
        before = dataclasses.asdict(saved_cfg)
        differ = [k for k in current if current[k] != before[k]]
        fatal = [k for k in differ if k not in RESUME_TOLERATED_KEYS]
        if fatal:
            listing = ", ".join(f"train.{k}: {before[k]!r} -> {current[k]!r}" for k in fatal)
            raise ResumeMismatchError(
                f"cannot resume from {self.last_path}: it was written with different settings ({listing}). "
                "Restore them, or start afresh without --resume (or delete the file)."
            )
        for key in differ:
            log.warning("resume: train.%s changed from %r to %r", key, before[key], current[key])
        seed = getattr(self.dataset, "seed", None)
        saved_seed = (ckpt.get("data") or {}).get("augment_seed")
        if seed is not None and saved_seed is not None and seed != saved_seed:
            raise ResumeMismatchError(f"cannot resume from {self.last_path}: the dataset's augmentation seed is "
                                      f"{seed}, the checkpoint's {saved_seed}")
        if int(ckpt["epoch"]) > self.config.epochs:
            raise ResumeMismatchError(f"cannot resume from {self.last_path}: it has {ckpt['epoch']} epochs done, "
                                      f"more than train.epochs = {self.config.epochs}")
        return ckpt


# ----------------------------------------------------------------------------------------------------------
# Entry point for the CLI and `python -m featherface.train`
# ----------------------------------------------------------------------------------------------------------


def load_train_params(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Params, TrainConfig]:
    """The validated parameter file and its ``train:`` section (defaults when the section is absent)."""
    from featherface.config import load_params

    params = load_params(path, overrides)
    return params, params.train


def train_dir_of(params: Params, config: TrainConfig, base: str | Path) -> Path:
    """``train.train_dir`` resolved against ``base``, or ``<data.root>/widerface/train``."""
    if config.train_dir:
        return resolve_path(config.train_dir, base)
    return resolve_path(params.data.root, base) / "widerface" / "train"


def set_aside_stale_run(out_dir: str | Path) -> list[Path]:
    """Rename ``last.pt``, ``metrics.csv``, ``final.pt`` and ``provenance.json`` of ``out_dir`` to
    ``last.stale-<UTC time>.pt``, ``metrics.stale-<UTC time>.csv``, ... (nothing is deleted, an earlier stale file
    is never overwritten), so that no file of the old run passes for the new run's; returns the new paths."""
    from featherface.train.run_folder import set_aside

    return set_aside(out_dir)


def run_training(
    params_path: str | Path = "params.yaml",
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resume: bool | str = False,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Train as ``params.yaml``'s ``train:`` section says; what ``featherface train`` and
    ``python -m featherface.train`` run. Under ``torchrun`` it joins the process group (DDP) and leaves it.

    Args:
        params_path: the parameter file (relative paths inside it are resolved against its folder).
        overrides: ``section.key=value`` strings.
        out_dir: default ``<params folder>/results/train``.
        resume: ``True`` (or ``"strict"``) continues from ``<out_dir>/last.pt`` when it exists and refuses one
            written with other settings (:class:`ResumeMismatchError`); ``"auto"`` continues a compatible one and
            otherwise sets it aside (:func:`set_aside_stale_run`) and starts afresh (what the pipeline's train
            stage does); ``False`` starts afresh.
        progress: ``progress(done, total, what)`` (rank 0 only).
        overwrite: let a fresh run replace an earlier run in ``out_dir``; its files are set aside
            (:func:`set_aside_stale_run`), never deleted. Without it, a fresh run into a folder holding
            ``last.pt``, ``metrics.csv`` or ``final.pt`` is refused (``resume="auto"`` sets them aside instead).

    Returns:
        ``<out_dir>/final.pt``. Rank 0 also writes ``<out_dir>/provenance.json``.

    Raises:
        RunFolderError: ``out_dir`` holds a run that a fresh start would overwrite (see ``overwrite``).
        RunFolderBusyError: another run is training into ``out_dir`` (an exclusive lock on ``<out_dir>/.lock``).
        TrainingInterrupted: Ctrl-C; the message says what ``last.pt`` holds and how to continue.
    """
    from featherface.utils.provenance import code_version

    path = Path(params_path).resolve()
    base = path.parent
    code_at_start = code_version()  # the provenance names the code the run started with
    params, config = load_train_params(path, overrides)
    out = Path(out_dir) if out_dir is not None else base / "results" / "train"
    env = distributed.detect()
    device = select_device(config, env)
    lock = RunFolderLock(out).acquire() if env.is_main else None  # rank 0 writes the folder, rank 0 locks it
    try:
        if env.is_main:
            prepare_run_folder(out, resume, overwrite)
        distributed.init(env, device)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    try:
        train_dir = train_dir_of(params, config, base)
        extra_dirs = [resolve_path(d, base) for d in config.extra_train_dirs]
        dataset = build_dataset(config, train_dir, extra_dirs=extra_dirs)
        trainer = Trainer(config, out, dataset, weights_base=base, env=env, device=device, progress=progress)
        try:
            if resume == "auto":
                try:
                    final = trainer.fit(resume=True)
                except ResumeMismatchError as err:
                    if env.is_main:
                        moved = set_aside_stale_run(out)
                        log.warning("%s; starting afresh (the old files are kept as %s)", err,
                                    ", ".join(str(p) for p in moved))
                    distributed.barrier(env)
                    final = trainer.fit(resume=False)
            else:
                final = trainer.fit(resume=bool(resume))
        except CheckpointError as err:
            if not str(err).startswith(str(trainer.last_path)):
                raise
            raise CheckpointError(f"{err}. To start afresh instead, pass --overwrite without --resume (the old "
                                  "files are kept as <name>.stale-<time>.<ext>)") from err
        if env.is_main:
            from featherface.utils.provenance import hardware_description, write_record

            inputs = [train_dir / "label.txt", *(d / "label.txt" for d in extra_dirs)]
            manifest = resolve_path(params.data.root, base) / "manifest.json"
            if manifest.is_file():
                inputs.append(manifest)
            if config.init == "imagenet":
                inputs.append(resolve_path(config.imagenet_weights, base))
            elif config.init == "fork_trunk":
                inputs.append(resolve_path(config.fork_weights, base))
            elif config.init == "checkpoint":
                inputs.append(weights_path(config.init_weights, base))
            if config.teacher_weights:
                inputs.append(weights_path(config.teacher_weights, base))
            write_record(out, "train", {"train": to_dict(config), "data": to_dict(params.data)}, inputs=inputs,
                         extra={"world_size": env.world_size, "device": str(device),
                                "hardware": hardware_description(str(device)),
                                "images": len(dataset)},  # type: ignore[arg-type]
                         code=code_at_start)
        return final
    finally:
        distributed.cleanup()
        if lock is not None:
            lock.release()
