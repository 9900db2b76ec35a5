"""Tests of featherface.stages.study: the study table read back from the files the stages write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featherface.config import Params, StudyConfig
from featherface.models.checkpoints import save_checkpoint
from featherface.models.registry import create_model
from featherface.stages.study import collect_study, study_markdown, write_study_table


def fake_run(study_dir: Path, name: str, ap: tuple[float, float, float], epochs: int = 2) -> int:
    """Write what the train / score stages write for one run; returns the model's parameter count."""
    run = study_dir / name
    (run / "score").mkdir(parents=True)
    model = create_model("featherface_none", width=16, bifpn_repeats=1)
    save_checkpoint(run / "final.pt", model, model_name="featherface_none")
    rows = ["epoch,step,loss,images_per_s,epoch_s,wall_s"]
    rows += [f"{e},{e * 10},{5 - e},{10 + e},{30.0},{30.0 * e}" for e in range(1, epochs + 1)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    provenance = {"stage": "train", "images": 640, "hardware": "cpu: test, 2 cores"}
    (run / "provenance.json").write_text(json.dumps(provenance))
    easy, medium, hard = ap
    (run / "score" / "ap.json").write_text(json.dumps({"ap": {"easy": easy, "medium": medium, "hard": hard},
                                                       "num_images": 233}))
    return sum(p.numel() for p in model.parameters())


def test_collect_and_write(tmp_path: Path) -> None:
    params = Params(study=StudyConfig(runs=("featherface_none:imagenet", "featherface_none:fork_trunk")))
    n = fake_run(tmp_path, "featherface_none-imagenet", (0.5, 0.4, 0.2), epochs=3)
    fake_run(tmp_path, "featherface_none-fork_trunk", (0.9, 0.8, 0.6))
    rows = collect_study(params, tmp_path, params_file="params-study.yaml")
    assert [r.run for r in rows] == ["featherface_none-imagenet", "featherface_none-fork_trunk"]
    first = rows[0]
    assert (first.easy, first.medium, first.hard) == pytest.approx((50.0, 40.0, 20.0))
    assert first.epochs == 3 and first.wall_s == 90.0 and first.images_per_s == pytest.approx(12.0)
    assert first.params == n and first.train_images == 640 and first.val_images == 233
    assert first.command.startswith("FEATHERFACE_PARAMS=params-study.yaml snakemake")
    path = write_study_table(rows, tmp_path)
    text = path.read_text()
    assert "| featherface_none | imagenet | 50.00 | 40.00 | 20.00 |" in text
    assert "| featherface_none | fork_trunk | 90.00 | 80.00 | 60.00 |" in text
    assert json.loads((tmp_path / "table.json").read_text())[1]["easy"] == pytest.approx(90.0)
    assert text == study_markdown(rows)


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    params = Params(study=StudyConfig(runs=("featherface_none:imagenet",)))
    with pytest.raises(FileNotFoundError, match="featherface_none-imagenet/score/ap.json"):
        collect_study(params, tmp_path)
    fake_run(tmp_path, "featherface_none-imagenet", (0.5, 0.4, 0.2))
    (tmp_path / "featherface_none-imagenet" / "score" / "ap.json").write_text("{not json")
    with pytest.raises(ValueError, match="ap.json is not valid JSON"):
        collect_study(params, tmp_path)
