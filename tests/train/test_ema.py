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


def test_average_is_the_decay_weighted_mean_of_the_weights_seen():
    model = _Tiny()
    with torch.no_grad():
        model.linear.weight.fill_(-100.0)  # the starting weights: forgotten by the first update
    ema = WeightAverage(model, decay=0.5)
    seen = [10.0, 20.0, 40.0]
    for value in seen:
        with torch.no_grad():
            model.linear.weight.fill_(value)
        ema.update(model)
    # by hand: weights 0.5 ** 2, 0.5, 1 for 10, 20, 40 -> (2.5 + 10 + 40) / 1.75 = 30
    assert ema.model.linear.weight.item() == pytest.approx(30.0)
    assert ema.decay_at(0) == 0.0 and ema.decay_at(1) == pytest.approx(1 / 3)
    assert ema.decay_at(10_000) == pytest.approx(0.5)
    assert WeightAverage(model, 0.998).decay_at(743) == pytest.approx(1 - 0.002 / (1 - 0.998 ** 744))
    assert ema.updates == 3
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training


def test_temperature_and_integer_buffers_are_copied_the_rest_averaged():
    model = _Tiny()
    ema = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.temperature.fill_(1.0)
        model.bn.running_mean.fill_(4.0)
        model.bn.num_batches_tracked.fill_(7)
    ema.update(model)
    with torch.no_grad():
        model.temperature.fill_(2.0)
        model.bn.running_mean.fill_(6.0)
    ema.update(model)  # decay 1 - 0.1 / 0.19 = 9 / 19
    assert ema.model.temperature.item() == 2.0  # the schedule's value, not a mix
    assert ema.model.bn.num_batches_tracked.item() == 7
    assert ema.model.bn.running_mean.item() == pytest.approx(9 / 19 * 4.0 + 10 / 19 * 6.0)


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
