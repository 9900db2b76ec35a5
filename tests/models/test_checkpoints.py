"""Tests of featherface.models.checkpoints: our format, the fork's files, the V1 golden outputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from featherface.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from featherface.models.convert import convert_fork_state_dict, load_fork_weights
from featherface.models.featherface import ATTENTION_SITES, FeatherFace, FeatherFaceConfig
from featherface.models.loading import build_model_from_checkpoint, load_weights
from featherface.models.registry import create_model
from featherface.ops.priors import num_priors

TINY = FeatherFaceConfig(width=8, bifpn_repeats=1, attention="cbam", attention_sites=("c5", "p5"))


@pytest.fixture(scope="module")
def v1_model(weights_dir: Path) -> FeatherFace:
    model = create_model("featherface_none", width=56, bifpn_repeats=2).eval()
    report = load_fork_weights(model, weights_dir / "featherface_v1_fork.pth")
    assert len(report.loaded) == 437 and report.skipped == {} and report.not_loaded == []
    return model


@pytest.mark.parametrize("tag", ["parade", "meeting_333x250", "random"])
def test_v1_reproduces_golden_outputs(v1_model: FeatherFace, golden_dir: Path, tag: str) -> None:
    golden = np.load(golden_dir / "featherface_v1" / "outputs.npz")
    x = torch.from_numpy(golden[f"{tag}_input"])
    with torch.no_grad():
        loc, logits, landmarks = v1_model(x)
    assert loc.shape[1] == num_priors(x.shape[2], x.shape[3]) == golden[f"{tag}_priors"].shape[0]
    np.testing.assert_allclose(loc.numpy(), golden[f"{tag}_loc"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), golden[f"{tag}_conf"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(landmarks.numpy(), golden[f"{tag}_landm"], rtol=0, atol=1e-4)


def test_fork_key_mapping_is_complete_and_one_to_one(weights_dir: Path) -> None:
    source = torch.load(weights_dir / "featherface_v1_fork.pth", map_location="cpu", weights_only=True)
    converted, skipped = convert_fork_state_dict(source)
    assert skipped == {}
    assert len(converted) == len(source) == 437
    target = create_model("featherface_v1").state_dict()
    assert set(converted) == set(target)
    assert torch.equal(
        converted["neck.cells.0.proj_p4_bottom_up.conv.weight"], source["bifpn.0.p4_down_channel_2.0.conv.weight"]
    )
    mask_bias = converted["context.2.conv7x7.conv.mask_conv.bias"]
    assert torch.equal(mask_bias, source["ssh3.conv7x7_3.0.modulator_conv.bias"])
    assert torch.equal(converted["heads.landmark.1.weight"], source["LandmarkHead.1.conv1x1.weight"])


@pytest.mark.parametrize("name", ["featherface_none", "featherface_cbam", "featherface_odconv"])
def test_eca_cbam_trunk_loads_into_width_52_variants(weights_dir: Path, name: str) -> None:
    if name == "featherface_odconv":
        pytest.importorskip("featherface.nn.odconv_attention")
    path = weights_dir / "featherface_eca_cbam_fork.pth"
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(name)
    report = load_fork_weights(model, path)
    assert len(report.loaded) == 473
    assert sorted(report.skipped) == sorted(
        f"{site}_attention_{i}.{part}.conv.weight"
        for site in ("backbone", "bifpn")
        for i in range(3)
        for part in ("eca", "sam")
    )
    assert all("no counterpart" in why for why in report.skipped.values())
    assert all(k.startswith("attention.") for k in report.not_loaded)
    assert (report.not_loaded == []) == (name == "featherface_none")
    state = model.state_dict()
    assert torch.equal(
        state["neck.cells.2.sep_p5_out.pw.weight"], source["bifpn.2.conv5_down.pointwise_conv.conv.weight"]
    )
    assert torch.equal(state["backbone.stage2.5.pw.bn.running_mean"], source["body.stage2.5.4.running_mean"])


FORK_ECA_SAM_KEYS = {
    f"{place}_attention_{i}.{part}.conv.weight": f"attention.{site}.{gate}.conv.weight"
    for place, sites in (("backbone", ("c3", "c4", "c5")), ("bifpn", ("p3", "p4", "p5")))
    for i, site in enumerate(sites)
    for part, gate in (("eca", "channel_gate"), ("sam", "spatial_gate"))
}


def test_fork_attention_keys_map_only_onto_eca_sam_blocks() -> None:
    fake = {key: torch.full((1,), float(i)) for i, key in enumerate(FORK_ECA_SAM_KEYS)}
    targets = create_model("featherface_eca_sam").state_dict().keys()
    converted, skipped = convert_fork_state_dict(fake, targets)
    assert skipped == {} and set(converted) == set(FORK_ECA_SAM_KEYS.values())
    for fork_key, ours in FORK_ECA_SAM_KEYS.items():
        assert converted[ours] is fake[fork_key]
    # Without the target's keys, or into CBAM blocks (whose spatial conv has the same shape), they are skipped.
    for keys in ((), create_model("featherface_cbam").state_dict().keys()):
        converted, skipped = convert_fork_state_dict(fake, keys)
        assert converted == {} and set(skipped) == set(FORK_ECA_SAM_KEYS)


def test_eca_cbam_file_loads_whole_into_featherface_eca_sam(weights_dir: Path) -> None:
    path = weights_dir / "featherface_eca_cbam_fork.pth"
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model("featherface_eca_sam")
    report = load_fork_weights(model, path)
    assert len(source) == len(report.loaded) == 485
    assert report.skipped == {} and report.not_loaded == []
    assert sum(p.numel() for p in model.parameters()) == 476_345
    state = model.state_dict()
    for fork_key, ours in FORK_ECA_SAM_KEYS.items():
        assert torch.equal(state[ours], source[fork_key]), ours
    # With a block missing from the file the load fails: the attention tensors are required like the trunk.
    partial = {k: v for k, v in source.items() if k != "bifpn_attention_1.sam.conv.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): attention\.p4\.spatial_gate\.conv\.weight"):
        load_fork_weights(create_model("featherface_eca_sam"), partial)
    # A model without a block at p5 takes the other five and reports the p5 tensors as skipped.
    report = load_fork_weights(create_model("featherface_eca_sam", attention_sites=ATTENTION_SITES[:5]), source)
    assert len(report.loaded) == 483 and sorted(report.skipped) == [
        "bifpn_attention_2.eca.conv.weight", "bifpn_attention_2.sam.conv.weight"
    ]


def test_fork_file_into_wrong_width_lists_problems(weights_dir: Path) -> None:
    model = create_model("featherface_none")  # C = 52, R = 3; the V1 file is C = 56, R = 2
    with pytest.raises(CheckpointError) as info:
        load_fork_weights(model, weights_dir / "featherface_v1_fork.pth")
    message = str(info.value)
    assert "featherface_v1_fork.pth" in message
    assert "missing keys (36)" in message and "neck.cells.2.weight_p4_td" in message
    assert "shape mismatches" in message and "(56, 1, 3, 3) vs model (52, 1, 3, 3)" in message


def test_save_and_rebuild_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FeatherFace(TINY).eval()
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pth", model, epoch=3, metrics={"ap": 0.5})
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pth"]  # no temporary file left
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["metrics"] == {"ap": 0.5}
    assert ckpt["config"] == TINY.to_dict() and ckpt["format"] == "featherface"
    rebuilt = build_model_from_checkpoint(path)
    assert rebuilt.config == TINY and not rebuilt.training
    x = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            torch.testing.assert_close(a, b)
    other = FeatherFace(TINY)
    report = load_weights(other, path)
    assert report.not_loaded == [] and len(report.loaded) == len(model.state_dict())


def test_save_is_atomic_on_failure(tmp_path: Path) -> None:
    model = FeatherFace(TINY)
    path = save_checkpoint(tmp_path / "ckpt.pth", model)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, model, bad=lambda: None)  # a lambda cannot be pickled
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pth"]
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, model, model=1)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, model, config={})


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_fork_weights(FeatherFace(TINY), tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError):
        build_model_from_checkpoint(tmp_path / "absent.pth")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(CheckpointError, match="notes.txt: not a readable PyTorch checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": [1, 2]}, tmp_path / "dict.pth")
    with pytest.raises(CheckpointError, match="not a FeatherFace checkpoint"):
        load_checkpoint(tmp_path / "dict.pth")
    with pytest.raises(CheckpointError, match="not a FeatherFace or fork checkpoint"):
        load_weights(FeatherFace(TINY), tmp_path / "dict.pth")


def test_fork_file_is_not_our_format(weights_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="load_fork_weights"):
        load_checkpoint(weights_dir / "featherface_v1_fork.pth")


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "cbam.pth", FeatherFace(TINY))
    plain = FeatherFace(FeatherFaceConfig(width=8, bifpn_repeats=1))
    with pytest.raises(CheckpointError) as info:
        load_weights(plain, path)
    assert "unexpected keys" in str(info.value) and "attention.c5.channel.mlp.0.weight" in str(info.value)
    wider = FeatherFace(FeatherFaceConfig(width=12, bifpn_repeats=2, attention="cbam", attention_sites=("c5", "p5")))
    with pytest.raises(CheckpointError) as info:
        load_weights(wider, path)
    assert "missing keys" in str(info.value) and "shape mismatches" in str(info.value)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    payload = {"format": "featherface", "format_version": 99, "model": {}, "config": TINY.to_dict()}
    torch.save(payload, tmp_path / "future.pth")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pth")
