"""Tests of featherface.inference.detect: inputs, output names, images, folders, videos, errors, the summary.

Most tests use a stub network with one known detection (its JSON is computed by hand below); the video tests also
run a tiny random FeatherFace so that the real model path is exercised; one test runs the V1 checkpoint on a real
WIDER FACE val image (skipped when ../shared is absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import featherface.inference.detect as detect_mod
import featherface.inference.detect_inputs as detect_inputs
from featherface.inference.detector import FaceDetector
from featherface.inference.detect import (
    DetectRunSummary,
    InputError,
    InputItem,
    VideoError,
    collect_inputs,
    faces_to_json,
    plan_outputs,
    run_detect,
)
from featherface.inference.images import ImageError
from featherface.models.registry import create_model
from featherface.ops.priors import make_priors

# --- a stub network with one known detection -----------------------------------------------------------------------
#
# Priors are ordered level by level (strides 8, 16, 32), row-major over (i, j), then by min size (16, 32 on P3).
# On a 64-px-wide input P3 has ceil(64 / 8) = 8 columns, so the prior of row i = 2, column j = 2, min size 16 is
# index (2 * 8 + 2) * 2 + 0 = 36: centre ((2 + 0.5) * 8, (2 + 0.5) * 8) = (20, 20) px, side 16 px. With zero
# regressions it decodes to the box (12, 12, 28, 28) and all five landmarks at the centre (20, 20). Its logits
# (-10, +10) give the face probability 1 / (1 + e^-20) = 1.0 to five decimals; every other prior gets 0.

FACE_PRIOR = 36
FACE_JSON = {"box": [12.0, 12.0, 28.0, 28.0], "score": 1.0, "landmarks": [[20.0, 20.0]] * 5}


class OneFaceNet(nn.Module):
    """Returns ``(loc, logits, landmarks)`` with one confident face at prior :data:`FACE_PRIOR` (inputs >= 24 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.calls += 1
        batch, _, height, width = x.shape
        p = make_priors(height, width).shape[0]
        logits = torch.zeros(batch, p, 2)
        logits[..., 0] = 10.0
        logits[:, FACE_PRIOR] = torch.tensor([-10.0, 10.0])
        return torch.zeros(batch, p, 4), logits, torch.zeros(batch, p, 10)


@pytest.fixture()
def stub() -> FaceDetector:
    return FaceDetector(OneFaceNet(), device="cpu", score_threshold=0.5)


@pytest.fixture(scope="module")
def tiny() -> FaceDetector:
    torch.manual_seed(0)
    model = create_model("featherface_none", width=16, bifpn_repeats=1)
    return FaceDetector(model, device="cpu", score_threshold=0.3, max_detections=20)


@pytest.fixture()
def one_thread():
    """Run torch on one thread: on 64 px inputs threading only adds overhead, and a busy 2-core machine makes
    the intra-op thread pool spin (1000x slower convolutions were seen)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _color(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(height, width, 3), dtype=np.uint8)


def _write_video(path: Path, frames: int = 10, size: tuple[int, int] = (64, 48), fps: float = 10.0,
                 fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def _read_all_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file()]


# --- collect_inputs / plan_outputs ---------------------------------------------------------------------------------


def test_collect_inputs_expands_folders_and_classifies(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _write_png(folder / "b.png", _color())
    _write_png(folder / "sub" / "a.jpg", _color())
    (folder / "notes.txt").write_text("not an image")
    (folder / "clip.mp4").write_bytes(b"")  # videos inside folders are not picked up
    video = _write_video(tmp_path / "clip.MP4")
    single = _write_png(tmp_path / "single.JPEG", _color())
    items = collect_inputs([single, folder, video, str(single)])  # the repeated file is kept once
    assert [(it.path, it.kind, it.relative, it.folder) for it in items] == [
        (single, "image", Path("single"), None),
        (folder / "b.png", "image", Path("b"), folder),
        (folder / "sub" / "a.jpg", "image", Path("sub/a"), folder),
        (video, "video", Path("clip"), None),
    ]


def test_collect_inputs_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        collect_inputs([tmp_path / "nope.jpg"])
    doc = tmp_path / "report.pdf"
    doc.write_bytes(b"%PDF")
    with pytest.raises(InputError, match=r"report\.pdf.*'\.pdf'"):
        collect_inputs([doc])
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(InputError, match="no images or videos"):
        collect_inputs([empty])


def test_plan_outputs_avoids_collisions(tmp_path: Path) -> None:
    folder, other, out = tmp_path / "in", tmp_path / "other", tmp_path / "out"
    items = [
        InputItem(folder / "a.jpg", "image", Path("a"), folder),
        InputItem(folder / "a.png", "image", Path("a"), folder),  # same stem, other suffix
        InputItem(folder / "A_1.jpg", "image", Path("A_1"), folder),  # collides with the generated a_1 (case)
        InputItem(folder / "sub" / "a.jpg", "image", Path("sub/a"), folder),  # other folder: no collision
        InputItem(other / "a.jpg", "image", Path("a"), None),
        InputItem(other / "a.mp4", "video", Path("a"), None),  # a.mp4 / a.jsonl: free
        InputItem(other / "b.mp4", "video", Path("a"), None),  # (made-up stem) a.mp4 taken; a_1.mp4 free
    ]
    stems = plan_outputs(items, out)
    assert stems == [out / "a", out / "a_1", out / "A_1_1", out / "sub" / "a", out / "a_2", out / "a", out / "a_1"]


def test_plan_outputs_never_overwrites_an_input(tmp_path: Path) -> None:
    items = [
        InputItem(tmp_path / "x.jpg", "image", Path("x")),
        InputItem(tmp_path / "y.json", "image", Path("y")),  # odd, but the .json output must not replace it
        InputItem(tmp_path / "clip.mp4", "video", Path("clip")),
    ]
    assert plan_outputs(items, tmp_path) == [tmp_path / "x_1", tmp_path / "y_1", tmp_path / "clip_1"]


def test_faces_to_json_rounding() -> None:
    from featherface.inference.postprocess import Detections

    dets = Detections(
        torch.tensor([[1.23456, 2.0, 3.0, 4.004]]), torch.tensor([0.123456]),
        torch.arange(10, dtype=torch.float32).reshape(1, 5, 2) + 0.001,
    )
    assert faces_to_json(dets) == [{
        "box": [1.23, 2.0, 3.0, 4.0],
        "score": 0.12346,
        "landmarks": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]],
    }]


# --- images ----------------------------------------------------------------------------------------------------------


def test_folder_with_bad_files_skips_and_handles_gray_and_rgba(tmp_path: Path, stub: FaceDetector) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    _write_png(folder / "color.png", _color())
    _write_png(folder / "gray.png", _color()[:, :, 0])
    rgba = np.dstack([_color(), np.full((48, 64), 128, np.uint8)])
    _write_png(folder / "deep" / "rgba.png", rgba)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    (folder / "empty.png").write_bytes(b"")
    calls: list[tuple[int, int | None, str]] = []

    summary = run_detect(stub, [folder], out, progress=lambda d, t, w: calls.append((d, t, w)))

    assert summary.images == 3 and summary.image_faces == 3
    assert set(summary.skipped) == {str(folder / "corrupt.jpg"), str(folder / "empty.png")}
    assert "empty file" in summary.skipped[str(folder / "empty.png")]
    assert "not a decodable image" in summary.skipped[str(folder / "corrupt.jpg")]
    assert calls[-1] == (5, 5, "images") and [c[0] for c in calls] == [1, 2, 3, 4, 5]
    for stem, source in (("color", "color.png"), ("gray", "gray.png"), ("deep/rgba", "deep/rgba.png")):
        record = json.loads((out / f"{stem}.json").read_text())
        assert record == {"image": str(folder / source), "width": 64, "height": 48, "faces": [FACE_JSON]}
        annotated = cv2.imread(str(out / f"{stem}.jpg"))
        assert annotated is not None and annotated.shape == (48, 64, 3)
    assert not (out / "corrupt.json").exists() and not (out / "empty.jpg").exists()
    assert sorted(summary.outputs) == sorted(
        str(out / f"{s}{e}") for s in ("color", "gray", "deep/rgba") for e in (".jpg", ".json")
    )
    assert _no_temp_files(out)
    json.dumps(summary.to_dict())  # serialisable


def test_name_collisions_end_to_end(tmp_path: Path, stub: FaceDetector) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    _write_png(folder / "a.jpg", _color(seed=1))
    _write_png(folder / "a.png", _color(40, 56, seed=2))
    elsewhere = _write_png(tmp_path / "b" / "a.png", _color(32, 40, seed=3))
    summary = run_detect(stub, [folder, elsewhere], out)
    assert summary.images == 3
    sizes = {stem: json.loads((out / f"{stem}.json").read_text()) for stem in ("a", "a_1", "a_2")}
    assert {s: (r["image"], r["width"], r["height"]) for s, r in sizes.items()} == {
        "a": (str(folder / "a.jpg"), 64, 48),
        "a_1": (str(folder / "a.png"), 56, 40),
        "a_2": (str(elsewhere), 40, 32),
    }


def test_output_folder_equal_to_input_folder_keeps_inputs(tmp_path: Path, stub: FaceDetector) -> None:
    original = _color()
    _write_png(tmp_path / "x.png", original)
    jpg = tmp_path / "y.jpg"
    cv2.imwrite(str(jpg), original)
    jpg_bytes = jpg.read_bytes()
    summary = run_detect(stub, [tmp_path], tmp_path)
    assert summary.images == 2
    assert jpg.read_bytes() == jpg_bytes  # the input y.jpg is not replaced by its annotated copy
    assert (tmp_path / "y_1.jpg").is_file() and (tmp_path / "x.jpg").is_file()


def test_images_inside_a_nested_output_folder_are_ignored(tmp_path: Path, stub: FaceDetector) -> None:
    folder = tmp_path / "in"
    _write_png(folder / "x.png", _color())
    out = folder / "detections"
    first = run_detect(stub, [folder], out)
    second = run_detect(stub, [folder], out)  # out/x.jpg from the first run is not an input now
    assert first.images == second.images == 1
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg", "x.json"]


def test_named_corrupt_image_raises_unless_keep_going(tmp_path: Path, stub: FaceDetector) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    good = _write_png(tmp_path / "good.png", _color())
    with pytest.raises(ImageError, match="bad.jpg"):
        run_detect(stub, [bad], tmp_path / "out")
    summary = run_detect(stub, [bad, good], tmp_path / "out2", keep_going=True)
    assert summary.images == 1 and list(summary.skipped) == [str(bad)]


def test_save_flags(tmp_path: Path, stub: FaceDetector) -> None:
    image = _write_png(tmp_path / "x.png", _color())
    summary = run_detect(stub, [image], tmp_path / "json_only", save_images=False)
    assert sorted(p.name for p in (tmp_path / "json_only").iterdir()) == ["x.json"]
    assert summary.outputs == [str(tmp_path / "json_only" / "x.json")]
    summary = run_detect(stub, [image], tmp_path / "nothing", save_images=False, save_json=False)
    assert summary.images == 1 and summary.outputs == [] and not any((tmp_path / "nothing").iterdir())


def test_bad_max_frames(tmp_path: Path, stub: FaceDetector) -> None:
    with pytest.raises(ValueError, match="max_frames"):
        run_detect(stub, [tmp_path], tmp_path / "out", max_frames=0)


# --- videos ----------------------------------------------------------------------------------------------------------


def test_video_annotated_and_jsonl(tmp_path: Path, stub: FaceDetector) -> None:
    video = _write_video(tmp_path / "clip.mp4", frames=10, fps=10.0)
    calls: list[tuple[int, int | None, str]] = []
    summary = run_detect(stub, [video], tmp_path / "out", progress=lambda d, t, w: calls.append((d, t, w)))

    out_video, out_json = tmp_path / "out" / "clip.mp4", tmp_path / "out" / "clip.jsonl"
    frames = _read_all_frames(out_video)
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    capture = cv2.VideoCapture(str(out_video))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    capture.release()
    lines = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert lines == [{"frame": i, "time": i / 10.0, "faces": [FACE_JSON]} for i in range(10)]
    assert calls == [(i, 10, "video clip.mp4") for i in range(1, 11)]
    (v,) = summary.videos
    assert (v.frames, v.faces, v.width, v.height, v.fps) == (10, 10, 64, 48, 10.0)
    assert v.video_out == str(out_video) and v.json_out == str(out_json)
    assert summary.frames == 10 and summary.faces == 10
    assert 0 < v.end_to_end_fps < v.detector_fps
    d = summary.to_dict()
    assert d["frames"] == 10 and d["detector_fps"] > 0 and d["end_to_end_fps"] > 0
    assert d["outputs"] == [str(out_video), str(out_json)]
    assert _no_temp_files(tmp_path / "out")


def test_video_with_tiny_featherface_and_max_frames(tmp_path: Path, tiny: FaceDetector, one_thread) -> None:
    video = _write_video(tmp_path / "clip.avi", frames=10, fourcc="MJPG")
    summary = run_detect(tiny, [video], tmp_path / "out", max_frames=4)
    assert summary.frames == 4
    assert len(_read_all_frames(tmp_path / "out" / "clip.mp4")) == 4
    lines = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2, 3]
    for record in lines:
        assert len(record["faces"]) <= 20
        for face in record["faces"]:
            assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0.3 < face["score"] <= 1.0


def test_video_writer_falls_back_to_avi(tmp_path: Path, stub: FaceDetector, monkeypatch) -> None:
    monkeypatch.setattr(detect_mod, "VIDEO_CODECS", (("ZZZZ", ".mp4"), ("MJPG", ".avi")))
    video = _write_video(tmp_path / "clip.mp4", frames=5)
    summary = run_detect(stub, [video], tmp_path / "out")
    assert summary.videos[0].video_out == str(tmp_path / "out" / "clip.avi")
    assert len(_read_all_frames(tmp_path / "out" / "clip.avi")) == 5
    assert not (tmp_path / "out" / "clip.mp4").exists() and _no_temp_files(tmp_path / "out")


def test_unopenable_video_raises_and_leaves_nothing(tmp_path: Path, stub: FaceDetector) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    with pytest.raises(VideoError, match="broken.mp4"):
        run_detect(stub, [bad], out)
    assert not [p for p in out.rglob("*")]
    good = _write_png(tmp_path / "good.png", _color())
    summary = run_detect(stub, [bad, good], out, keep_going=True)
    assert list(summary.skipped) == [str(bad)] and summary.images == 1 and summary.videos == []


def test_summary_without_videos_has_no_fps() -> None:
    d = DetectRunSummary().to_dict()
    assert d["detector_fps"] is None and d["end_to_end_fps"] is None and d["frames"] == 0


# --- the V1 checkpoint on a real image -------------------------------------------------------------------------------


def test_v1_checkpoint_on_a_real_image(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    weights = weights_dir / "featherface_v1_fork.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    image = sorted((widerface_dir / "val" / "images").rglob("*.jpg"))[0]
    detector = FaceDetector.from_pretrained("featherface_v1", weights, score_threshold=0.5, device="cpu")
    summary = run_detect(detector, [image], tmp_path)
    record = json.loads((tmp_path / f"{image.stem}.json").read_text())
    height, width = cv2.imread(str(image)).shape[:2]
    assert (record["width"], record["height"]) == (width, height)
    assert len(record["faces"]) >= 1 and summary.image_faces == len(record["faces"])
    scores = [f["score"] for f in record["faces"]]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.5
    for face in record["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert -2 <= x1 < x2 <= width + 2 and -2 <= y1 < y2 <= height + 2, face["box"]
        for x, y in face["landmarks"]:
            assert x1 - 0.5 * (x2 - x1) <= x <= x2 + 0.5 * (x2 - x1)
            assert y1 - 0.5 * (y2 - y1) <= y <= y2 + 0.5 * (y2 - y1)
    annotated = cv2.imread(str(tmp_path / f"{image.stem}.jpg"))
    assert annotated.shape == (height, width, 3)


def test_annotated_outputs_show_the_detection(tmp_path: Path, stub: FaceDetector) -> None:
    flat = np.full((48, 64, 3), 128, np.uint8)
    image = _write_png(tmp_path / "flat.png", flat)
    video = tmp_path / "flat.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for _ in range(3):
        writer.write(flat)
    writer.release()
    run_detect(stub, [image, video], tmp_path / "out")
    annotated = cv2.imread(str(tmp_path / "out" / "flat.jpg")).astype(int)
    frame = _read_all_frames(tmp_path / "out" / "flat.mp4")[0].astype(int)
    for picture in (annotated, frame):
        # The box (12, 12, 28, 28): its left edge at x = 12 turns green; far away the grey stays.
        b, g, r = picture[20, 12]
        assert g - max(b, r) > 40, picture[20, 12]
        assert np.abs(picture[44, 60] - 128).max() < 10


# --- issue 15: nothing is left out without a word ----------------------------------------------------------------


def _truncated_avi(path: Path, frames: int = 20, keep: float = 0.55) -> Path:
    """An MJPG .avi whose header announces ``frames`` frames, cut after ``keep`` of its bytes."""
    whole = _write_video(path.with_name("whole.avi"), frames=frames, fourcc="MJPG")
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return path


def test_truncated_video_is_reported(tmp_path: Path, stub: FaceDetector, caplog) -> None:
    video = _truncated_avi(tmp_path / "cut.avi")
    with caplog.at_level("WARNING", logger="featherface.inference.detect"):
        summary = run_detect(stub, [video], tmp_path / "out")
    (v,) = summary.videos
    assert 0 < v.frames < 20 and v.expected_frames == 20
    expected = (f"{video}: decoding stopped after {v.frames} of the 20 frames the file announces (truncated or "
                f"damaged?); the outputs cover those {v.frames} frames only")
    assert summary.warnings == [expected] and summary.to_dict()["warnings"] == [expected]
    assert expected in caplog.text
    # max_frames stopping early is not a truncation
    assert run_detect(stub, [video], tmp_path / "out2", max_frames=3).warnings == []


def test_video_inside_a_folder_is_named(tmp_path: Path, stub: FaceDetector) -> None:
    folder = tmp_path / "in"
    _write_png(folder / "a.png", _color())
    clip = folder / "sub" / "clip.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")  # found by its suffix; never opened
    summary = run_detect(stub, [folder], tmp_path / "out")
    assert summary.images == 1 and summary.videos == []
    assert summary.skipped == {str(clip): detect_inputs.VIDEO_IN_FOLDER}
    assert "name the video itself to process it" in detect_inputs.VIDEO_IN_FOLDER
    only_videos = tmp_path / "videos"
    only_videos.mkdir()
    (only_videos / "x.mp4").write_bytes(b"")
    with pytest.raises(InputError, match=r"no images or videos found .*left out: .*x\.mp4: a video inside a folder"):
        run_detect(stub, [only_videos], tmp_path / "out2")


def test_keep_going_skips_a_missing_path(tmp_path: Path, stub: FaceDetector) -> None:
    good = _write_png(tmp_path / "good.png", _color())
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        run_detect(stub, [missing, good], tmp_path / "out")
    summary = run_detect(stub, [missing, good], tmp_path / "out", keep_going=True)
    assert summary.images == 1 and summary.skipped == {str(missing): f"input not found: {missing}"}


def _use_stub_as_builtin(monkeypatch) -> None:
    """`featherface detect` without --weights gets the one-face stub instead of the built-in weights."""
    stub = classmethod(lambda cls, device=None, **kw: FaceDetector(OneFaceNet(), device="cpu", **kw))
    monkeypatch.setattr(FaceDetector, "builtin", stub)


def test_cli_keep_going_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from featherface.cli import main

    _use_stub_as_builtin(monkeypatch)
    good = _write_png(tmp_path / "good.png", _color())
    missing = tmp_path / "missing.jpg"
    args = ["detect", str(missing), str(good), "-o", str(tmp_path / "out"), "-q"]
    assert main(args) == 2
    assert f"featherface detect: error: input not found: {missing}" in capsys.readouterr().err
    assert main(args + ["--keep-going"]) == 0
    captured = capsys.readouterr()
    assert f"skipped {missing}: input not found: {missing}" in captured.err and "detect: 1 images" in captured.out
    assert main(["detect", str(missing), "-o", str(tmp_path / "out"), "--keep-going", "-q"]) == 2
    assert "no images or videos found" in capsys.readouterr().err


def test_cli_prints_the_truncated_video_warning(tmp_path: Path, capsys, monkeypatch) -> None:
    from featherface.cli import main

    _use_stub_as_builtin(monkeypatch)
    video = _truncated_avi(tmp_path / "cut.avi")
    assert main(["detect", str(video), "-o", str(tmp_path / "out"), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"  warning: {video}: decoding stopped after" in err and "of the 20 frames" in err


def test_write_failure_names_the_file(tmp_path: Path, stub: FaceDetector, monkeypatch) -> None:
    image = _write_png(tmp_path / "x.png", _color())
    out = tmp_path / "out"

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(detect_mod.OutputError) as info:
        run_detect(stub, [image], out)
    assert str(info.value) == (f"cannot write {out / 'x.jpg'}: No space left on device. Check the free space and "
                               f"permissions of {out}, or choose another output folder (-o)")
    monkeypatch.undo()
    assert _no_temp_files(out) and not (out / "x.jpg").exists()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    with pytest.raises(detect_mod.OutputError, match=f"cannot write {blocked}: it is a file, not a folder"):
        run_detect(stub, [image], blocked)


def test_temporary_files_of_a_killed_run_are_removed(tmp_path: Path, stub: FaceDetector) -> None:
    image = _write_png(tmp_path / "x.png", _color())
    out = tmp_path / "out"
    out.mkdir()
    left = [out / ".x.jpg.ab3_k9zq.tmp", out / ".x.json.00000000.tmp"]
    unrelated = out / ".x.jpg.notes"  # not a name our writers make: kept
    for path in (*left, unrelated):
        path.write_bytes(b"half")
    run_detect(stub, [image], out)
    assert not any(p.exists() for p in left) and unrelated.exists()
    assert (out / "x.jpg").is_file()


def test_cli_warns_about_a_large_image(tmp_path: Path, caplog, capsys, monkeypatch) -> None:
    """The threshold is lowered to 30x30 pixels so that the test needs no 8000x6000 image."""
    import featherface.inference.images as images_mod
    from featherface.cli import main

    _use_stub_as_builtin(monkeypatch)
    monkeypatch.setattr(images_mod, "LARGE_IMAGE_PIXELS", 900)
    big = _write_png(tmp_path / "big.png", _color(48, 64))
    with caplog.at_level("WARNING", logger="featherface.inference.detector"):
        assert main(["detect", str(big), str(big.parent), "-o", str(tmp_path / "out"), "-q"]) == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # once, naming the file
    assert warning.startswith(f"{big} is 64x48 (0 megapixels) and runs at its original size")
    assert "--long-side 1920" in warning
    assert f"  warning: {big} is 64x48" in capsys.readouterr().err  # the command's own line
    caplog.clear()
    with caplog.at_level("WARNING", logger="featherface.inference.detector"):
        assert main(["detect", str(big), "-o", str(tmp_path / "out2"), "-q", "--long-side", "64"]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
