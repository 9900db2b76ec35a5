"""TrainConfig: loadable with featherface.config.from_dict, errors naming train.<key>."""

from __future__ import annotations

import pytest

from featherface.config import ConfigError, from_dict, to_dict
from featherface.train.config import TrainConfig


def test_defaults_are_the_recipe():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)
    assert (cfg.batch_size, cfg.image_size, cfg.epochs) == (32, 640, 350)
    assert (cfg.neg_pos_ratio, cfg.match_iou, cfg.loc_weight, cfg.landm_weight) == (7, 0.35, 2.0, 1.0)
    assert (cfg.temperature_start, cfg.temperature_end, cfg.temperature_epochs) == (30.0, 1.0, 10)
    assert cfg.attention_lr_mult == 2.0 and cfg.grad_clip == 0.0 and cfg.checkpoint_every == 1


def test_round_trip_through_from_dict():
    cfg = TrainConfig(model="featherface_cbam", schedule="step", step_epochs=(3, 5), epochs=6, warmup_epochs=1.0)
    data = to_dict(cfg)
    assert data["step_epochs"] == [3, 5]
    assert from_dict(TrainConfig, data, "train") == cfg


def test_yaml_int_for_float_field_is_accepted():
    assert from_dict(TrainConfig, {"lr": 1, "warmup_epochs": 0}, "train").lr == 1.0


@pytest.mark.parametrize(
    "data, key",
    [
        ({"lr": 0.0}, "train.lr"),
        ({"epochs": 0}, "train.epochs"),
        ({"image_size": 100}, "train.image_size"),
        ({"momentum": 1.0}, "train.momentum"),
        ({"warmup_epochs": -1.0}, "train.warmup_epochs"),
        ({"schedule": "step", "step_epochs": [5, 3], "epochs": 10}, "train.step_epochs"),
        ({"schedule": "step", "step_epochs": [12], "epochs": 10}, "train.step_epochs"),
        ({"schedule": "step", "step_epochs": []}, "train.step_epochs"),
        ({"width": 18}, "train.width"),
        ({"temperature_start": 0.0}, "train.temperature_start"),
        ({"match_iou": 1.5}, "train.match_iou"),
        ({"grad_clip": -1.0}, "train.grad_clip"),
        ({"ema_decay": 1.0}, "train.ema_decay"),
        ({"ema_decay": -0.1}, "train.ema_decay"),
    ],
)
def test_bad_values_name_their_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(TrainConfig, data, "train")


def test_unknown_key_and_literal_get_suggestions():
    with pytest.raises(ConfigError, match=r"train\.warmup_epoch.*did you mean .warmup_epochs."):
        from_dict(TrainConfig, {"warmup_epoch": 1}, "train")
    with pytest.raises(ConfigError, match=r"train\.optimizer.*'sgd'"):
        from_dict(TrainConfig, {"optimizer": "sgdd"}, "train")
    with pytest.raises(ConfigError, match=r"train\.amp: expected true or false"):
        from_dict(TrainConfig, {"amp": "yes"}, "train")
