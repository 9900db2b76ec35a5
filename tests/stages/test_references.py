"""The references stage's weights and detectors (the stage itself runs in tests/test_cli.py and test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from featherface.config import Params, ReferenceDetector
from featherface.stages.references import build_reference, reference_weights
from featherface.weights import builtin_weights


def test_reference_weights_resolve_builtin_relative_and_none(tmp_path: Path) -> None:
    assert reference_weights(ReferenceDetector(name="b", model="featherface_odconv_ssh", weights="builtin"),
                             tmp_path) == builtin_weights()
    assert reference_weights(ReferenceDetector(name="v1", model="featherface_v1", weights="w/v1.pth"),
                             tmp_path) == tmp_path / "w" / "v1.pth"
    assert reference_weights(ReferenceDetector(name="r", peer="retinaface_mnet025"), tmp_path) is None


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    ref = ReferenceDetector(name="yunet_n", peer="yunet", weights="data/weights/peers/yunet_n_dynamic.onnx")
    with pytest.raises(FileNotFoundError, match=r"references: yunet_n: weights file not found: .*yunet_n_dynamic"):
        build_reference(ref, Params(), tmp_path)


def test_the_builtin_reference_uses_the_predict_protocol(tmp_path: Path) -> None:
    import torch

    model = torch.load(builtin_weights(), map_location="cpu", weights_only=False)["model_name"]
    detector = build_reference(ReferenceDetector(name="b", model=model, weights="builtin"), Params(), tmp_path)
    protocol = Params().predict
    assert detector.settings.score_threshold == protocol.score_threshold
    assert detector.settings.max_detections == protocol.keep_top_k and detector.settings.long_side is None
    assert detector.settings.box_voting is False  # the protocol's plain NMS, though the library's default votes
