"""Learning-rate and temperature schedules against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from featherface.train.config import TrainConfig
from featherface.train.schedule import LRSchedule, TemperatureSchedule

# 10 steps per epoch, 5 epochs -> N = 50 steps; 1 warm-up epoch -> W = 10 steps.
COSINE = LRSchedule(steps_per_epoch=10, epochs=5, warmup_epochs=1.0, kind="cosine")


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # (0 + 1) / 10
        (4, 0.5),  # (4 + 1) / 10
        (9, 1.0),  # last warm-up step reaches the full rate; cosine still at t = 0
        (10, 1.0),  # t = 0
        (20, 0.5 * (1 + math.cos(math.pi * 10 / 40))),  # t = 10 of T = 40: 0.853553...
        (30, 0.5),  # t = 20 = T / 2
        (49, 0.5 * (1 + math.cos(math.pi * 39 / 40))),  # last step: 0.001541...
        (60, 0.0),  # past the end: clamped at t = T
    ],
)
def test_warmup_then_cosine(step, expected):
    assert COSINE.factor(step) == pytest.approx(expected, abs=1e-12)


def test_cosine_floor():
    s = LRSchedule(10, 5, 1.0, "cosine", min_lr_ratio=0.1)
    assert s.factor(30) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.factor(50) == pytest.approx(0.1)


@pytest.mark.parametrize("step, expected", [(0, 0.25), (3, 1.0), (19, 1.0), (20, 0.1), (39, 0.1), (40, 0.01),
                                            (49, 0.01)])
def test_warmup_then_step(step, expected):
    s = LRSchedule(10, 5, warmup_epochs=0.4, kind="step", step_epochs=(2, 4), gamma=0.1)  # W = 4
    assert s.factor(step) == pytest.approx(expected, rel=1e-12)


def test_warmup_longer_than_the_run_is_cut_to_it():
    s = LRSchedule(steps_per_epoch=2, epochs=2, warmup_epochs=5.0)  # W = min(10, 4) = 4
    assert s.warmup_steps == 4
    assert [s.factor(i) for i in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_no_warmup_starts_at_full_rate():
    s = LRSchedule(7, 3, warmup_epochs=0.0, kind="cosine")
    assert s.warmup_steps == 0 and s.factor(0) == 1.0


def test_apply_scales_each_group_by_its_multiplier():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr_mult": 1.0}, {"params": [b], "lr_mult": 2.0}], lr=1.0)
    lr = COSINE.apply(opt, 0.01, 4)
    assert lr == pytest.approx(0.005)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.010])


def test_from_config():
    cfg = TrainConfig(epochs=6, warmup_epochs=0.5, schedule="step", step_epochs=(3,), gamma=0.5)
    s = LRSchedule.from_config(cfg, steps_per_epoch=4)
    assert (s.total_steps, s.warmup_steps) == (24, 2)
    assert [s.factor(i) for i in (0, 1, 11, 12)] == pytest.approx([0.5, 1.0, 1.0, 0.5])


def test_temperature_per_step_and_per_epoch():
    per_step = TemperatureSchedule(steps_per_epoch=4, start=30.0, end=1.0, epochs=10, per="step")
    # T = 30 - 29 * (s / 4) / 10
    assert per_step.at(0) == 30.0
    assert per_step.at(1) == pytest.approx(30 - 29 * 0.025)  # 29.275
    assert per_step.at(2) == pytest.approx(28.55)
    assert per_step.at(20) == pytest.approx(15.5)  # epoch 5 of 10
    assert per_step.at(40) == 1.0 and per_step.at(400) == 1.0
    per_epoch = TemperatureSchedule(steps_per_epoch=4, start=30.0, end=1.0, epochs=10, per="epoch")
    assert [per_epoch.at(s) for s in (0, 3, 4, 7, 8)] == pytest.approx([30.0, 30.0, 27.1, 27.1, 24.2])


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        LRSchedule(0, 5)
    with pytest.raises(ValueError, match="step must be >= 0"):
        COSINE.factor(-1)
