"""The building blocks of a training run: optimiser groups and the concatenated training set."""

from __future__ import annotations

import pytest
import torch

from featherface.models.registry import create_model
from featherface.train.builders import ConcatTrainDataset, build_model, build_optimizer, param_groups
from tests.train import SyntheticFaces, tiny_config


# ------------------------------------------------------------------------------------------ optimiser groups
def test_attention_parameters_get_the_lr_multiplier():
    cfg = tiny_config(model="featherface_odconv", attention_lr_mult=2.0, momentum=0.0, weight_decay=0.0, lr=0.1)
    model = build_model(cfg)
    groups = param_groups(model, 2.0)
    assert [g["name"] for g in groups] == ["trunk", "attention"]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("attention.") for p in groups[1]["params"])
    assert not any(names[id(p)].startswith("attention.") for p in groups[0]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = build_optimizer(model, cfg)
    for g in opt.param_groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # plain SGD: p -= lr * mult * 1
    for n, p in model.named_parameters():
        step = 0.2 if n.startswith("attention.") else 0.1
        assert torch.allclose(before[n] - p.detach(), torch.full_like(p, step)), n


def test_model_without_attention_has_one_group():
    groups = param_groups(create_model("featherface_none", width=16, bifpn_repeats=1), 2.0)
    assert [g["name"] for g in groups] == ["trunk"]


def test_concat_train_dataset_indexes_and_forwards_the_epoch():
    a, b = SyntheticFaces(3, 64, seed=1), SyntheticFaces(2, 64, seed=2)
    both = ConcatTrainDataset([a, b])
    assert len(both) == 5 and both.seed == 1
    assert torch.equal(both[4][0], b[1][0]) and torch.equal(both[2][0], a[2][0])
    both.set_epoch(3)
    assert a.epoch == 3 and b.epoch == 3
    with pytest.raises(IndexError):
        both[5]
