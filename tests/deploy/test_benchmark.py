"""Tests of featherface.deploy.benchmark: smoke runs (tiny sizes and counts), result structure, markdown, ratios, profile."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from featherface.deploy.benchmark import BenchmarkConfig, run_benchmark
from featherface.deploy.benchmark_result import BenchmarkResult, LatencyRow, ModelInfo, Ratio, format_markdown
from featherface.deploy.profile import onnx_parameter_count
from featherface.deploy.timing import time_callable, time_interleaved


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
    # peers off, yunet absent: noted, no ratio vs RetinaFace; the profile is of our one export
    assert any("yunet_n skipped" in n for n in smoke_none.notes)
    assert any("no ratios against retinaface_mnet025" in n for n in smoke_none.notes)
    assert {p.model for p in smoke_none.profile} == {"featherface_none"} and smoke_none.accuracy == []
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
    speed = lines.index(next(line for line in lines if line.startswith("| model")))
    assert lines[speed] == "| model | ONNX Runtime 1t (ms) | x retinaface_mnet025 |"  # no AP measured
    assert lines[speed + 2].startswith("| featherface_none | ") and lines[speed + 2].endswith(" | - |")
    start = lines.index(next(line for line in lines if line.startswith("| model | params")))
    header = lines[start]
    assert header.split("|")[1:-1] == [" model ", " params ", " MACs (G) ", " ONNX (KB) ", " torch 1t (ms) ",
                                       " ort 1t (ms) ", " e2e 1t (ms) ", " e2e dets "]
    row = next(line for line in lines[start:] if line.startswith("| featherface_none"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "475,735"
    assert float(cells[5]) == pytest.approx(smoke_none.latency("featherface_none", "ort", 1).median_ms, abs=0.006)
    assert "end-to-end / bare" in text and "noise" in text
    assert "| op type | featherface_none |" in text


def test_full_smoke_with_peers_and_profile(weights_dir: Path) -> None:
    yunet = weights_dir / "peers" / "yunet_n_dynamic.onnx"
    if not yunet.is_file():
        pytest.skip(f"{yunet} is absent")
    try:
        from featherface.inference.peers import retinaface_weights

        retinaface_weights()
        have_retina = True
    except ImportError:
        have_retina = False
    result = run_benchmark(BenchmarkConfig(models=("featherface_odconv",), yunet_path=str(yunet), smoke=True,
                                           compare_unfused=True))
    names = [m.name for m in result.models]
    assert names[:2] == ["featherface_odconv", "featherface_odconv (unfused)"] and "yunet_n" in names
    yunet_info = next(m for m in result.models if m.name == "yunet_n")
    assert yunet_info.kind == "peer" and yunet_info.macs is None
    assert yunet_info.params == onnx_parameter_count(yunet)
    assert result.latency("yunet_n", "torch", 1) is None and result.latency("yunet_n", "e2e", 1) is not None
    # the unfused export is timed bare only, beside the fused one, and their ratio is reported
    assert result.latency("featherface_odconv (unfused)", "ort", 1) is not None
    assert result.latency("featherface_odconv (unfused)", "e2e", 1) is None
    speedup = result.ratio("featherface_odconv ort 1t", "featherface_odconv (unfused) ort 1t")
    assert speedup is not None and speedup.goal == 0.85 and speedup.value > 0
    # a profile per export: op types, the big ones of these graphs among them, sorted by time within a model
    fused = [p for p in result.profile if p.model == "featherface_odconv"]
    unfused = [p for p in result.profile if p.model == "featherface_odconv (unfused)"]
    for rows in (fused, unfused):
        ops = [p.op_type for p in rows]
        assert 0 < len(ops) <= 10 and "Conv" in ops and "DeformConv" in ops
        assert [p.total_ms for p in rows] == sorted((p.total_ms for p in rows), reverse=True)
        assert all(0 < p.share <= 1 and p.nodes >= 1 for p in rows)
    assert "BatchNormalization" not in [p.op_type for p in fused]
    if have_retina:
        retina = next(m for m in result.models if m.name == "retinaface_mnet025")
        assert retina.params == 423_264  # batch norm folded, as documented in featherface.inference.peers
        for name in ("featherface_odconv", "yunet_n"):
            vs = result.ratio(f"{name} ort 1t", "retinaface_mnet025 ort 1t")
            assert vs is not None and vs.goal == 1.0
            ours = result.latency(name, "ort", 1)
            peer = result.latency("retinaface_mnet025", "ort", 1)
            # the median of per-round ratios lies within the extremes of the round ratios
            assert ours.min_ms / peer.max_ms <= vs.value <= ours.max_ms / peer.min_ms
        assert "x retinaface_mnet025" in format_markdown(result)
    else:
        assert any("retinaface_mnet025 skipped" in n for n in result.notes)
    assert "ORT per-operator profile" in format_markdown(result)


def test_interleaved_timing_rotates_and_pairs_rounds() -> None:
    calls: list[str] = []

    def make(name: str, sleep: float):
        def fn() -> None:
            calls.append(name)
            time.sleep(sleep)
        return fn

    times = time_interleaved({"a": make("a", 0.002), "b": make("b", 0.0)}, rounds=4, warmup=1)
    assert calls[:2] == ["a", "b"]  # warm-up
    assert calls[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # each round once each, order rotating
    assert len(times["a"]["wall"]) == len(times["b"]["cpu"]) == 4
    assert all(a > b + 1.5 for a, b in zip(times["a"]["wall"], times["b"]["wall"]))
    # sleeping costs wall time, not CPU time
    assert all(cpu < wall - 1.0 for cpu, wall in zip(times["a"]["cpu"], times["a"]["wall"]))


def test_accuracy_smoke(widerface_dir: Path, v1_weights: Path) -> None:
    """AP column: a trained model (V1 checkpoint) on 3 val images; random-init models get a note, no AP."""
    result = run_benchmark(BenchmarkConfig(
        models=("featherface_v1", "featherface_none"), weights={"featherface_v1": str(v1_weights)},
        retinaface=False, torch_eager=False, profile=False, smoke=True,
        ap_images=str(widerface_dir / "val" / "images"), ap_gt=str(widerface_dir / "val")))
    (acc,) = result.accuracy
    assert acc.model == "featherface_v1" and acc.images == 3 and acc.num_images_total == 3226  # the full val .mat
    assert all(0.0 <= v <= 1.0 for v in (acc.easy, acc.medium, acc.hard)) and acc.hard > 0.1
    assert any("featherface_none: no AP" in n for n in result.notes)
    text = format_markdown(result)
    row = next(line for line in text.splitlines() if line.startswith("| featherface_v1 |") and "AP" not in line)
    assert f"{100 * acc.hard:.2f}" in row
    assert json.loads(json.dumps(result.to_dict()))["accuracy"][0]["model"] == "featherface_v1"


def test_openvino_backend_smoke() -> None:
    pytest.importorskip("openvino", reason="the OpenVINO backend is an optional extra: "
                        "pip install 'featherface[openvino]'")
    result = run_benchmark(BenchmarkConfig(models=("featherface_odconv_ssh",), torch_eager=False, profile=False,
                                           smoke=True, backends=("ort", "openvino")))
    assert result.latency("featherface_odconv_ssh", "openvino", 1) is not None
    assert result.environment["openvino"]
    if result.latency("retinaface_mnet025", "openvino", 1) is not None:  # peers in the same runtime
        assert result.ratio("featherface_odconv_ssh openvino 1t", "retinaface_mnet025 openvino 1t") is not None
        assert "OpenVINO 1t (ms)" in format_markdown(result)


def test_openvino_missing_is_a_note(monkeypatch) -> None:
    import featherface.deploy.benchmark as bench

    monkeypatch.setattr(bench, "openvino_available", lambda: False)
    result = run_benchmark(BenchmarkConfig(models=("featherface_none",), retinaface=False, torch_eager=False,
                                           profile=False, smoke=True, backends=("ort", "openvino")))
    assert any("OpenVINO skipped" in n for n in result.notes)
    assert {r.backend for r in result.latencies} == {"ort", "e2e"}


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
                                 {"weights": {"featherface_cbam": "x.pth"}, "models": ("featherface_none",)},
                                 {"backends": ("tensorrt",)}, {"ap_images": "val/images"}, {"ap_limit": 0},
                                 {"clock": "tsc"}])
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


def test_cli_benchmark_with_ap_and_unfused(widerface_dir: Path, v1_weights: Path, tmp_path: Path, capsys) -> None:
    from featherface.cli import main

    out = tmp_path / "bench.json"
    code = main(["benchmark", "--models", "featherface_v1", "--weights", f"featherface_v1={v1_weights}",
                 "--no-retinaface", "--no-torch", "--no-profile", "--smoke", "--compare-unfused",
                 "--ap-images", str(widerface_dir / "val" / "images"), "--ap-gt", str(widerface_dir / "val"),
                 "--ap-limit", "2", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [m["name"] for m in result["models"]] == ["featherface_v1", "featherface_v1 (unfused)"]
    assert [(a["model"], a["images"]) for a in result["accuracy"]] == [("featherface_v1", 2)]
    assert any(r["numerator"] == "featherface_v1 ort 1t" and r["denominator"] == "featherface_v1 (unfused) ort 1t"
               for r in result["ratios"])
    assert "AP hard" in capsys.readouterr().out


def test_cpu_clock_ratios() -> None:
    result = run_benchmark(BenchmarkConfig(models=("featherface_plain_ssh",), torch_eager=False, profile=False,
                                           smoke=True, clock="cpu"))
    row = result.latency("featherface_plain_ssh", "ort", 1)
    assert row.cpu_median_ms is not None and 0 < row.cpu_median_ms
    if result.latency("retinaface_mnet025", "ort", 1) is not None:
        vs = result.ratio("featherface_plain_ssh ort 1t", "retinaface_mnet025 ort 1t")
        assert "CPU time" in vs.name
        assert "ONNX Runtime 1t (CPU ms)" in format_markdown(result)


def test_end_to_end_runs_each_detector_as_it_ships() -> None:
    """Ours vote (the library's default post-processing), the peers keep their authors' plain NMS."""
    from featherface.deploy.benchmark import _Entry, _shipped_settings

    ours = _shipped_settings(_Entry("featherface_v1", "ours", b"", (0.0, 0.0, 0.0), None), 0.3)
    peer = _shipped_settings(_Entry("yunet_n", "peer", b"", (0.0, 0.0, 0.0), None), 0.3)
    assert (ours.box_voting, ours.score_threshold) == (True, 0.3)
    assert (peer.box_voting, peer.score_threshold) == (False, 0.3)
