"""Tests of featherface.stages.predict: the detector the predict stage builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from featherface.config import PredictConfig
from featherface.models.checkpoints import save_checkpoint
from featherface.models.registry import create_model
from featherface.stages.predict import build_detector


def test_an_empty_model_name_builds_the_architecture_the_checkpoint_records(tmp_path: Path) -> None:
    """A study run trained with train.width / bifpn_repeats overridden is predicted without naming its model."""
    model = create_model("featherface_odconv", width=16, bifpn_repeats=1)
    path = tmp_path / "final.pt"
    save_checkpoint(path, model, model_name="featherface_odconv")
    detector = build_detector(PredictConfig(model="", device="cpu"), "", path)
    assert detector.model.config.width == 16 and detector.model.config.bifpn_repeats == 1
    with pytest.raises(Exception, match="does not fit this model"):  # the registered width (52) does not fit
        build_detector(PredictConfig(model="featherface_odconv", device="cpu"), "featherface_odconv", path)
