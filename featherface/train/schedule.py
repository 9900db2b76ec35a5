"""Learning-rate and ODConv temperature schedules as pure functions of the global step.

Every schedule here is a function of the 0-based global step ``s`` (the number of optimiser steps taken
before the one being scheduled) and the number of steps per epoch, so a resumed run reaches the same value
from the step counter alone (no scheduler state beyond ``s``).

Learning rate, ``lr(s) = base_lr * lr_mult(group) * warmup(s) * main(s)``, with ``W = round(warmup_epochs *
steps_per_epoch)`` warm-up steps and ``N = epochs * steps_per_epoch`` steps in all:

* ``warmup(s) = (s + 1) / W`` for ``s < W`` (``W`` at most ``N``) (linear, the last warm-up step at the full rate), else 1;
* ``cosine``: ``main(s) = r + (1 - r) * (1 + cos(pi * t / T)) / 2`` with ``t = min(max(s - W, 0), T)``,
  ``T = max(N - W, 1)`` and ``r = min_lr_ratio`` (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts);
* ``step``: ``main(s) = gamma ** k``, ``k`` the number of milestones ``m`` in ``step_epochs`` with
  ``s >= m * steps_per_epoch`` (RetinaFace's recipe: lr x 0.1 at two late epochs).

ODConv temperature (Li et al., "Omni-Dimensional Dynamic Convolution", ICLR 2022): T falls linearly from
``start`` to ``end`` over ``epochs`` epochs (:func:`featherface.nn.odconv.temperature_at`). Per step (the
official training script's choice) it is evaluated at the fractional epoch ``s / steps_per_epoch``; per epoch
at ``floor(s / steps_per_epoch)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from featherface.nn.odconv import temperature_at
from featherface.train.config import TrainConfig

__all__ = ["LRSchedule", "TemperatureSchedule"]


@dataclass(frozen=True)
class LRSchedule:
    """Warm-up followed by a cosine or step decay; :meth:`factor` is the multiplier of the base rate.

    Attributes:
        steps_per_epoch: optimiser steps in one epoch (>= 1).
        epochs: length of the run in epochs.
        warmup_epochs: warm-up length in (fractional) epochs.
        kind: ``cosine`` or ``step``.
        min_lr_ratio: final multiplier of the cosine decay.
        step_epochs: epochs at which the step decay multiplies by ``gamma``.
        gamma: step-decay factor.
    """

    steps_per_epoch: int
    epochs: int
    warmup_epochs: float = 0.0
    kind: Literal["cosine", "step"] = "cosine"
    min_lr_ratio: float = 0.0
    step_epochs: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"LRSchedule: steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.epochs < 1:
            raise ValueError(f"LRSchedule: epochs must be >= 1, got {self.epochs}")
        if self.kind not in ("cosine", "step"):
            raise ValueError(f"LRSchedule: kind must be 'cosine' or 'step', got {self.kind!r}")

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> "LRSchedule":
        """The schedule a :class:`TrainConfig` describes, for a loader of ``steps_per_epoch`` batches."""
        return cls(steps_per_epoch, config.epochs, config.warmup_epochs, config.schedule, config.min_lr_ratio,
                   tuple(config.step_epochs), config.gamma)

    @property
    def total_steps(self) -> int:
        """N = epochs * steps_per_epoch."""
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        """W = min(round(warmup_epochs * steps_per_epoch), N)."""
        return min(int(round(self.warmup_epochs * self.steps_per_epoch)), self.total_steps)

    def warmup(self, step: int) -> float:
        """(s + 1) / W during the warm-up, else 1."""
        w = self.warmup_steps
        return (step + 1) / w if step < w else 1.0

    def main(self, step: int) -> float:
        """The decay factor at step ``s`` (1 at the end of the warm-up)."""
        if self.kind == "step":
            k = sum(step >= m * self.steps_per_epoch for m in self.step_epochs)
            return float(self.gamma ** k)
        w = self.warmup_steps
        span = max(self.total_steps - w, 1)
        t = min(max(step - w, 0), span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t / span))

    def factor(self, step: int) -> float:
        """``warmup(s) * main(s)``, the multiplier of the base learning rate at 0-based global step ``s``."""
        if step < 0:
            raise ValueError(f"LRSchedule: step must be >= 0, got {step}")
        return self.warmup(step) * self.main(step)

    def apply(self, optimizer: torch.optim.Optimizer, base_lr: float, step: int) -> float:
        """Set every parameter group's ``lr`` to ``base_lr * group["lr_mult"] * factor(step)``.

        Returns:
            The base group's rate ``base_lr * factor(step)``.
        """
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = base_lr * float(group.get("lr_mult", 1.0)) * f
        return base_lr * f


@dataclass(frozen=True)
class TemperatureSchedule:
    """The ODConv attention temperature as a function of the global step.

    Attributes:
        steps_per_epoch: optimiser steps in one epoch.
        start, end, epochs: T goes linearly from ``start`` to ``end`` over ``epochs`` (fractional) epochs.
        per: ``step`` (fractional epoch) or ``epoch`` (whole epochs).
    """

    steps_per_epoch: int
    start: float = 30.0
    end: float = 1.0
    epochs: float = 10
    per: Literal["step", "epoch"] = "step"

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ValueError(f"TemperatureSchedule: steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.per not in ("step", "epoch"):
            raise ValueError(f"TemperatureSchedule: per must be 'step' or 'epoch', got {self.per!r}")

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> "TemperatureSchedule":
        # T reaches its end value by half the run at the latest, so that a short run is trained (and saved) at it.
        epochs = min(float(config.temperature_epochs), config.epochs / 2)
        return cls(steps_per_epoch, config.temperature_start, config.temperature_end, epochs, config.temperature_per)

    def at(self, step: int) -> float:
        """T before optimiser step ``s`` (0-based, global)."""
        if self.per == "step":
            epoch = step / self.steps_per_epoch
        else:
            epoch = float(step // self.steps_per_epoch)
        return temperature_at(epoch, self.start, self.end, self.epochs)
