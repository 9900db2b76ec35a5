"""Tests of featherface.models.backbone (MobileNetV1-0.25) and its ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from featherface.models.backbone import MobileNetV1Backbone
from featherface.models.checkpoints import CheckpointError


def test_backbone_parameter_count() -> None:
    backbone = MobileNetV1Backbone()
    assert sum(p.numel() for p in backbone.parameters()) == 213_072
    assert all(m.bias is None for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((640, 640), [(80, 80), (40, 40), (20, 20)]),
        ((250, 333), [(32, 42), (16, 21), (8, 11)]),
        ((97, 61), [(13, 8), (7, 4), (4, 2)]),
    ],
)
def test_backbone_output_shapes(hw: tuple[int, int], expected: list[tuple[int, int]]) -> None:
    backbone = MobileNetV1Backbone().eval()
    with torch.no_grad():
        outs = backbone(torch.zeros(1, 3, *hw))
    assert [tuple(o.shape[1:]) for o in outs] == [(c, h, w) for c, (h, w) in zip((64, 128, 256), expected)]


def test_load_imagenet_weights(weights_dir: Path) -> None:
    path = weights_dir / "mobilenetV1X0.25_pretrain.tar"
    source = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    backbone = MobileNetV1Backbone()
    backbone.load_imagenet(path)
    state = backbone.state_dict()
    assert torch.equal(state["stem.conv.weight"], source["module.stage1.0.0.weight"])
    assert torch.equal(state["stage1.0.dw.conv.weight"], source["module.stage1.1.0.weight"])
    assert torch.equal(state["stage1.4.pw.bn.running_var"], source["module.stage1.5.4.running_var"])
    assert torch.equal(state["stage3.1.pw.conv.weight"], source["module.stage3.1.3.weight"])


def test_load_imagenet_reports_dropped_classifier(weights_dir: Path) -> None:
    from featherface.models.convert import load_imagenet_backbone

    report = load_imagenet_backbone(MobileNetV1Backbone(), weights_dir / "mobilenetV1X0.25_pretrain.tar")
    assert set(report.skipped) == {"module.fc.weight", "module.fc.bias"}
    assert len(report.loaded) == 162 and report.not_loaded == []


def test_load_imagenet_rejects_other_files(weights_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unrecognised keys"):
        MobileNetV1Backbone().load_imagenet(weights_dir / "featherface_v1_fork.pth")
    with pytest.raises(FileNotFoundError, match="nowhere.tar"):
        MobileNetV1Backbone().load_imagenet(tmp_path / "nowhere.tar")
