"""Tests of featherface.stages.study: the study table read back from the files the stages write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featherface.config import Params, StudyConfig
from featherface.models.checkpoints import save_checkpoint
from featherface.models.registry import create_model
from featherface.stages.study import (
    collect_study,
    differences_beyond_spread,
    has_attention,
    run,
    study_markdown,
    summarise_seeds,
    write_study_table,
)


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
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["runs"][1]["easy"] == pytest.approx(90.0) and table["seeds"] == []
    assert text == study_markdown(rows)
    assert "seed" not in text  # no seed column, no summary in a study without seeds


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    params = Params(study=StudyConfig(runs=("featherface_none:imagenet",)))
    with pytest.raises(FileNotFoundError, match="featherface_none-imagenet/score/ap.json"):
        collect_study(params, tmp_path)
    fake_run(tmp_path, "featherface_none-imagenet", (0.5, 0.4, 0.2))
    (tmp_path / "featherface_none-imagenet" / "score" / "ap.json").write_text("{not json")
    with pytest.raises(ValueError, match="ap.json is not valid JSON"):
        collect_study(params, tmp_path)


def test_seeds_are_summarised_and_only_clear_differences_called(tmp_path: Path) -> None:
    study = StudyConfig(runs=("featherface_odconv:fork_trunk", "featherface_none:fork_trunk"), seeds=(0, 1, 2),
                        dir="results/ablation")
    params = Params(study=study)
    # odconv: Easy 80 / 82 / 84, none: Easy 70 / 71 / 72 -> ranges apart; Hard overlaps (60-66 vs 64-65)
    for seed, (easy, hard) in enumerate(((0.80, 0.60), (0.82, 0.63), (0.84, 0.66))):
        fake_run(tmp_path, f"featherface_odconv-fork_trunk-seed{seed}", (easy, 0.5, hard))
    for seed, (easy, hard) in enumerate(((0.70, 0.64), (0.71, 0.65), (0.72, 0.65))):
        fake_run(tmp_path, f"featherface_none-fork_trunk-seed{seed}", (easy, 0.5, hard))
    rows = collect_study(params, tmp_path)
    assert [r.seed for r in rows] == [0, 1, 2, 0, 1, 2]
    odconv, none = summarise_seeds(rows)
    assert odconv.group == "featherface_odconv-fork_trunk" and odconv.seeds == (0, 1, 2)
    assert odconv.mean["easy"] == pytest.approx(82.0) and odconv.std["easy"] == pytest.approx(2.0)  # sample std
    assert (odconv.low["hard"], odconv.high["hard"]) == pytest.approx((60.0, 66.0))
    assert none.mean["hard"] == pytest.approx(64.6666667)
    called = differences_beyond_spread([odconv, none])
    assert called == [("easy", "featherface_odconv-fork_trunk", "featherface_none-fork_trunk", pytest.approx(11.0))]
    text = run(params, tmp_path, out_dir=tmp_path, params_file="params-ablation.yaml").read_text()
    assert "| featherface_odconv | fork_trunk | 1 | 82.00 | 50.00 | 63.00 |" in text  # seed column
    assert "| featherface_odconv | fork_trunk | 3 | 82.00 ± 2.00 [80.00, 84.00] |" in text
    assert "- Easy: featherface_odconv-fork_trunk above featherface_none-fork_trunk by 11.00 points" in text
    assert "Hard:" not in text and "Medium:" not in text  # overlapping / equal ranges are not called
    assert "snakemake --cores 1 " in text and "featherface_none-fork_trunk-seed2/score/ap.json" in text
    summary = json.loads((tmp_path / "table.json").read_text())["seeds"]
    assert [s["group"] for s in summary] == ["featherface_odconv-fork_trunk", "featherface_none-fork_trunk"]


def test_a_single_seed_is_never_called(tmp_path: Path) -> None:
    params = Params(study=StudyConfig(runs=("featherface_odconv:fork_trunk", "featherface_none:fork_trunk"),
                                      seeds=(0,)))
    fake_run(tmp_path, "featherface_odconv-fork_trunk-seed0", (0.9, 0.9, 0.9))
    fake_run(tmp_path, "featherface_none-fork_trunk-seed0", (0.1, 0.1, 0.1))
    assert differences_beyond_spread(summarise_seeds(collect_study(params, tmp_path))) == []
    assert "none: every pair's seed ranges overlap" in study_markdown(collect_study(params, tmp_path))


def test_bypassed_attention_is_read_for_attention_models_only(tmp_path: Path) -> None:
    assert has_attention("featherface_cbam") and has_attention("featherface_odconv_ssh")
    assert not has_attention("featherface_none") and not has_attention("featherface_v1")
    study = StudyConfig(runs=("featherface_cbam:fork_trunk", "featherface_none:fork_trunk"), seeds=(0, 1),
                        bypass=True)
    params = Params(study=study)
    for seed, hard in ((0, 0.5), (1, 0.7)):
        fake_run(tmp_path, f"featherface_cbam-fork_trunk-seed{seed}", (0.8, 0.7, 0.6))
        fake_run(tmp_path, f"featherface_none-fork_trunk-seed{seed}", (0.8, 0.7, 0.6))
    with pytest.raises(FileNotFoundError, match="featherface_cbam-fork_trunk-seed0/bypass/ap.json"):
        collect_study(params, tmp_path)
    for seed, hard in ((0, 0.5), (1, 0.7)):
        bypass = tmp_path / f"featherface_cbam-fork_trunk-seed{seed}" / "bypass"
        bypass.mkdir()
        (bypass / "ap.json").write_text(json.dumps({"ap": {"easy": 0.1, "medium": 0.2, "hard": hard}}))
    rows = collect_study(params, tmp_path)
    assert rows[0].bypassed == pytest.approx((10.0, 20.0, 50.0)) and rows[2].bypassed is None
    cbam, none = summarise_seeds(rows)
    assert cbam.bypassed_mean == pytest.approx((10.0, 20.0, 60.0)) and none.bypassed_mean is None
    text = study_markdown(rows)
    assert "| featherface_cbam | fork_trunk | 0 | 80.00 | 70.00 | 60.00 | 10.00 / 20.00 / 50.00 |" in text
    assert "| featherface_none | fork_trunk | 1 | 80.00 | 70.00 | 60.00 | - |" in text
    assert text.count("10.00 / 20.00 / 60.00") == 1  # the summary's mean
    bad = tmp_path / "featherface_cbam-fork_trunk-seed1" / "bypass" / "ap.json"
    bad.write_text(json.dumps({"ap": {"easy": 0.1}}))
    with pytest.raises(ValueError, match="has no Easy / Medium / Hard AP"):
        collect_study(params, tmp_path)
