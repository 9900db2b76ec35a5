"""The built-in weights (featherface/weights): they load, detect faces out of the box, and the CLI uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featherface.inference.detector import FaceDetector
from featherface.cli import main
from featherface.weights import BUILTIN_CHECKPOINT, MODEL_CARD, builtin_weights

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "featherface" / "weights"
MEETING = "11--Meeting/11_Meeting_Meeting_11_Meeting_Meeting_11_102.jpg"


def test_builtin_files_are_in_the_package() -> None:
    assert builtin_weights() == WEIGHTS_DIR / BUILTIN_CHECKPOINT
    card = (WEIGHTS_DIR / MODEL_CARD).read_text()
    for needed in ("WIDER FACE", "Easy", "Medium", "Hard", "licen", "params-builtin.yaml", "featherface_v1_fork.pth",
                   "MIT"):
        assert needed in card, f"the model card does not mention {needed!r}"


def test_builtin_detector_finds_the_faces_of_a_meeting(widerface_dir: Path) -> None:
    detector = FaceDetector.builtin(score_threshold=0.5)
    dets = detector(widerface_dir / "val" / "images" / MEETING)
    # The meeting picture shows a handful of clearly visible people around a table.
    assert len(dets) >= 3
    assert float(dets.scores.min()) >= 0.5


def test_detect_cli_defaults_to_the_builtin_weights(widerface_dir: Path, tmp_path: Path) -> None:
    image = widerface_dir / "val" / "images" / MEETING
    assert main(["detect", str(image), "-o", str(tmp_path), "--no-images", "-q"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 1 and summary["image_faces"] >= 3


def test_detect_cli_votes_unless_told_not_to(widerface_dir: Path, tmp_path: Path) -> None:
    """Box voting is on by default (the library's settings), off with --no-box-voting: same faces and scores, the
    default's boxes are the voted ones of FaceDetector.builtin()."""
    image = widerface_dir / "val" / "images" / MEETING
    faces = {}
    for name, flags in (("voted", []), ("plain", ["--no-box-voting"])):
        assert main(["detect", str(image), "-o", str(tmp_path / name), "--no-images", "-q", *flags]) == 0
        faces[name] = json.loads((tmp_path / name / (image.stem + ".json")).read_text())["faces"]
    assert [f["score"] for f in faces["voted"]] == [f["score"] for f in faces["plain"]]
    assert any(v["box"] != p["box"] for v, p in zip(faces["voted"], faces["plain"]))
    voted = FaceDetector.builtin()(image)
    assert np.abs(voted.boxes.numpy() - np.array([f["box"] for f in faces["voted"]])).max() <= 0.006
    assert FaceDetector.builtin().settings.box_voting


def test_model_without_weights_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(tmp_path), "--model", "featherface_odconv", "-o", str(tmp_path / "o")]) == 2
    assert "--model needs --weights" in capsys.readouterr().err
