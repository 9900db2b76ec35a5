"""The train stage (run_training) end to end: a WIDER-layout folder written here, and the real shared train images
when available."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from featherface.config import ConfigError
from featherface.models.loading import build_model_from_checkpoint
from featherface.stages.train import load_train_params, run_training
from featherface.train.state import ResumeMismatchError
from tests.train import TRAIN_PARAMS, project, restore_threads  # noqa: F401 (fixtures)


def test_load_train_params_reads_the_train_section(project):
    params, train = load_train_params(project / "params.yaml", ["train.lr=0.5"])
    assert params.data.root == "data" and train.lr == 0.5 and train.width == 16
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_train_params(project / "params.yaml", ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"train\.epoch\b.*did you mean 'epochs'"):
        load_train_params(project / "params.yaml", ["train.epoch=3"])


def test_run_training_writes_its_outputs(project):
    calls = []
    final = run_training(project / "params.yaml", ["train.epochs=1"], None, False,
                         lambda done, total, what: calls.append((done, total, what)))
    out = project / "results" / "train"
    assert final == out / "final.pt"
    assert calls == [(1, 2, "epoch 1/1"), (2, 2, "epoch 1/1")]
    model = build_model_from_checkpoint(final)
    assert model.config.width == 16
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == "train" and record["params"]["train"]["epochs"] == 1 and record["images"] == 4
    assert str(project / "data" / "widerface" / "train" / "label.txt") in record["inputs_sha256"]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[10] == "4"  # column "images": max_train_images


def _real_params(tmp_path: Path, widerface_dir: Path, weights_dir: Path, **train) -> Path:
    settings = {**TRAIN_PARAMS, "image_size": 128, "batch_size": 4, "max_train_images": 8, "epochs": 1, **train}
    params = {"data": {"root": str(widerface_dir.parent)}, "train": settings}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_real_images_with_imagenet_init(tmp_path, widerface_dir, weights_dir):
    path = _real_params(tmp_path, widerface_dir, weights_dir, model="featherface_odconv", width=0,
                        bifpn_repeats=0, init="imagenet",
                        imagenet_weights=str(weights_dir / "mobilenetV1X0.25_pretrain.tar"))
    final = run_training(path, [], tmp_path / "out")
    row = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    values = dict(zip(row[0].split(","), row[1].split(",")))
    assert int(values["images"]) == 8 and math.isfinite(float(values["loss"]))
    assert float(values["entropy.channel.attention.c5.conv"]) > 0
    assert build_model_from_checkpoint(final).config.attention == "odconv"


def test_real_images_with_fork_trunk_init(tmp_path, widerface_dir, weights_dir):
    path = _real_params(tmp_path, widerface_dir, weights_dir, model="featherface_cbam", width=0, bifpn_repeats=0,
                        init="fork_trunk", fork_weights=str(weights_dir / "featherface_eca_cbam_fork.pth"),
                        lr=1e-4)
    run_training(path, [], tmp_path / "out")
    row = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    values = dict(zip(row[0].split(","), row[1].split(",")))
    assert math.isfinite(float(values["loss"]))


def test_resume_auto_continues_a_compatible_run_and_sets_aside_an_incompatible_one(project):
    out = project / "results" / "train"
    run_training(project / "params.yaml", ["train.epochs=1"], None, False)
    assert record_epochs(out) == ["1"]
    # Same settings, more epochs (a tolerated change): continues from epoch 1.
    run_training(project / "params.yaml", ["train.epochs=2"], None, "auto")
    assert record_epochs(out) == ["1", "2"]
    # Strict resume refuses another learning rate and leaves the files alone.
    with pytest.raises(ResumeMismatchError, match=r"train\.lr"):
        run_training(project / "params.yaml", ["train.epochs=2", "train.lr=0.01"], None, "strict")
    assert record_epochs(out) == ["1", "2"] and not list(out.glob("*.stale-*"))
    # auto keeps the old state aside and starts afresh; final.pt and provenance.json go with it (issue 15: the old
    # final.pt must not pass for the new run's).
    run_training(project / "params.yaml", ["train.epochs=1", "train.lr=0.01"], None, "auto")
    assert record_epochs(out) == ["1"]
    stale = sorted(p.name for p in out.glob("*.stale-*"))
    assert [name.split(".stale-")[0] for name in stale] == ["final", "last", "metrics", "provenance"]
    old_metrics = next(out.glob("metrics.stale-*.csv")).read_text().splitlines()
    assert [row.split(",")[0] for row in old_metrics[1:]] == ["1", "2"]


def record_epochs(out: Path) -> list[str]:
    return [row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]]
