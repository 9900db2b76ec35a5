"""Attention entropies (by hand) and the metrics CSV."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from featherface.models.registry import create_model
from featherface.nn.odconv_attention import RECOMMENDED_KWARGS
from featherface.train.metrics import (
    BASE_COLUMNS,
    MetricsLog,
    attention_entropies,
    binary_entropy,
    categorical_entropy,
    entropy_columns,
)

SITES = ("c3", "c4", "c5", "p3", "p4", "p5")


def test_entropy_functions_by_hand():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    expected = [math.log(2), 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert categorical_entropy(p).tolist() == pytest.approx(expected, abs=1e-6)
    assert binary_entropy(torch.tensor([0.5, 1.0, 0.0, 0.25])).tolist() == pytest.approx(
        [math.log(2), 0.0, 0.0, expected[2]], abs=1e-6)


def _odconv(kernel_num: int):
    torch.manual_seed(0)
    return create_model("featherface_odconv", width=16, bifpn_repeats=1,
                        attention_kwargs={**RECOMMENDED_KWARGS, "kernel_num": kernel_num})


def test_kernel_entropy_uniform_is_log_n():
    model = _odconv(4)
    assert entropy_columns(model) == [f"entropy.kernel.attention.{s}.conv" for s in SITES]
    for site in SITES:  # kernel head outputs 0 -> softmax uniform over 4 kernels
        head = model.attention[site].conv.attention.kernel_fc
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    model.train()
    values = attention_entropies(model, torch.randn(2, 3, 64, 64))
    assert list(values) == entropy_columns(model)
    assert list(values.values()) == pytest.approx([math.log(4)] * 6, abs=1e-6)
    assert model.training  # mode restored


def test_single_kernel_logs_spatial_and_channel_entropy():
    model = _odconv(1)
    expected_columns = [f"entropy.{kind}.attention.{s}.conv" for s in SITES for kind in ("spatial", "channel")]
    assert entropy_columns(model) == expected_columns
    c3 = model.attention["c3"].conv.attention
    torch.nn.init.zeros_(c3.spatial_fc.weight)
    torch.nn.init.constant_(c3.spatial_fc.bias, 60.0)  # sigmoid(60 / T=1) = 1 -> entropy 0
    torch.nn.init.zeros_(c3.channel_fc.weight)
    torch.nn.init.zeros_(c3.channel_fc.bias)  # sigmoid(0) = 0.5 -> entropy log 2
    model.eval()
    values = attention_entropies(model, torch.randn(2, 3, 64, 64))
    assert values["entropy.spatial.attention.c3.conv"] == pytest.approx(0.0, abs=1e-6)
    assert values["entropy.channel.attention.c3.conv"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(0.0 <= v <= math.log(2) + 1e-6 for v in values.values())
    assert not model.training


def test_probe_does_not_touch_batchnorm_statistics():
    model = _odconv(4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attention_entropies(model, torch.randn(2, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_models_without_odconv_have_no_entropy():
    model = create_model("featherface_cbam", width=16, bifpn_repeats=1)
    assert entropy_columns(model) == [] and attention_entropies(model, torch.randn(1, 3, 32, 32)) == {}


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_metrics_log_columns_and_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    log.append({"epoch": 1, "loss": 2.5, "temperature": None})
    log.append({"epoch": 2, "loss": float("nan"), "entropy.kernel.x": 0.5})
    rows = _read(path)
    assert rows[0] == [*BASE_COLUMNS, "entropy.kernel.x"]
    first = dict(zip(rows[0], rows[1]))
    assert first["epoch"] == "1" and first["loss"] == "2.5" and first["temperature"] == "" and first["lr"] == ""
    second = dict(zip(rows[0], rows[2]))
    assert second["loss"] == "nan" and second["entropy.kernel.x"] == "0.5"
    resumed = MetricsLog.resume(path, through_epoch=1)  # epoch 2 runs again: its row goes
    assert [r[0] for r in _read(path)[1:]] == ["1"]
    resumed.append({"epoch": 2, "loss": 1.0})
    assert [r[0] for r in _read(path)[1:]] == ["1", "2"]
    assert _read(path)[0][-1] == "entropy.kernel.x"  # the column survives the resume
    assert not list(tmp_path.glob(".*tmp"))
