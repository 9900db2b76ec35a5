"""`predict_folder`: official prediction files per image, bad images skipped, atomic replacement of the folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from featherface.inference.detector import WIDER_PROTOCOL, FaceDetector, to_wider_rows
from featherface.eval.predict import PredictSummary, predict_folder
from featherface.eval.prediction_files import read_prediction_folder
from featherface.models.registry import create_model

# The two smallest val images (1024x275 and 1024x369).
SMALL_VAL = ("1--Handshaking/1_Handshaking_Handshaking_1_801.jpg", "0--Parade/0_Parade_marchingband_1_653.jpg")


@pytest.fixture(scope="module")
def detector(weights_dir: Path) -> FaceDetector:
    """The V1 checkpoint at the evaluation protocol's settings, with the long side at 512 to stay fast."""
    path = weights_dir / "featherface_v1_fork.pth"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return FaceDetector.from_pretrained("featherface_v1", path, device="cpu", settings=WIDER_PROTOCOL, long_side=512)


@pytest.fixture()
def images(tmp_path: Path, widerface_dir: Path) -> Path:
    """``images/<event>/`` with two real val images, a corrupt .jpg and an empty .jpg."""
    root = tmp_path / "images"
    for rel in SMALL_VAL:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(widerface_dir / "val" / "images" / rel, root / rel)
    (root / "0--Parade" / "0_Parade_corrupt_1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated" + bytes(range(50)))
    (root / "1--Handshaking" / "1_Handshaking_empty_2.jpg").write_bytes(b"")
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_folder_writes_official_files(detector: FaceDetector, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds"
    calls: list[tuple[int, int | None, str]] = []
    summary = predict_folder(detector, images, out, progress=lambda *a: calls.append(a))

    preds = read_prediction_folder(out)
    keys = sorted(rel[: -len(".jpg")] for rel in SMALL_VAL)
    assert sorted(preds) == keys
    for rel in SMALL_VAL:
        want = to_wider_rows(detector(images / rel))
        assert len(want) > 0
        np.testing.assert_array_equal(preds[rel[: -len(".jpg")]], want)  # exact round trip

    assert summary.images == 2
    assert summary.detections == sum(len(v) for v in preds.values())
    assert set(summary.skipped) == {"0--Parade/0_Parade_corrupt_1.jpg", "1--Handshaking/1_Handshaking_empty_2.jpg"}
    assert "not a decodable image" in summary.skipped["0--Parade/0_Parade_corrupt_1.jpg"]
    assert "empty file" in summary.skipped["1--Handshaking/1_Handshaking_empty_2.jpg"]
    assert summary.seconds > 0 and summary.seconds_per_image == summary.seconds / 2
    d = summary.to_dict()
    assert d["images"] == 2 and len(d["skipped"]) == 2 and d["detections"] == summary.detections

    # Progress after every image, skipped ones included; nothing but the two folders is left behind.
    assert calls == [(i, 4, "predict") for i in range(1, 5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "preds"]
    assert not list(out.rglob(".*"))  # no temporary files inside either


class FailingDetector:
    """Calls the real detector, but raises on call number `fail_on` (an error that is not a bad image)."""

    def __init__(self, inner: FaceDetector, fail_on: int) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def __call__(self, image: object) -> object:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("simulated failure in the middle of the run")
        return self.inner(image)


def test_existing_folder_replaced_only_when_complete(detector: FaceDetector, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds"
    old = out / "9--Old" / "9_old.txt"
    old.parent.mkdir(parents=True)
    old.write_text("9_old.jpg\n0\n")
    before = _snapshot(out)

    failing = FailingDetector(detector, fail_on=2)
    with pytest.raises(RuntimeError, match="simulated failure"):
        predict_folder(failing, images, out)  # type: ignore[arg-type]
    assert failing.calls == 2
    assert _snapshot(out) == before  # the old set is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "preds"]  # no staging folder left

    predict_folder(detector, images, out)
    assert not old.exists()
    assert sorted(read_prediction_folder(out)) == sorted(rel[: -len(".jpg")] for rel in SMALL_VAL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "preds"]


def test_refuses_to_replace_anything_but_predictions(detector: FaceDetector, images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would replace the image folder"):
        predict_folder(detector, images, images)
    with pytest.raises(ValueError, match="would replace the image folder"):
        predict_folder(detector, images, tmp_path)  # tmp_path holds images/
    out = tmp_path / "results"
    (out / "0--Parade").mkdir(parents=True)
    (out / "0--Parade" / "a.txt").write_text("a.jpg\n0\n")
    (out / "model.pth").write_bytes(b"precious")
    with pytest.raises(ValueError, match=r"refusing to replace .*model\.pth"):
        predict_folder(detector, images, out)
    assert (out / "model.pth").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "results"]


def test_missing_or_empty_image_folder(detector: FaceDetector, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        predict_folder(detector, tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty" / "0--Parade").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images under"):
        predict_folder(detector, tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_images_sharing_a_prediction_file_are_not_both_written(tmp_path: Path) -> None:
    """``a.jpg`` and ``a.png`` both map to ``a.txt``: the first (sorted) wins, the second is skipped."""
    import cv2

    torch.manual_seed(0)
    tiny = FaceDetector(create_model("featherface_none", width=16, bifpn_repeats=1), device="cpu")
    event = tmp_path / "images" / "5--Car"
    event.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(event / "a.jpg"), pixels)
    cv2.imwrite(str(event / "a.png"), pixels)
    summary = predict_folder(tiny, tmp_path / "images", tmp_path / "out")
    assert summary.images == 1
    assert list(summary.skipped) == ["5--Car/a.png"]
    assert "5--Car/a.txt" in summary.skipped["5--Car/a.png"] and "5--Car/a.jpg" in summary.skipped["5--Car/a.png"]
    written = read_prediction_folder(tmp_path / "out")["5--Car/a"]
    np.testing.assert_array_equal(written, to_wider_rows(tiny(event / "a.jpg")))


def test_summary_without_images() -> None:
    summary = PredictSummary()
    assert np.isnan(summary.seconds_per_image)
    assert summary.to_dict()["seconds_per_image"] is None


def test_unreadable_image_is_an_error_unless_skipping_is_asked_for(tmp_path: Path) -> None:
    """Issue 15: an evaluation must not lose an image silently (a stub detector that only decodes the image)."""
    from featherface.eval.predict import UnreadableImageError
    from featherface.inference.images import read_image

    class NoFaces:
        def to_wider_rows(self) -> np.ndarray:
            return np.zeros((0, 5))

    def decode_only(path: Path) -> NoFaces:
        read_image(path)
        return NoFaces()

    root = tmp_path / "images" / "0--Parade"
    root.mkdir(parents=True)
    assert __import__("cv2").imwrite(str(root / "good.png"), np.zeros((8, 8, 3), np.uint8))
    bad = root / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UnreadableImageError) as info:
        predict_folder(decode_only, root.parent, tmp_path / "preds", skip_unreadable=False)
    message = str(info.value)
    assert message.startswith(f"cannot read the image {bad} ({bad}: not a decodable image")
    assert "leaving it out would change the AP" in message and "pass skip_unreadable=True" in message
    assert "--skip-unreadable" in str(info.value.with_hint("pass --skip-unreadable to leave it out"))
    assert not (tmp_path / "preds").exists() and not list(tmp_path.glob(".preds*"))
    summary = predict_folder(decode_only, root.parent, tmp_path / "preds")  # the default skips, as before
    assert summary.images == 1 and list(summary.skipped) == ["0--Parade/bad.jpg"]
