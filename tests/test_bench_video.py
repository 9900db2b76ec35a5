"""Tests of benchmarks/bench_video.py: a smoke run on a synthetic video (JSON structure, positive fps, frame
counts), the pan/zoom geometry against hand-computed sampling positions, and the --weights parsing."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.benchmark_scripts import BENCHMARKS, load_benchmark_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark_script("bench_video")


def test_smoke_run_json(bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench_video.json"
    assert bench.main(["--smoke", "--synthetic", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    frames = bench.SMOKE["frames"]
    assert result["video"]["frames"] == frames
    assert [result["video"]["width"], result["video"]["height"]] == list(bench.SMOKE["size"])
    rows = result["rows"]
    assert {(r["backend"], r["threads"]) for r in rows} == {
        ("pytorch", 1), ("pytorch", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    for row in rows:
        assert row["frames"] == frames
        assert row["detector_fps"] > 0 and row["end_to_end_fps"] > 0
        # detector time is part of the end-to-end time
        assert row["end_to_end_fps"] <= row["detector_fps"] * 1.0001
        assert len(row["passes"]) == bench.SMOKE["runs"]
        assert all(p["frames"] == frames for p in row["passes"])
    # Same random model, same frames: both backends find the same faces (up to scores at the threshold that
    # float rounding may put on either side).
    counts = [r["faces_per_frame"] for r in rows]
    assert min(counts) > 0 and max(counts) <= 1.01 * min(counts)
    assert result["machine"]["cores"] >= 1 and result["load_average_start"] is not None
    printed = capsys.readouterr().out
    # the built-in weights when the package has them, else a random featherface_odconv
    assert {r["model"] for r in rows} <= {"builtin", "featherface_odconv"} and len({r["model"] for r in rows}) == 1
    assert printed.startswith("| model | backend | threads |") and printed.count(f"| {rows[0]['model']} |") == 4
    assert not list(BENCHMARKS.glob("test_video*")), "the test video must not land in the repository"


def test_pan_zoom_samples_the_expected_columns(bench: ModuleType) -> None:
    # Source 400x300 whose channel 0 is x / 2 (a linear ramp: bilinear sampling is exact on it).
    x = np.arange(400, dtype=np.float64)
    source = np.zeros((300, 400, 3), np.uint8)
    source[..., 0] = np.round(x / 2).astype(np.uint8)[None, :]
    # u = 0: crop 0.95 * 400 = 380 wide, centre x 190, scale 100/380: output column 0 samples x = 0,
    # column 99 samples x = 190 + 49 * 3.8 = 376.2 (value 188.1).
    first = bench.pan_zoom_frame(source, 0.0, (100, 75))
    assert first.shape == (75, 100, 3) and first.dtype == np.uint8
    assert abs(int(first[37, 0, 0]) - 0) <= 1 and abs(int(first[37, 99, 0]) - 188) <= 1
    # u = 1: same crop size, centre 210: column 0 samples x = 20 (value 10).
    last = bench.pan_zoom_frame(source, 1.0, (100, 75))
    assert abs(int(last[37, 0, 0]) - 10) <= 1
    # u = 0.5: zoomed in to 0.65 * 400 = 260 wide, centre 200: column 0 samples x = 70 (value 35).
    middle = bench.pan_zoom_frame(source, 0.5, (100, 75))
    assert abs(int(middle[37, 0, 0]) - 35) <= 1


def test_parse_weights(bench: ModuleType, tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    assert bench.parse_weights([f"featherface_v1={weights}", str(weights)]) == [
        ("featherface_v1", weights), (None, weights)]
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        bench.parse_weights([f"featherface_v1={tmp_path / 'missing.pth'}"])
