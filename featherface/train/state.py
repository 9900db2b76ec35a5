"""The training state in ``last.pt``: writing it, and reading it back to continue a run exactly.

``last.pt`` is our checkpoint format (:func:`~featherface.models.checkpoints.save_checkpoint`, written
atomically) with the extras ``kind="train_state"``, ``train_config`` (the resolved
:class:`~featherface.train.config.TrainConfig` as a dict), ``model_name``, ``optimizer`` (state dict),
``scheduler`` (``{"global_step", "steps_per_epoch"}``: the schedules are pure functions of the step), ``scaler``
(``GradScaler`` state or None), ``epoch`` (epochs completed), ``global_step`` (optimiser steps taken), ``rng``
(torch CPU / CUDA, numpy and Python generator states and the loader's generator), ``data`` (the dataset's
augmentation seed and the shuffle seed: with the epoch they fix every sample of the next epochs, see
:mod:`featherface.data.dataset`), ``wall_s`` (training seconds so far) and ``ema`` (the weight average's
:meth:`~featherface.train.ema.WeightAverage.state_dict`, or None without ``train.ema_decay``).

A run continues only from a state written with the same settings, but for
:data:`~featherface.train.config.RESUME_TOLERATED_KEYS` (:class:`ResumeMismatchError` otherwise).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from featherface.config import ConfigError, from_dict, to_dict
from featherface.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from featherface.train.config import RESUME_TOLERATED_KEYS, TrainConfig

__all__ = [
    "ResumeMismatchError",
    "read_resume_state",
    "restore_train_state",
    "rng_state",
    "save_train_state",
    "set_rng_state",
]

log = logging.getLogger(__name__)


class ResumeMismatchError(ConfigError):
    """``last.pt`` was written by a run with other settings, so it cannot be continued exactly."""


def rng_state(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """The torch CPU (and, once initialised, CUDA), numpy and Python generator states and the loader's."""
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


def set_rng_state(state: Mapping[str, Any], loader_generator: torch.Generator | None) -> None:
    """Restore what :func:`rng_state` captured (the CUDA states only when CUDA is available)."""
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


def save_train_state(
    path: Path,
    model: nn.Module,
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loader_generator: torch.Generator | None,
    epoch: int,
    global_step: int,
    steps_per_epoch: int,
    wall_s: float,
    augment_seed: int | None,
    world_size: int,
    ema: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``last.pt`` (see the module docstring) after ``epoch`` finished epochs; returns ``path``.

    Raises:
        CheckpointWriteError: the file could not be written (the previous one is left intact).
    """
    return save_checkpoint(
        path, model,
        kind="train_state",
        train_config=to_dict(config),
        model_name=config.model,
        optimizer=optimizer.state_dict(),
        scheduler={"global_step": global_step, "steps_per_epoch": steps_per_epoch},
        scaler=scaler.state_dict() if scaler.is_enabled() else None,
        epoch=epoch,
        global_step=global_step,
        rng=rng_state(loader_generator),
        data={"augment_seed": augment_seed, "shuffle_seed": config.seed, "next_epoch": epoch,
              "world_size": world_size},
        wall_s=wall_s,
        ema=ema,
    )


def read_resume_state(path: Path, config: TrainConfig, augment_seed: int | None) -> dict[str, Any] | None:
    """``last.pt`` checked against the current config and dataset seed, or None (with a log line) when there is
    none. Changed :data:`~featherface.train.config.RESUME_TOLERATED_KEYS` are logged as warnings.

    Raises:
        CheckpointError: not a training state, or its ``train_config`` is not valid here.
        ResumeMismatchError: other settings, another augmentation seed, or more epochs done than ``config.epochs``.
    """
    if not path.is_file():
        log.info("resume: no %s yet, starting from scratch", path)
        return None
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "train_state":
        raise CheckpointError(f"{path}: not a training state (kind {ckpt.get('kind')!r}); cannot resume")
    saved = ckpt.get("train_config") or {}
    try:
        saved_cfg = from_dict(TrainConfig, saved, "train")
    except ConfigError as err:
        raise CheckpointError(f"{path}: its train_config is not valid here: {err}") from None
    current = dataclasses.asdict(config)
    before = dataclasses.asdict(saved_cfg)
    differ = [k for k in current if current[k] != before[k]]
    fatal = [k for k in differ if k not in RESUME_TOLERATED_KEYS]
    if fatal:
        listing = ", ".join(f"train.{k}: {before[k]!r} -> {current[k]!r}" for k in fatal)
        raise ResumeMismatchError(
            f"cannot resume from {path}: it was written with different settings ({listing}). Restore them, or "
            "pass --overwrite without --resume to start afresh (the old files are kept as "
            "<name>.stale-<time>.<ext>)"
        )
    for key in differ:
        log.warning("resume: train.%s changed from %r to %r", key, before[key], current[key])
    saved_seed = (ckpt.get("data") or {}).get("augment_seed")
    if augment_seed is not None and saved_seed is not None and augment_seed != saved_seed:
        raise ResumeMismatchError(f"cannot resume from {path}: the dataset's augmentation seed is "
                                  f"{augment_seed}, the checkpoint's {saved_seed}")
    if int(ckpt["epoch"]) > config.epochs:
        raise ResumeMismatchError(f"cannot resume from {path}: it has {ckpt['epoch']} epochs done, "
                                  f"more than train.epochs = {config.epochs}")
    return ckpt


def restore_train_state(
    ckpt: Mapping[str, Any],
    path: Path,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loader_generator: torch.Generator | None,
    steps_per_epoch: int,
) -> tuple[int, float]:
    """Load the optimiser, scaler and RNG states of ``ckpt`` (read from ``path``; the model's weights are loaded
    by the caller).

    Returns:
        ``(global_step, wall_s)``: the optimiser steps taken (``epoch * steps_per_epoch`` when the steps per
        epoch changed since the save: the schedules continue from the epoch) and the training seconds so far.
    """
    start_epoch = int(ckpt["epoch"])
    global_step = start_epoch * steps_per_epoch
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    saved_spe = int(ckpt["scheduler"]["steps_per_epoch"])
    if saved_spe == steps_per_epoch:
        global_step = int(ckpt["global_step"])
    else:
        log.warning("%s: %d steps per epoch when saved, %d now (dataset, batch size or process count "
                    "changed); the schedules continue from epoch %d", path, saved_spe, steps_per_epoch,
                    start_epoch)
    set_rng_state(ckpt["rng"], loader_generator)
    log.info("resumed from %s: %d epochs done, global step %d", path, start_epoch, global_step)
    return global_step, float(ckpt.get("wall_s", 0.0))
