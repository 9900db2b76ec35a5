"""An exponential moving average (EMA) of a model's weights over the optimiser steps (``train.ema_decay``).

After every optimiser step the average moves towards the trained model's weights ``w``::

    ema = decay_n * ema + (1 - decay_n) * w,    decay_n = 1 - (1 - ema_decay) / (1 - ema_decay ** (n + 1))

with ``n`` the updates made before this one. This ``decay_n`` is the bias correction of Adam's moment estimates
(Kingma & Ba 2015) written as an update: after ``N`` updates ``ema`` is exactly the mean of the ``N`` weights seen,
the k-th weighted by ``ema_decay ** (N - k)``: the starting weights do not count (``decay_0 = 0``, the first
update copies the weights), and ``ema_decay`` rules from the first step on, whatever the run's length. An average over
about the last ``1 / (1 - ema_decay)`` steps (all of them in a shorter run) is often a better model than the last
weights (Polyak & Juditsky 1992; the EMA kept by YOLO-style detector trainers). With float16 mixed precision a step
that the ``GradScaler`` skips still counts as an update (of unchanged weights).

Averaged: every floating-point tensor of the state dict (parameters, BatchNorm running statistics) except the
ODConv ``temperature`` buffers, which follow their schedule and are copied, as are integer tensors
(``num_batches_tracked``).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["WeightAverage"]


def _is_averaged(name: str, tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() and name.rsplit(".", 1)[-1] != "temperature"


class WeightAverage:
    """The EMA of ``model``'s weights; :attr:`model` is a frozen copy in eval mode holding the average.

    Args:
        model: the model being trained (unwrapped); copied once here.
        decay: ``train.ema_decay``, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def decay_at(self, updates: int) -> float:
        """The decay of the update made after ``updates`` earlier ones (0 for the first)."""
        return 1.0 - (1.0 - self.decay) / (1.0 - self.decay ** (updates + 1))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights (call after each optimiser step)."""
        d = self.decay_at(self.updates)
        current = model.state_dict()
        for name, avg in self.model.state_dict().items():
            value = current[name].detach()
            if _is_averaged(name, avg):
                avg.lerp_(value.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "updates", "model"}``: what ``last.pt`` stores to continue the average exactly."""
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (raises ``KeyError`` / ``RuntimeError`` on a mismatched one)."""
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
