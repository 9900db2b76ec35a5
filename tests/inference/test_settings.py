"""featherface.inference.settings: the one settings class of every detector, its protocol constant, the anchor
and normalisation defaults, and the predict: section that builds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from featherface.config import ConfigError, PredictConfig
from featherface.inference import onnx as rt
from featherface.inference import settings as st
from featherface.inference.detector import WIDER_PROTOCOL, DetectorSettings
from featherface.models.featherface import FeatherFaceConfig
from featherface.ops.box_coding import VARIANCES
from featherface.ops.priors import DEFAULT_MIN_SIZES, DEFAULT_STEPS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_settings_validation():
    with pytest.raises(ValueError, match="score_threshold"):
        rt.RuntimeSettings(score_threshold=1.5)
    with pytest.raises(ValueError, match="max_detections"):
        rt.RuntimeSettings(max_detections=0)
    with pytest.raises(ValueError, match="long_side"):
        rt.RuntimeSettings(long_side=16)
    with pytest.raises(ValueError, match="nms_offset"):
        rt.RuntimeSettings(nms_offset=0.5)
    with pytest.raises(ValueError, match="box_voting must be true or false, got 'yes'"):
        rt.RuntimeSettings(box_voting="yes")
    assert rt.WIDER_SETTINGS.as_kwargs()["score_threshold"] == WIDER_PROTOCOL.score_threshold


def test_one_class_and_one_protocol_under_every_name():
    assert DetectorSettings is st.DetectorSettings is rt.RuntimeSettings is rt.DetectorSettings
    assert WIDER_PROTOCOL is st.WIDER_PROTOCOL is rt.WIDER_SETTINGS
    assert (WIDER_PROTOCOL.score_threshold, WIDER_PROTOCOL.nms_iou, WIDER_PROTOCOL.pre_nms_top_k,
            WIDER_PROTOCOL.max_detections, WIDER_PROTOCOL.long_side, WIDER_PROTOCOL.nms_offset,
            WIDER_PROTOCOL.box_voting) == (0.02, 0.4, 5000, 750, None, 1.0, False)


def test_errors_carry_the_field_and_the_rule():
    with pytest.raises(st.SettingError) as info:
        DetectorSettings(pre_nms_top_k=0)
    assert (info.value.name, info.value.rule, info.value.value) == ("pre_nms_top_k", "must be >= 1", 0)
    assert str(info.value) == "pre_nms_top_k must be >= 1, got 0"
    with pytest.raises(st.SettingError, match="batch_size must be an integer >= 1, got 2.5"):
        DetectorSettings(batch_size=2.5)
    with pytest.raises(st.SettingError, match="long_side must be None or an integer >= 32"):
        DetectorSettings(long_side=True)


def test_updated_names_unknown_settings_and_keeps_the_original():
    changed = WIDER_PROTOCOL.updated(max_detections=5, long_side=640)
    assert (changed.max_detections, changed.long_side, changed.score_threshold) == (5, 640, 0.02)
    assert WIDER_PROTOCOL.max_detections == 750 and WIDER_PROTOCOL.long_side is None
    with pytest.raises(ValueError, match=r"unknown detector setting 'nms' \(did you mean 'nms_iou'\?\)"):
        WIDER_PROTOCOL.updated(nms=0.3)
    assert DetectorSettings(**WIDER_PROTOCOL.as_kwargs()) == WIDER_PROTOCOL


def test_predict_section_builds_the_settings_and_names_its_keys():
    assert PredictConfig().detector_settings() == WIDER_PROTOCOL.updated(batch_size=1)
    custom = PredictConfig(long_side=640, keep_top_k=100, batch_size=4, box_voting=True).detector_settings()
    assert (custom.long_side, custom.max_detections, custom.batch_size, custom.box_voting) == (640, 100, 4, True)
    for kwargs, message in (
        ({"keep_top_k": 0}, "predict.keep_top_k: must be >= 1"),
        ({"score_threshold": 1.0}, r"predict.score_threshold: must be in \[0, 1\)"),
        ({"nms_iou": 0.0}, r"predict.nms_iou: must be in \(0, 1\]"),
        ({"batch_size": 0}, "predict.batch_size: must be >= 1"),
        ({"long_side": 16}, r"predict.long_side: must be 0 \(original\) or >= 32"),
        ({"box_voting": 1}, "predict.box_voting: must be true or false"),
    ):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            PredictConfig(**kwargs)


def test_anchor_and_mean_defaults_have_one_source():
    assert DEFAULT_MIN_SIZES is st.DEFAULT_MIN_SIZES and DEFAULT_STEPS is st.DEFAULT_STEPS
    assert VARIANCES is st.VARIANCES and rt.MEAN_BGR is st.MEAN_BGR
    config = FeatherFaceConfig()
    assert (config.min_sizes, config.steps, config.variances, config.mean_bgr) == (
        ((16, 32), (64, 128), (256, 512)), (8, 16, 32), (0.1, 0.2), (104.0, 117.0, 123.0))


def test_settings_import_without_torch_or_numpy():
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['numpy'] = None\n"
            "from featherface.inference import settings\nprint(settings.WIDER_PROTOCOL.max_detections)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "750"


def test_anchor_fields_are_saved_when_changed_and_old_configs_load():
    old = {"width": 52, "bifpn_repeats": 3, "attention": "none", "attention_sites": ["c3"], "attention_kwargs": {}}
    assert FeatherFaceConfig.from_dict(old).min_sizes == DEFAULT_MIN_SIZES  # a checkpoint written before the fields
    assert "min_sizes" not in FeatherFaceConfig().to_dict()  # defaults: existing files stay byte-identical
    custom = FeatherFaceConfig(min_sizes=[[12, 24], [64, 128], [256, 512]], mean_bgr=[100, 110, 120])
    assert custom.to_dict()["min_sizes"] == [[12, 24], [64, 128], [256, 512]]
    assert FeatherFaceConfig.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="steps must be the network's strides"):
        FeatherFaceConfig(steps=(4, 8, 16))
    with pytest.raises(ValueError, match="two positive sizes"):
        FeatherFaceConfig(min_sizes=((16,), (64, 128), (256, 512)))


def test_torch_detector_reads_the_anchors_of_its_model():
    import torch

    from featherface.inference.detector import FaceDetector
    from featherface.ops.priors import make_priors

    class Stub(torch.nn.Module):
        config = FeatherFaceConfig(min_sizes=((12, 24), (64, 128), (256, 512)))

    detector = FaceDetector(Stub(), device="cpu")
    assert torch.equal(detector._priors(64, 48), make_priors(64, 48, ((12, 24), (64, 128), (256, 512)), (8, 16, 32)))
    assert FaceDetector(torch.nn.Identity(), device="cpu").anchors == FeatherFaceConfig()
