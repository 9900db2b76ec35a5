"""The moving average of the weights: its arithmetic on a tiny module, and what it copies instead of averaging."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featherface.train.ema import WeightAverage


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1, bias=False)
        self.bn = nn.BatchNorm1d(1)
        self.register_buffer("temperature", torch.tensor(30.0))


def test_average_follows_the_decay_ramp_worked_by_hand():
    model = _Tiny()
    with torch.no_grad():
        model.linear.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.linear.weight.fill_(10.0)
    ema.update(model)  # decay min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 10
    assert ema.model.linear.weight.item() == pytest.approx(9.0)
    with torch.no_grad():
        model.linear.weight.fill_(20.0)
    ema.update(model)  # decay min(0.5, 2/11) = 2/11
    assert ema.model.linear.weight.item() == pytest.approx(2 / 11 * 9.0 + 9 / 11 * 20.0)
    for _ in range(20):  # from update 9 on, (1 + n) / (10 + n) >= 0.5: the set decay rules
        ema.update(model)
    assert ema.decay_at(8) == pytest.approx(9 / 18) and ema.decay_at(100) == 0.5
    assert ema.updates == 22
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training


def test_temperature_and_integer_buffers_are_copied_the_rest_averaged():
    model = _Tiny()
    ema = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.temperature.fill_(1.0)
        model.bn.running_mean.fill_(4.0)
        model.bn.num_batches_tracked.fill_(7)
    ema.update(model)
    assert ema.model.temperature.item() == 1.0  # the schedule's value, not a mix
    assert ema.model.bn.num_batches_tracked.item() == 7
    assert ema.model.bn.running_mean.item() == pytest.approx(0.9 * 4.0)  # decay 0.1 at the first update


def test_state_round_trip_and_bad_decay():
    model = _Tiny()
    ema = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    ema.update(model)
    other = WeightAverage(_Tiny(), decay=0.99)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.model.linear.weight, ema.model.linear.weight)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="decay must be in"):
            WeightAverage(model, bad)
