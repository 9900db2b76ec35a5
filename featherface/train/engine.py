"""The training loop: :class:`Trainer` runs the epochs and writes the run's files; DDP-aware.

:class:`Trainer` runs a :class:`~featherface.train.config.TrainConfig` on a dataset of
``(image (3, S, S) float32, {"boxes", "landmarks", "has_landmarks"})`` samples (normally
:class:`~featherface.data.dataset.WiderTrainDataset`) and writes into its output folder:

* ``last.pt`` every ``checkpoint_every`` epochs and after the last one, atomically (temporary file + rename:
  a kill at any moment leaves the previous file intact); its content is described in
  :mod:`featherface.train.state`.
* ``final.pt`` at the end: the model (with ``train.ema_decay`` > 0 the moving average of its weights,
  :mod:`featherface.train.ema`), its config, ``train_config``, ``model_name`` and ``epoch``; readable by
  :func:`~featherface.models.checkpoints.build_model_from_checkpoint`. The ODConv temperature buffers keep
  the value of the last step (``temperature_end`` once ``temperature_epochs`` have passed).
* ``metrics.csv``: one row per epoch (:mod:`featherface.train.metrics`): ``epoch`` (1-based, epochs completed),
  ``step`` (optimiser steps so far), ``lr`` / ``lr_attention`` (rates of the epoch's last step), ``loss``,
  ``loc``, ``cls``, ``landm`` (unweighted terms; ``loss`` the weighted total), ``num_pos`` (matched face priors
  per image), ``grad_norm`` (global L2 norm before clipping), all means over the epoch's steps and ranks;
  ``images`` (images trained on, all ranks), ``images_per_s`` (including data loading), ``epoch_s`` and
  ``wall_s`` (seconds: this epoch, all epochs so far including earlier runs), ``temperature`` (ODConv T at the
  epoch's last step; empty without ODConv), the attention-entropy columns, and one column per extra loss term
  (e.g. ``distill``; means over the epoch's steps and ranks).

The loss of a step is ``train.gt_weight`` x the ground-truth loss (:class:`~featherface.train.loss.MultiBoxLoss`)
plus the extra loss terms (:class:`~featherface.train.loss.ExtraLoss`): those the config asks for
(:func:`~featherface.train.builders.build_extra_losses`: teacher distillation) and those given to the trainer.

Resume (``fit(resume=True)``) continues from ``last.pt`` exactly: same weights, optimiser state, schedule
position, RNG states and data order, so the losses of the following steps equal those of an uninterrupted run
(on the same device and thread count). A run killed mid-epoch restarts that epoch. Mid-epoch checkpoints are
not written.

A non-finite loss term stops training with :class:`~featherface.train.faults.NonFiniteLossError` (epoch, step
and the term named); nothing is written for that epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from featherface.config import to_dict
from featherface.data.dataset import make_loader, set_loader_epoch
from featherface.models.checkpoints import CheckpointWriteError, load_state_dict_checked, save_checkpoint
from featherface.nn.odconv import ODConv2d, set_temperature
from featherface.ops.priors import make_priors
from featherface.train import distributed
from featherface.train.builders import (
    build_extra_losses,
    build_model,
    build_optimizer,
    freeze_untrainable,
    select_device,
    set_train_mode,
)
from featherface.train.config import TrainConfig
from featherface.train.distributed import DistEnv
from featherface.train.ema import WeightAverage
from featherface.train.faults import TrainingInterrupted, loader_worker_error, non_finite_loss_error, resume_advice
from featherface.train.loss import ExtraLoss, MultiBoxLoss
from featherface.train.metrics import BASE_COLUMNS, MetricsLog, attention_entropies, probe_batch
from featherface.train.run_folder import FINAL, LAST, METRICS
from featherface.train.schedule import LRSchedule, TemperatureSchedule
from featherface.train.state import read_resume_state, restore_train_state, save_train_state
from featherface.utils.io import ProgressCallback

__all__ = ["StepInfo", "Trainer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepInfo:
    """One optimiser step, as passed to ``on_step``: ``epoch`` and ``step`` are 0-based (step within the
    epoch), ``global_step`` the 0-based index of this step over the run; losses as in ``metrics.csv``
    (``loss`` includes the ``extra`` terms, name -> value)."""

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
    extra: Mapping[str, float] = field(default_factory=dict)


def _to_device(targets: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


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
    extra_losses: list[ExtraLoss]
    owned_losses: list[ExtraLoss]  # built by this fit from the config: closed when it ends
    priors: torch.Tensor
    metrics: MetricsLog | None
    probe: torch.Tensor | None
    start_epoch: int
    global_step: int
    wall_s: float
    ema: WeightAverage | None = None


@dataclass
class _EpochTotals:
    """One rank's sums over an epoch, and the rate and temperature of its last step."""

    loss: float = 0.0
    loc: float = 0.0
    cls: float = 0.0
    landm: float = 0.0
    num_pos: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    images: int = 0
    steps: int = 0
    grad_sum: float = 0.0
    grad_count: int = 0
    lr: float = float("nan")
    temperature: float | None = None

    def add(self, values: list[float], extra: Mapping[str, float], batch: int) -> None:
        """``values`` = (total, loc, cls, landm, num_pos, grad_norm) and ``extra`` (name -> value) of one step of
        ``batch`` images."""
        self.loss += values[0]
        self.loc += values[1]
        self.cls += values[2]
        self.landm += values[3]
        self.num_pos += values[4]
        for name, value in extra.items():
            if name not in self.extra and name in BASE_COLUMNS:
                raise ValueError(f"an extra loss term is named {name!r}, a column metrics.csv already has")
            self.extra[name] = self.extra.get(name, 0.0) + value
        self.images += batch
        self.steps += 1
        if math.isfinite(values[5]):  # float16 steps skipped by the GradScaler have an infinite norm
            self.grad_sum += values[5]
            self.grad_count += 1

    def as_tensor(self, device: torch.device) -> torch.Tensor:
        """(loss, loc, cls, landm, num_pos, images, steps, grad_sum, grad_count, *extra sums) as float64, for
        all-reduce (every rank has the same extra terms, so the same order)."""
        return torch.tensor([self.loss, self.loc, self.cls, self.landm, self.num_pos, self.images, self.steps,
                             self.grad_sum, self.grad_count, *self.extra.values()], dtype=torch.float64,
                            device=device)


class Trainer:
    """Trains one model on one dataset and writes ``last.pt``, ``final.pt`` and ``metrics.csv`` to ``out_dir``.

    Args:
        config: the training configuration.
        out_dir: output folder (created).
        dataset: training samples ``(image (3, S, S), target dict)`` with an optional ``set_epoch``; S must equal
            ``config.image_size``. Its augmentation should be a function of (seed, epoch, index) for an exact
            resume, as :class:`~featherface.data.dataset.WiderTrainDataset`'s.
        model: a model to train as is; default: :func:`~featherface.train.builders.build_model` (``config.init``
            weights resolved against ``weights_base``).
        weights_base: folder of the parameter file (relative weight paths).
        env: the process's place in a DDP run (default: :func:`distributed.detect`); the process group must be
            initialised by the caller (:func:`featherface.stages.train.run_training` does).
        device: default :func:`~featherface.train.builders.select_device`.
        progress: ``progress(done, total, what)`` drawn by the caller (rank 0 only); None draws nothing.
        on_step: called with a :class:`StepInfo` after every optimiser step, on every rank (tests, tools).
        extra_losses: loss terms added to those the config asks for (the caller owns them: they are not closed).

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
        progress: ProgressCallback | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        extra_losses: Sequence[ExtraLoss] = (),
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.weights_base = Path(weights_base)
        self.env = env if env is not None else distributed.detect()
        self.device = torch.device(device) if device is not None else select_device(config, self.env)
        self.progress = progress
        self.on_step = on_step
        self.extra_losses = list(extra_losses)
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
            if env.is_main:
                final_model = run.ema.model if run.ema is not None else run.model
                save_checkpoint(self.final_path, final_model, kind="final", train_config=to_dict(cfg),
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
        finally:
            for term in run.owned_losses:
                close = getattr(term, "close", None)
                if close is not None:
                    close()
        distributed.barrier(env)
        return self.final_path

    # ------------------------------------------------------------------------------------------- the parts
    def _setup(self, resume: bool) -> _Run:
        """Model (initial or resumed weights), optimiser, scaler, loader, schedules, losses, metrics log, probe."""
        cfg, env, device = self.config, self.env, self.device
        if cfg.threads and device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        ckpt = read_resume_state(self.last_path, cfg, getattr(self.dataset, "seed", None)) if resume else None
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
        global_step, wall_s = start_epoch * steps_per_epoch, 0.0
        if ckpt is not None:
            global_step, wall_s = restore_train_state(ckpt, self.last_path, optimizer=optimizer, scaler=scaler,
                                                      loader_generator=loader.generator,
                                                      steps_per_epoch=steps_per_epoch)

        ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if ema is not None and ckpt is not None:  # same ema_decay (read_resume_state checked): last.pt holds one
            ema.load_state_dict(ckpt["ema"])

        owned_losses = build_extra_losses(cfg, model, device, self.weights_base)
        has_odconv = any(isinstance(m, ODConv2d) for m in model.modules())
        metrics = probe = None
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            metrics = (MetricsLog.resume(self.metrics_path, start_epoch) if ckpt is not None
                       else MetricsLog(self.metrics_path, BASE_COLUMNS))
            if has_odconv and cfg.probe_images:
                probe = probe_batch(self.dataset, cfg.probe_images)
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
            extra_losses=[*owned_losses, *self.extra_losses],
            owned_losses=owned_losses,
            priors=make_priors(cfg.image_size, cfg.image_size, device=device),
            metrics=metrics,
            probe=probe,
            start_epoch=start_epoch,
            global_step=global_step,
            wall_s=wall_s,
            ema=ema,
        )

    def _train_epoch(self, run: _Run, epoch: int) -> _EpochTotals:
        """One pass over the loader; returns this rank's sums."""
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
            extra: dict[str, torch.Tensor] = {}
            for term in run.extra_losses:
                with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
                    named = term(images, outputs, targets)
                for name, value in named.items():
                    total = total + value
                    extra[name] = value
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
                                  terms.num_pos.to(dtype), grad_norm.to(dtype),
                                  *(v.detach().to(dtype) for v in extra.values())]).cpu().tolist()
            extra_values = dict(zip(extra, values[6:]))
            if not all(math.isfinite(v) for v in (*values[:4], *values[6:])):
                raise non_finite_loss_error(values[:4], epoch, i, run.steps_per_epoch, step, cfg.epochs,
                                            self.env.rank, self.last_path)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            if run.ema is not None:
                run.ema.update(run.model)
            totals.add(values[:6], extra_values, images.shape[0])
            run.global_step += 1
            info = StepInfo(epoch, i, step, totals.lr, totals.temperature, values[0], values[1], values[2],
                            values[3], int(values[4]), values[5], extra_values)
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

    def _end_epoch(self, run: _Run, epoch: int, totals: _EpochTotals, epoch_s: float) -> None:
        """Sum the epoch over the ranks; on rank 0 append the metrics row and write ``last.pt`` when due."""
        cfg, env = self.config, self.env
        reduce_device = self.device if env.distributed and self.device.type == "cuda" else torch.device("cpu")
        summed = distributed.all_reduce_sum(totals.as_tensor(reduce_device), env).cpu().tolist()
        loss, loc, cls, landm, num_pos, images, steps, grad_sum, grad_count = summed[:9]
        extra = dict(zip(totals.extra, summed[9:]))
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
        row.update({name: value / steps for name, value in extra.items()})
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
    def _save_last(self, run: _Run, epoch: int) -> None:
        save_train_state(self.last_path, run.model, self.config, optimizer=run.optimizer, scaler=run.scaler,
                         loader_generator=run.loader.generator, epoch=epoch, global_step=run.global_step,
                         steps_per_epoch=run.steps_per_epoch, wall_s=run.wall_s,
                         augment_seed=getattr(self.dataset, "seed", None), world_size=self.env.world_size,
                         ema=run.ema.state_dict() if run.ema is not None else None)
        self._saved_epoch = epoch
