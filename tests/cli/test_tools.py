"""featherface.cli.tools: info, evaluate (prediction folders, models, peers, the attention bypass, box voting, its
errors) and transfer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featherface.cli import main
from featherface.eval.prediction_files import read_prediction_folder, write_prediction_folder
from featherface.models.checkpoints import save_checkpoint
from featherface.models.loading import build_model_from_checkpoint, load_weights
from featherface.models.registry import create_model
from tests.cli import TWO_VAL_IMAGES, copy_two_val_images


@pytest.fixture()
def dev_jitter_preds(golden_dir: Path, tmp_path: Path) -> Path:
    """`preds_dev_jitter.npz` written out as official prediction files (233 images)."""
    source = golden_dir / "widerface_eval" / "preds_dev_jitter.npz"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    with np.load(source) as npz:
        preds = {key: npz[key] for key in npz.files}
    out = tmp_path / "dev_jitter"
    write_prediction_folder(preds, out)
    return out


def test_info_prints_the_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "featherface_cbam", "--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "featherface_cbam: 488,664 parameters (488,664 trainable)"
    assert "MACs at 64x96" in out
    # P = 2 * (8*12 + 4*6 + 2*3) = 252 priors at 64x96
    assert "(1, 252, 4)" in out


def test_evaluate_a_prediction_folder(
    dev_jitter_preds: Path, widerface_dir: Path, golden_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--predictions", str(dev_jitter_preds), "--gt", str(widerface_dir / "val"), "--out", str(out)]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    expected = json.loads((golden_dir / "widerface_eval" / "expected_ap.json").read_text())["dev_jitter"]
    line = next(line for line in stdout.splitlines() if line.startswith("evaluate:"))
    for setting in ("easy", "medium", "hard"):
        assert f"{setting.capitalize()} {100 * expected[setting]:.2f}" in line
    assert "(233 of the 3226 val images took part)" in line
    ap = json.loads((out / "ap.json").read_text())
    for setting in ("easy", "medium", "hard"):
        assert ap["ap"][setting] == pytest.approx(expected[setting], abs=1e-9)
    assert ap["num_images"] == 233 and ap["num_images_total"] == 3226
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_names_a_malformed_prediction_file(
    widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "preds" / "0--Parade" / "0_Parade_marchingband_1_465.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("0_Parade_marchingband_1_465.jpg\n2\n10 20 30 40 0.9\n10 20 30 0.8\n")
    code = main(["evaluate", "--predictions", str(bad.parents[1]), "--gt", str(widerface_dir / "val"),
                 "--out", str(tmp_path / "eval")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("featherface evaluate: error: ")
    assert f"{bad}, line 4: expected 5 values" in err
    assert not (tmp_path / "eval" / "ap.json").exists()


def test_evaluate_a_model_on_two_images(
    weights_dir: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = weights_dir / "featherface_v1_fork.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    images = copy_two_val_images(widerface_dir, tmp_path)
    out = tmp_path / "eval"
    code = main([
        "evaluate", "--model", "featherface_v1", "--weights", str(weights), "--images", str(images.parent),
        "--gt", str(widerface_dir / "val"), "--out", str(out), "--quiet",
    ])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "predicted 2 images at original size" in stdout
    assert "(2 of the 3226 val images took part)" in stdout
    ap = json.loads((out / "ap.json").read_text())
    assert ap["num_images"] == 2
    assert all(0.0 <= ap["ap"][s] <= 1.0 for s in ("easy", "medium", "hard") if ap["ap"][s] is not None)
    assert (out / "pr_curves.png").is_file()
    assert sorted(p.name for p in (out / "predictions" / "0--Parade").iterdir()) == [
        n.replace(".jpg", ".txt") for n in sorted(TWO_VAL_IMAGES)
    ]


def test_evaluate_needs_predictions_or_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--gt", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "give either --predictions DIR, or --model/--weights or --peer with --images DIR" in capsys.readouterr().err


def test_evaluate_with_the_attention_bypassed(
    widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny.pt", create_model("featherface_odconv_ssh", width=16, bifpn_repeats=1))
    images = copy_two_val_images(widerface_dir, tmp_path)
    out = tmp_path / "eval"
    code = main([
        "evaluate", "--weights", str(weights), "--images", str(images.parent), "--gt", str(widerface_dir / "val"),
        "--out", str(out), "--bypass-attention", "--calibration-count", "1", "--quiet",
    ])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "attention bypassed: 15 ODConv2d attentions fixed to their mean over 1 calibration images" in stdout
    assert "(2 of the 3226 val images took part)" in stdout
    record = json.loads((out / "bypass.json").read_text())
    assert len(record["fixed"]) == 15 and record["identity"] == {} and record["calibration_images"] == 1
    assert record["calibration_files"] == [str(images / sorted(TWO_VAL_IMAGES)[0])]
    assert (out / "ap.json").is_file()


def test_bypass_attention_needs_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--predictions", str(tmp_path), "--gt", str(tmp_path), "--bypass-attention",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--bypass-attention needs a model of ours" in capsys.readouterr().err


@pytest.fixture()
def yunet(weights_dir: Path) -> Path:
    path = weights_dir / "peers" / "yunet_n_dynamic.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_evaluate_a_peer_on_two_images(
    yunet: Path, widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = copy_two_val_images(widerface_dir, tmp_path)
    out = tmp_path / "eval"
    code = main([
        "evaluate", "--peer", "yunet", "--weights", str(yunet), "--images", str(images.parent),
        "--gt", str(widerface_dir / "val"), "--out", str(out), "--quiet",
    ])
    assert code == 0
    assert "(2 of the 3226 val images took part)" in capsys.readouterr().out
    ap = json.loads((out / "ap.json").read_text())
    assert ap["num_images"] == 2 and ap["ap"]["hard"] > 0.3


def test_evaluate_with_box_voting_moves_boxes_not_scores(yunet: Path, widerface_dir: Path, tmp_path: Path) -> None:
    images = copy_two_val_images(widerface_dir, tmp_path)
    rows = {}
    for name, flags in (("plain", []), ("voted", ["--box-voting"])):
        out = tmp_path / name
        assert main(["evaluate", "--peer", "yunet", "--weights", str(yunet), "--images", str(images.parent),
                     "--gt", str(widerface_dir / "val"), "--out", str(out), "--quiet", *flags]) == 0
        rows[name] = read_prediction_folder(out / "predictions")
    assert rows["plain"].keys() == rows["voted"].keys()
    for key, plain in rows["plain"].items():
        voted = rows["voted"][key]
        assert np.array_equal(plain[:, 4], voted[:, 4])  # same detections, same scores
    assert any(not np.array_equal(rows["plain"][k][:, :4], rows["voted"][k][:, :4]) for k in rows["plain"])


def test_box_voting_needs_a_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--predictions", str(tmp_path), "--gt", str(tmp_path), "--box-voting",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--box-voting applies when a detector runs" in capsys.readouterr().err


def test_evaluate_at_a_score_threshold(yunet: Path, widerface_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--threshold 0.5 keeps the detections above 0.5: a subset of the protocol's."""
    images = copy_two_val_images(widerface_dir, tmp_path)
    rows = {}
    for name, flags in (("protocol", []), ("detect", ["--threshold", "0.5"])):
        out = tmp_path / name
        assert main(["evaluate", "--peer", "yunet", "--weights", str(yunet), "--images", str(images.parent),
                     "--gt", str(widerface_dir / "val"), "--out", str(out), "--quiet", *flags]) == 0
        rows[name] = read_prediction_folder(out / "predictions")
    assert sum(len(r) for r in rows["detect"].values()) < sum(len(r) for r in rows["protocol"].values())
    assert all((r[:, 4] > 0.5).all() for r in rows["detect"].values())
    assert min(r[:, 4].min() for r in rows["protocol"].values() if len(r)) <= 0.5
    assert main(["evaluate", "--peer", "yunet", "--weights", str(yunet), "--images", str(images.parent),
                 "--gt", str(widerface_dir / "val"), "--out", str(tmp_path / "bad"), "--threshold", "1.5"]) == 2
    assert "--threshold must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_transfer_writes_a_loadable_odconv_ssh(v1_weights: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "init.pt"
    assert main(["transfer", "--source-model", "featherface_v1", "--weights", str(v1_weights), "--model",
                 "featherface_odconv_ssh", "--out", str(out)]) == 0
    assert "60 source tensors unused" in capsys.readouterr().out  # the 15 deformable convs' offset / mask convs
    student = build_model_from_checkpoint(out)
    teacher = create_model("featherface_v1")
    load_weights(teacher, v1_weights)
    for m in teacher.modules():  # V1 without its offsets is what the student starts as
        if hasattr(m, "offset_conv"):
            for conv in (m.offset_conv, m.mask_conv):
                torch.nn.init.zeros_(conv.weight)
                torch.nn.init.zeros_(conv.bias)
    x = torch.randn(1, 3, 96, 128) * 50
    with torch.no_grad():
        for a, b in zip(teacher.eval()(x), student(x)):
            assert torch.allclose(a, b, atol=1e-4)


# ------------------------------------------------------------------------------- issue 15: evaluate's errors


def test_evaluate_refuses_an_unreadable_image_unless_skip_unreadable(
    widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny.pt", create_model("featherface_none", width=16, bifpn_repeats=1))
    images = copy_two_val_images(widerface_dir, tmp_path)
    (images / TWO_VAL_IMAGES[0]).unlink()
    bad = images / "0_Parade_Parade_0_999.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "eval"
    args = ["evaluate", "--weights", str(weights), "--images", str(images.parent), "--gt", str(widerface_dir / "val"),
            "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"featherface evaluate: error: cannot read the image {bad}" in err
    assert "leaving it out would change the AP" in err and "pass --skip-unreadable to leave it out" in err
    assert not (out / "ap.json").exists()
    assert main(args + ["--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert "skipped 0--Parade/0_Parade_Parade_0_999.jpg" in captured.err
    assert "(1 of the 3226 val images took part)" in captured.out


def test_unknown_prediction_files_name_the_cli_flag(
    widerface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = tmp_path / "preds"
    write_prediction_folder({"0--Parade/0_Parade_marchingband_1_465": np.zeros((0, 5)),
                             "0--Parade/not_a_val_image": np.zeros((0, 5))}, preds)
    args = ["evaluate", "--predictions", str(preds), "--gt", str(widerface_dir / "val"), "--out", str(tmp_path / "e")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 prediction(s) for images not in the ground truth: '0--Parade/not_a_val_image'" in err
    assert "(pass --ignore-unknown to leave them out)" in err and "unknown='ignore'" not in err
    assert main(args + ["--ignore-unknown"]) == 0
