"""The pipeline report: every section from synthetic stage outputs, 'not run' sections, named errors, provenance."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from featherface.report import (
    PARITY_TOLERANCE,
    PLOT_FILES,
    ReportError,
    load_results,
    load_stage,
    read_metrics_csv,
    render_markdown,
    write_report,
)
from featherface.report.__main__ import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _dump(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def _record(folder: Path, stage: str, params: dict[str, Any], inputs: dict[str, str], dirty: bool = False) -> None:
    _dump(folder / "provenance.json", {
        "stage": stage, "created": f"2026-01-02T03:04:0{len(stage) % 10}+00:00",
        "code": {"package": "0.1.0", "git_commit": COMMIT, "git_dirty": dirty}, "python": "3.11.7",
        "params": params, "inputs_sha256": inputs,
    })


def _metrics(path: Path, epochs: int, entropy: bool = True) -> None:
    header = ["epoch", "step", "lr", "loss", "loc", "cls", "landm", "images_per_s", "wall_s", "temperature"]
    if entropy:
        header += ["entropy.spatial.attention.c3.conv", "entropy.channel.attention.c3.conv"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for e in range(1, epochs + 1):
            row = [e, 8 * e, 1e-3 / e, 40.0 - e, 5.0 - 0.1 * e, 10.0 - e, 20.0, 3.5, 18.0 * e, 30.0 - e]
            if entropy:
                row += [0.69 - 0.01 * e, ""]  # an empty cell: not measured that epoch
            writer.writerow(row)


def make_results(root: Path) -> Path:
    """A project folder with synthetic outputs and provenance records of every stage; returns results/."""
    results = root / "results"
    data = root / "data"
    _record(data, "download", {"data": {"source": "local", "val_images": 4}}, {str(data / "manifest.json"): "d" * 64})
    _dump(results / "verify" / "report.json", {
        "ok": True, "counts": {"train_images": 64, "val_faces": 7358},
        "problems": [], "warnings": [{"kind": "manifest", "path": "widerface/x", "message": "not listed"}],
        "checksums": {"manifest": {"path": "manifest.json", "files_checked": 305, "mismatches": 0},
                      "official": {"widerface/val/wider_face_val.mat": "ok"}},
        "skipped": [], "elapsed_s": 0.8,
    })
    _record(results / "verify", "verify", {"verify": {"decode_images": True}}, {str(data / "manifest.json"): "a" * 64})
    _dump(results / "validate" / "report.json", {
        "ok": True, "param_budget": 490000,
        "models": [{"name": "featherface_none", "parameters": 475735, "within_budget": True, "macs_640": 1032828400,
                    "shapes_ok": True, "problems": []}],
        "odconv_golden": [{"name": "a_k3_kn4", "max_abs_diff": {"eval_output": 1.5e-07}, "ok": True, "error": None}],
        "golden_skipped": None,
    })
    _record(results / "validate", "validate", {"validate": {"param_budget": 490000}}, {})
    (results / "train").mkdir(parents=True)
    _metrics(results / "train" / "metrics.csv", 3)
    _record(results / "train", "train", {"train": {"model": "featherface_odconv", "epochs": 3}},
            {str(data / "weights" / "mobilenet.tar"): "b" * 64}, dirty=True)
    _dump(results / "predict" / "summary.json", {"images": 4, "skipped": {}, "detections": 321,
                                                 "seconds_per_image": 0.25, "device": "cpu"})
    _record(results / "predict", "predict", {"predict": {"model": "featherface_v1"}}, {"/elsewhere/v1.pth": "c" * 64})
    _dump(results / "score" / "ap.json", {
        "ap": {"easy": 0.8971922, "medium": 0.5, "hard": 0.25}, "num_images": 4, "num_images_total": 3226,
        "subset": True, "num_faces": {"easy": 3, "medium": 5, "hard": 9},
        "num_faces_total": {"easy": 7211, "medium": 13319, "hard": 31958}, "num_predictions": 321, "iou_thresh": 0.5,
        "pr_curves": {s: {"thresholds": [0.9, 0.5], "recall": [0.1, 0.6], "precision": [1.0, None]}
                      for s in ("easy", "medium", "hard")},
    })
    _record(results / "score", "score", {"score": {"iou_threshold": 0.5}, "predict": {"model": "featherface_v1"}}, {})
    (results / "score" / "pr_curves.png").write_bytes(PNG_MAGIC + b"score stage")
    _dump(results / "export" / "summary.json", {
        "path": str(results / "export" / "featherface_v1.onnx"), "format": "onnx", "bytes": 2048 * 1024,
        "model": "featherface_v1", "weights": "data/weights/v1.pth",
        "options": {"input_size": [640, 640], "opset": 19, "dynamic": True},
        "parity": {"loc": 2.83e-05, "logits": 1.7e-05, "landmarks": 7.65e-05},
        "parity_inputs": [[1, 640, 640], [2, 481, 353]],
    })
    _record(results / "export", "export", {"export": {"opset": 19}}, {})
    _dump(results / "benchmark" / "latency.json", {
        "config": {"input_size": [640, 640], "runs": 10, "warmup": 2},
        "environment": {"torch": "2.x", "onnxruntime": "1.x", "cpu_count": 2, "processor": "unknown",
                        "machine": "x86_64"},
        "models": [{"name": "featherface_v1", "kind": "ours", "params": 489015, "macs": 1073000000,
                    "onnx_bytes": 2071149, "source": "v1.pth"}],
        "latencies": [{"model": "featherface_v1", "backend": "ort", "threads": 1, "size": "640x640",
                       "median_ms": 33.81, "min_ms": 33.0, "max_ms": 35.0, "runs": 10, "detections": None},
                      {"model": "featherface_v1", "backend": "e2e", "threads": 1, "size": "640x640",
                       "median_ms": 36.48, "min_ms": 36.0, "max_ms": 37.0, "runs": 10, "detections": 0}],
        "ratios": [{"name": "featherface_v1 end-to-end / bare ORT 1 thread(s)", "numerator": "a", "denominator": "b",
                    "value": 1.079, "goal": 1.1, "met": True}],
        "profile": [], "notes": ["a note from the benchmark"],
    })
    _record(results / "benchmark", "benchmark", {"benchmark": {"runs": 10}}, {})
    _dump(results / "references" / "references.json", {"iou_threshold": 0.5, "detectors": [
        {"name": "featherface_v1", "model": "featherface_v1", "peer": "", "weights": str(data / "weights" / "v1.pth"),
         "ap": {"easy": 0.9, "medium": 0.8, "hard": 0.5}, "num_images": 4, "num_images_total": 3226,
         "num_faces": {"easy": 3, "medium": 5, "hard": 9}, "detections": 100, "seconds_per_image": 0.2},
        {"name": "yunet_n", "model": "", "peer": "yunet", "weights": "/elsewhere/yunet.onnx",
         "ap": {"easy": 0.7, "medium": 0.6, "hard": None}, "num_images": 3, "num_images_total": 3226},
    ]})
    _record(results / "references", "references", {"references": {"detectors": []}}, {})
    return results


def _section(text: str, number: int) -> str:
    """The body of section ``## number.`` of the report."""
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return make_results(tmp_path)


def test_full_report_has_every_section_its_numbers_plots_and_provenance(results: Path) -> None:
    out = results / "report"
    path = write_report(results, out, data_dir=results.parent / "data")
    text = path.read_text()
    assert path == out / "report.md"
    verify, validate, train, accuracy, export, latency = (_section(text, i) for i in range(1, 7))
    assert "**OK**" in verify and "| val_faces | 7,358 |" in verify
    assert "ok, 305 files checked" in verify and "| `widerface/val/wider_face_val.mat` (official) | ok |" in verify
    assert "not listed" in verify
    # 490,000 - 475,735 = 14,265 of headroom; 1,032,828,400 MACs = 1.033 G
    assert "| `featherface_none` | 475,735 | +14,265 | yes | 1.033 | ok |" in validate
    assert "1 of 1 files match, max |diff| 1.50e-07" in validate
    assert "`featherface_odconv` trained for 3 epochs" in train and "final loss 37" in train  # 40 - 3
    assert "![Loss terms per epoch](training_curves.png)" in train
    assert "![Attention entropy per epoch](attention_entropy.png)" in train
    # first and last epoch of the spatial entropy: 0.69 - 0.01 and 0.69 - 0.03
    assert "| spatial | `attention.c3.conv` | 0.68000 | 0.66000 |" in train
    assert "| channel | `attention.c3.conv` | n/a | n/a |" in train
    assert "| Easy | 89.72 | 3 of 7,211 |" in accuracy and "| Hard | 25.00 | 9 of 31,958 |" in accuracy
    assert "**4 of the 3226 val images took part**" in accuracy and "`featherface_v1`" in accuracy
    assert "Predictions: 4 images, 321 detections, 0.250 s per image on cpu." in accuracy
    assert "Parity with eager PyTorch: **OK** (max abs difference 7.65e-05" in export
    assert "| `loc` | 2.83e-05 | yes |" in export and "2048 KB" in export and "1x640x640, 2x481x353" in export
    assert "| `featherface_v1` | 489,015 | 1.073 | 2023 | 33.81 | 36.48 |" in latency
    assert "ORT fp32, 1 thread" in latency and "(x86_64)" in latency and "- a note from the benchmark" in latency
    for key in PLOT_FILES:
        assert (out / PLOT_FILES[key]).read_bytes()[:8] == PNG_MAGIC


def test_every_section_names_its_stages_parameters_and_input_checksums(results: Path) -> None:
    text = write_report(results, results / "report", data_dir=results.parent / "data").read_text()
    sections = {1: ("download", "verify"), 2: ("validate",), 3: ("train",), 4: ("predict", "score"), 5: ("export",),
                6: ("benchmark",)}
    for number, stages in sections.items():
        body = _section(text, number)
        for stage in stages:
            assert f"*Provenance of `{stage}`* (`" in body, (number, stage)
            assert f"stage `{stage}`, created 2026-01-02T03:04:0{len(stage) % 10}+00:00" in body
    assert f"git `{COMMIT}` (clean tree), featherface 0.1.0, Python 3.11.7" in _section(text, 2)
    assert "(dirty tree: uncommitted changes)" in _section(text, 3)
    # parameters as YAML, checksums with paths relative to the project folder when inside it
    assert "verify: {decode_images: true}" in _section(text, 1)
    assert "train: {model: featherface_odconv, epochs: 3}" in _section(text, 3)
    assert f"| `data/manifest.json` | `{'a' * 64}` |" in _section(text, 1)
    assert f"| `data/weights/mobilenet.tar` | `{'b' * 64}` |" in _section(text, 3)
    assert f"| `/elsewhere/v1.pth` | `{'c' * 64}` |" in _section(text, 4)
    assert "Input checksums of `validate`: none recorded." in _section(text, 2)
    # the overview table: status and short commit per stage
    assert "| 4. Accuracy on WIDER FACE val | `score` | AP 89.72 / 50.00 / 25.00 |" in text
    assert f"| 3. Training | `train` | 3 epochs | 2026-01-02T03:04:05+00:00 | `{COMMIT[:10]}` (dirty) |" in text


def test_report_records_its_own_provenance(results: Path) -> None:
    out = results / "report"
    write_report(results, out, data_dir=results.parent / "data")
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == "report"
    inputs = record["inputs_sha256"]
    ap = results / "score" / "ap.json"
    assert inputs[str(ap)] == hashlib.sha256(ap.read_bytes()).hexdigest()
    assert str(results / "train" / "metrics.csv") in inputs and str(results / "export" / "provenance.json") in inputs
    assert record["stages_run"] == ["download", "verify", "validate", "train", "predict", "score", "references",
                                    "export", "benchmark"]


def test_accuracy_compares_the_trained_model_with_the_references_on_the_same_images(results: Path) -> None:
    text = write_report(results, results / "report", data_dir=results.parent / "data").read_text()
    accuracy = _section(text, 4)
    assert "| `featherface_v1` (this pipeline's model) | 89.72 | 50.00 | 25.00 | 4 | `score` stage |" in accuracy
    assert ("| `featherface_v1` | 90.00 | 80.00 | 50.00 | 4 | model `featherface_v1`, `data/weights/v1.pth` |"
            in accuracy)
    # a reference scored on other images is flagged; a setting without a value is n/a
    assert "| `yunet_n` | 70.00 | 60.00 | n/a | 3 (**not the same images**) | peer `yunet`, `/elsewhere/yunet.onnx` |" \
        in accuracy
    assert "*Provenance of `references`* (`results/references/provenance.json`)" in accuracy
    assert "| 4. Accuracy on WIDER FACE val | `references` | 2 detectors |" in text

    (results / "references" / "references.json").unlink()
    accuracy = _section(write_report(results, results / "report").read_text(), 4)
    assert "**Compared with**: nothing (the `references` stage has not run" in accuracy
    assert "| Easy | 89.72 |" in accuracy


def test_a_missing_stage_gives_its_not_run_section_and_drops_stale_plots(results: Path) -> None:
    out = results / "report"
    write_report(results, out)
    assert (out / PLOT_FILES["training"]).is_file()
    for name in ("metrics.csv", "provenance.json"):
        (results / "train" / name).unlink()
    text = write_report(results, out).read_text()
    train = _section(text, 3)
    assert "**Not run**: stage `train` has no output (`results/train/metrics.csv` absent)." in train
    assert "*Provenance of `train`: no record (`results/train/provenance.json` is absent).*" in train
    assert not (out / PLOT_FILES["training"]).exists() and not (out / PLOT_FILES["entropy"]).exists()
    assert "| 3. Training | `train` | not run | n/a | n/a |" in text
    assert "| Easy | 89.72 |" in _section(text, 4)  # the other sections are unaffected
    assert "download" not in _section(text, 1)  # no data folder given: the download stage is left out


def test_empty_results_folder_gives_a_report_of_stages_not_run(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    text = write_report(tmp_path / "results", tmp_path / "out").read_text()
    assert text.count("**Not run**") == 7  # verify, validate, train, predict, score, export, benchmark
    assert not any((tmp_path / "out" / f).exists() for f in PLOT_FILES.values())
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        write_report(tmp_path / "nowhere", tmp_path / "out")


def test_render_markdown_is_pure_and_deterministic(results: Path) -> None:
    stages = load_results(results)
    before = sorted(p.name for p in results.rglob("*"))
    one = render_markdown(stages, {"training": "t.png"}, root=results.parent, generated="2026-01-01T00:00:00+00:00")
    two = render_markdown(stages, {"training": "t.png"}, root=results.parent, generated="2026-01-01T00:00:00+00:00")
    assert one == two and "Generated 2026-01-01T00:00:00+00:00." in one and "![Loss terms per epoch](t.png)" in one
    assert "attention_entropy.png" not in one  # only the plots it is told about are linked
    assert sorted(p.name for p in results.rglob("*")) == before


def test_malformed_json_names_the_file_and_line(results: Path) -> None:
    path = results / "score" / "ap.json"
    path.write_text('{"ap": {"easy": 0.5,\n  oops}')
    with pytest.raises(ReportError, match=r"score/ap\.json: not valid JSON \(line 2, column 3\)"):
        write_report(results, results / "report")
    assert main(["--results", str(results), "--out", str(results / "report")]) == 2


def test_missing_or_mistyped_keys_name_the_file_and_key(results: Path) -> None:
    path = results / "validate" / "report.json"
    data = json.loads(path.read_text())
    del data["models"][0]["parameters"]
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match=r"validate/report\.json: models\[0\]: key 'parameters' is missing"):
        load_stage(results / "validate")
    verify = results / "verify" / "report.json"
    verify.write_text(json.dumps({"ok": "yes", "counts": {}, "checksums": {}}))
    with pytest.raises(ReportError, match=r"verify/report\.json: key 'ok' should be true or false, found \"yes\""):
        load_stage(results / "verify")
    record = results / "export" / "provenance.json"
    record.write_text(json.dumps({"created": "x"}))
    with pytest.raises(ReportError, match=r"export/provenance\.json: key 'stage' is missing"):
        load_stage(results / "export")


def test_metrics_csv_errors_name_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss\n1,2.5\n2,abc\n")
    with pytest.raises(ReportError, match=r"metrics\.csv:3: column 'loss': 'abc' is not a number"):
        read_metrics_csv(path)
    path.write_text("epoch,loss\n1,2.5,7\n")
    with pytest.raises(ReportError, match=r"metrics\.csv:2: the row has more fields than the header"):
        read_metrics_csv(path)
    path.write_text("step,loss\n1,2\n")
    with pytest.raises(ReportError, match=r"metrics\.csv:1: no 'epoch' column"):
        read_metrics_csv(path)
    path.write_text("epoch,loss\n1,\n2,0.5\n")
    columns = read_metrics_csv(path)
    assert columns["epoch"] == [1.0, 2.0] and math.isnan(columns["loss"][0]) and columns["loss"][1] == 0.5


def test_long_training_tables_show_evenly_spaced_epochs_and_no_entropy_note(results: Path) -> None:
    _metrics(results / "train" / "metrics.csv", 30, entropy=False)
    text = write_report(results, results / "report").read_text()
    train = _section(text, 3)
    assert "(12 of 30 epochs shown; all are in `metrics.csv`.)" in train
    rows = [line for line in train.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert len(rows) == 12 and rows[0].startswith("| 1 |") and rows[-1].startswith("| 30 |")
    assert "No attention-entropy columns" in train
    assert not (results / "report" / PLOT_FILES["entropy"]).exists()


def test_failed_parity_and_pr_curve_fallback(results: Path) -> None:
    summary = results / "export" / "summary.json"
    data = json.loads(summary.read_text())
    data["parity"]["logits"] = 0.5
    summary.write_text(json.dumps(data))
    ap = results / "score" / "ap.json"
    data = json.loads(ap.read_text())
    del data["pr_curves"]
    ap.write_text(json.dumps(data))
    png = PNG_MAGIC + b"stand-in"
    (results / "score" / "pr_curves.png").write_bytes(png)
    text = write_report(results, results / "report").read_text()
    export = _section(text, 5)
    assert "Parity with eager PyTorch: **FAILED** (max abs difference 5.00e-01" in export
    assert "| `logits` | 5.00e-01 | **no** |" in export
    assert "| `export` | parity FAILED (5.0e-01) |" in text
    assert (results / "report" / "pr_curves.png").read_bytes() == png  # copied from the score stage
    assert "![Precision-recall curves](pr_curves.png)" in text


def test_parity_tolerance_is_the_export_check_tolerance() -> None:
    from featherface.deploy.contract import CHECK_ATOL

    assert PARITY_TOLERANCE == CHECK_ATOL


def test_main_writes_the_report_and_has_no_record_form(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = results / "report"
    assert main(["--results", str(results), "--out", str(out), "--data", str(results.parent / "data")]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.md'}"
    text = (out / "report.md").read_text()
    assert "stage `export`, created" in _section(text, 5) and "export: {opset: 19}" in _section(text, 5)
    assert "*Provenance of `download`*" in _section(text, 1)  # --data given: the download record is read
    assert main(["--results", str(results.parent / "nowhere")]) == 2
    assert "featherface report: error: results folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the provenance-writing 'record' form was removed
        main(["record", "export", "--dir", str(results / "export")])
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------- attention analysis
def _sigmoid(mean: float, between: float, entropy: float) -> dict[str, Any]:
    return {"elements": 9, "mean": [mean] * 9, "std": [between] * 9, "overall_mean": mean, "min": 0.1, "max": 0.9,
            "between_image_std": between, "between_image_rel": between / mean, "within_image_std": 0.05,
            "entropy": entropy, "entropy_max": 0.693147}


def _attention_summary() -> dict[str, Any]:
    """What `featherface attention` writes for two modules: one with 4 kernels, one with 2."""
    def module(name: str, n: int, kernel: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in_channels": 52, "out_channels": 52, "kernel_size": 3, "groups": 52, "kernel_num": n,
                "stride": 1, "temperature": 1.0,
                "heads": {"channel": _sigmoid(0.5, 0.05, 0.68), "filter": {"skipped": "depthwise conv"},
                          "spatial": _sigmoid(0.48, 0.09, 0.66), "kernel": kernel}}
    four = {"elements": 4, "mean": [0.2, 0.45, 0.2, 0.15], "overall_mean": 0.25, "between_image_std": 0.1,
            "entropy": 1.15, "entropy_max": math.log(4), "argmax_frequency": [0.0, 0.99, 0.01, 0.0]}
    two = {"elements": 2, "mean": [0.5, 0.5], "overall_mean": 0.5, "between_image_std": 0.0, "entropy": 0.693,
           "entropy_max": math.log(2), "argmax_frequency": [1.0, 0.0]}
    return {"model": "featherface_odconv4", "weights": "w.pt", "images": 10, "long_side": 640, "criterion_nats": 1.0,
            "modules": [module("attention.p4.conv", 4, four), module("context.0.conv3x3.conv", 2, two)]}


def test_attention_analysis_section_only_when_its_output_exists(results: Path) -> None:
    out = results / "report"
    text = write_report(results, out).read_text()
    assert "ODConv attention analysis" not in text and "## 7." not in text  # optional: no "not run" section
    _dump(results / "attention" / "attention.json", _attention_summary())
    (results / "attention" / "kernel_selection.png").write_bytes(PNG_MAGIC + b"analysis")
    _record(results / "attention", "attention", {"attention": {"max_images": 10}}, {"w.pt": "d" * 64})
    text = write_report(results, out).read_text()
    section = _section(text, 7)
    assert section.startswith("\n## 7. ODConv attention analysis")
    assert "`featherface_odconv4` (weights `w.pt`): 2 ODConv2d modules, 10 images" in section
    assert ("| `attention.p4.conv` | 52→52, 3, 52, 4 | 0.500 ±0.050 (10.0%); H 0.680 | - | 0.480 ±0.090 (18.8%); "
            "H 0.660 | 0.200 / 0.450 / 0.200 / 0.150 ±0.100 | 1.150 (max 1.386, 83%) | no | #0 0%, #1 99%, #2 1%, "
            "#3 0% |") in section
    assert "| yes (trivially: max ln 2 = 0.693 < 1.0) |" in section
    assert "![Kernel selection per module](kernel_selection.png)" in section
    assert (out / "kernel_selection.png").read_bytes() == PNG_MAGIC + b"analysis"  # copied from the analysis
    assert "*Provenance of `attention`*" in section and "attention: {max_images: 10}" in section
    assert "| 7. ODConv attention analysis | `attention` | 2 ODConv2d modules, 10 images |" in text
    assert "## 1. Data verification" in text and "## 6. Latency" in text  # the other sections keep their numbers
    (results / "attention" / "attention.json").unlink()
    text = write_report(results, out).read_text()
    assert "## 7." not in text and not (out / "kernel_selection.png").exists()  # no stale plot


def test_malformed_attention_summary_is_named(results: Path) -> None:
    summary = _attention_summary()
    del summary["modules"][1]["heads"]["kernel"]["entropy_max"]
    _dump(results / "attention" / "attention.json", summary)
    with pytest.raises(ReportError, match=r"attention.json: modules\[1\]: heads.kernel: key 'entropy_max' is missing"):
        load_results(results)
