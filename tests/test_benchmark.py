"""Tests of featherface.benchmark: smoke runs (tiny sizes and counts), result structure, markdown, ratios, profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featherface.benchmark import (
    BenchmarkConfig,
    BenchmarkResult,
    LatencyRow,
    ModelInfo,
    Ratio,
    format_markdown,
    onnx_parameter_count,
    run_benchmark,
    time_callable,
)


@pytest.fixture(scope="module")
def smoke_none() -> BenchmarkResult:
    """featherface_none only, no peers, smoke counts."""
    return run_benchmark(BenchmarkConfig(models=("featherface_none",), retinaface=False, smoke=True, seed=3))


def test_smoke_structure(smoke_none: BenchmarkResult) -> None:
    assert smoke_none.config["input_size"] == [160, 160]
    assert smoke_none.config["runs"] == 3 and smoke_none.config["threads"] == [1]
    assert [m.name for m in smoke_none.models] == ["featherface_none"]
    info = smoke_none.models[0]
    assert info.params == 475_735 and info.kind == "ours"  # DESIGN.md section 1
    assert info.macs is not None and info.macs > 0 and info.onnx_bytes > 0
    backends = {(r.backend, r.threads) for r in smoke_none.latencies}
    assert backends == {("torch", 1), ("ort", 1), ("e2e", 1)}
    for row in smoke_none.latencies:
        assert row.size == "160x160" and row.runs == 3
        assert 0 < row.min_ms <= row.median_ms <= row.max_ms
    assert smoke_none.latency("featherface_none", "e2e", 1).detections is not None
    assert smoke_none.latency("featherface_none", "ort", 1).detections is None
    # peers off, yunet absent: noted, and no odconv -> no profile, no ratio vs RetinaFace
    assert any("yunet_n skipped" in n for n in smoke_none.notes)
    assert any("profile skipped" in n for n in smoke_none.notes)
    assert smoke_none.profile == []
    assert json.loads(json.dumps(smoke_none.to_dict()))["models"][0]["params"] == 475_735


def test_ratios_come_from_measured_numbers(smoke_none: BenchmarkResult) -> None:
    (ratio,) = smoke_none.ratios
    e2e = smoke_none.latency("featherface_none", "e2e", 1).median_ms
    bare = smoke_none.latency("featherface_none", "ort", 1).median_ms
    assert ratio.value == pytest.approx(e2e / bare)
    assert ratio.goal == 1.1 and ratio.met == (e2e / bare <= 1.1)
    assert smoke_none.to_dict()["ratios"][0]["met"] == ratio.met


def test_markdown_table(smoke_none: BenchmarkResult) -> None:
    text = format_markdown(smoke_none)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert header.split("|")[1:-1] == [" model ", " params ", " MACs (G) ", " ONNX (KB) ", " torch 1t (ms) ",
                                       " ort 1t (ms) ", " e2e 1t (ms) ", " e2e dets "]
    row = next(line for line in lines if line.startswith("| featherface_none"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "475,735"
    assert float(cells[5]) == pytest.approx(smoke_none.latency("featherface_none", "ort", 1).median_ms, abs=0.006)
    assert "end-to-end / bare" in text and "noise" in text


def test_full_smoke_with_peers_and_profile(weights_dir: Path) -> None:
    yunet = weights_dir / "peers" / "yunet_n_dynamic.onnx"
    if not yunet.is_file():
        pytest.skip(f"{yunet} is absent")
    try:
        from featherface.peers import retinaface_weights

        retinaface_weights()
        have_retina = True
    except ImportError:
        have_retina = False
    result = run_benchmark(BenchmarkConfig(models=("featherface_odconv",), yunet_path=str(yunet), smoke=True))
    names = [m.name for m in result.models]
    assert names[0] == "featherface_odconv" and "yunet_n" in names
    yunet_info = next(m for m in result.models if m.name == "yunet_n")
    assert yunet_info.kind == "peer" and yunet_info.macs is None
    assert yunet_info.params == onnx_parameter_count(yunet)
    assert result.latency("yunet_n", "torch", 1) is None and result.latency("yunet_n", "e2e", 1) is not None
    # the profile has op types, the big ones of this graph among them, sorted by time
    ops = [p.op_type for p in result.profile]
    assert 0 < len(ops) <= 10 and "Conv" in ops and "DeformConv" in ops
    assert [p.total_ms for p in result.profile] == sorted((p.total_ms for p in result.profile), reverse=True)
    assert all(0 < p.share <= 1 and p.nodes >= 1 for p in result.profile)
    if have_retina:
        retina = next(m for m in result.models if m.name == "retinaface_mnet025")
        assert retina.params == 423_264  # batch norm folded, as documented in featherface.peers
        vs = next(r for r in result.ratios if "retinaface ORT" in r.name)
        ours = result.latency("featherface_odconv", "ort", 1).median_ms
        peer = result.latency("retinaface_mnet025", "ort", 1).median_ms
        assert vs.value == pytest.approx(ours / peer)
    else:
        assert any("retinaface_mnet025 skipped" in n for n in result.notes)
    assert "ORT per-operator profile" in format_markdown(result)


def test_original_size_row(widerface_dir: Path) -> None:
    images = sorted((widerface_dir / "val" / "images").glob("*/*.jpg"))[:2]
    if len(images) < 2:
        pytest.skip("fewer than 2 val images")
    result = run_benchmark(BenchmarkConfig(models=("featherface_none",), retinaface=False, images=images,
                                           torch_eager=False, profile=False, smoke=True))
    row = result.latency("featherface_none", "e2e_original", 1)
    assert row is not None and row.size == "original" and row.median_ms > 0
    assert result.latency("featherface_none", "torch", 1) is None


def test_missing_yunet_is_a_note(tmp_path: Path) -> None:
    result = run_benchmark(BenchmarkConfig(models=("featherface_none",), retinaface=False, torch_eager=False,
                                           yunet_path=str(tmp_path / "nope.onnx"), profile=False, smoke=True))
    assert any("nope.onnx not found" in n for n in result.notes)
    assert [m.name for m in result.models] == ["featherface_none"]


def test_time_callable_median() -> None:
    calls = []
    median, low, high, last = time_callable(lambda: calls.append(1) or len(calls), runs=5, warmup=2)
    assert len(calls) == 7 and last == 7
    assert 0 <= low <= median <= high


def test_ratio_goal_and_markdown_from_handmade_result() -> None:
    rows = [LatencyRow("a", "ort", 1, "640x640", 10.0, 9.0, 11.0, 5),
            LatencyRow("a", "e2e", 1, "640x640", 12.5, 12.0, 13.0, 5, 3)]
    result = BenchmarkResult({"input_size": [640, 640], "runs": 5, "warmup": 1},
                             {"torch": "t", "onnxruntime": "o", "cpu_count": 2, "seconds": 1.0},
                             [ModelInfo("a", "ours", 1234, 2_000_000_000, 2048, "x")], rows[::-1],
                             [Ratio("a e2e/bare", "a e2e 1t", "a ort 1t", 1.25, 1.1)], [], [])
    assert not result.ratios[0].met
    text = format_markdown(result)
    assert "| a | 1,234 | 2.000 | 2 | 10.00 | 12.50 | 3 |" in text
    assert "| a e2e/bare | 1.250 | <= 1.1 | no |" in text


@pytest.mark.parametrize("bad", [{"threads": (0,)}, {"input_size": (16, 16)}, {"runs": 0},
                                 {"weights": {"featherface_cbam": "x.pth"}, "models": ("featherface_none",)}])
def test_bad_config(bad: dict) -> None:
    with pytest.raises(ValueError, match="BenchmarkConfig"):
        BenchmarkConfig(**bad)


def test_onnx_parameter_count_by_hand(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((4,), np.float32), "b")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")  # not a parameter
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"]), helper.make_node("Reshape", ["y", "shape"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w, b, shape])
    model = helper.make_model(graph)
    assert onnx_parameter_count(model.SerializeToString()) == 4 * 27 + 4
    onnx.save(model, tmp_path / "m.onnx")
    assert onnx_parameter_count(tmp_path / "m.onnx") == 112
