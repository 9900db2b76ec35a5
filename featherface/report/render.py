"""The report as Markdown: an overview table, one section per stage group, and each stage's provenance.

Every section ends with the provenance of the stages behind it: stage, creation time, git commit and dirty flag,
package and Python versions, the parameters and the sha256 of the inputs (and outputs). A stage that has not run
gives a section that says so. Pure functions of the :class:`~featherface.report.inputs.Stage` records
(:func:`render_markdown`, :func:`render_provenance`): they read and write nothing.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from featherface.analysis.render import TABLE_LEGEND, attention_table, criterion_note, run_description
from featherface.eval.results import percent
from featherface.report.inputs import OPTIONAL_STAGES, SETTINGS, STAGE_FILES, Stage, entropy_columns, predict_model

__all__ = ["MAX_EPOCH_ROWS", "PARITY_TOLERANCE", "REPORT_FILE", "render_markdown", "render_provenance"]

#: The report's file name inside its output folder.
REPORT_FILE = "report.md"
#: Max abs difference the export stage's built-in check accepts (``featherface.deploy.contract.CHECK_ATOL``; a test keeps
#: the two equal). A summary whose ``options`` name another ``atol`` is judged against that one.
PARITY_TOLERANCE = 1e-3
#: Rows of the per-epoch training table (evenly spaced epochs, the first and the last included).
MAX_EPOCH_ROWS = 12
_BACKEND_LABELS = {"torch": "PyTorch eager", "ort": "ORT fp32", "e2e": "end-to-end",
                   "e2e_original": "end-to-end, original size"}


def _int(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _display_path(path: str, root: Path | None) -> str:
    """``path`` relative to the project ``root`` when it lies inside it."""
    if root is not None:
        try:
            return str(Path(path).resolve().relative_to(root.resolve()))
        except (ValueError, OSError):
            pass
    return str(path)


def _code_line(record: Mapping[str, Any]) -> str:
    commit = record.get("git_commit")
    dirty = record.get("git_dirty")
    state = "unknown tree state" if dirty is None else ("dirty tree: uncommitted changes" if dirty else "clean tree")
    code = f"git `{commit}` ({state})" if commit else "no git commit recorded"
    parts = [code]
    if record.get("package"):
        parts.append(f"featherface {record['package']}")
    if record.get("python"):
        parts.append(f"Python {record['python']}")
    return ", ".join(parts)


def _yaml(data: Any) -> str:
    """``data`` as block YAML (keys in their order, short lists inline), for the provenance parameters."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110).rstrip()


def render_provenance(stage: Stage, root: Path | None = None) -> list[str]:
    """The provenance lines of one stage: stage, creation time, code version, parameters, input checksums."""
    record_path = _display_path(str(stage.directory / "provenance.json"), root)
    if stage.provenance is None:
        return [f"*Provenance of `{stage.name}`: no record (`{record_path}` is absent).*"]
    record = stage.provenance
    lines = [
        f"*Provenance of `{stage.name}`* (`{record_path}`): stage `{record['stage']}`, created "
        f"{record.get('created') or 'n/a'}, {_code_line(record)}."
    ]
    if record["stage"] != stage.name:
        lines[-1] += f" **Note: the record names stage `{record['stage']}`, not `{stage.name}`.**"
    if record["params"]:
        lines += ["", f"Parameters of `{stage.name}`:", "", "```yaml", _yaml(record["params"]), "```"]
    else:
        lines += ["", f"Parameters of `{stage.name}`: none recorded."]
    for key, label in (("inputs_sha256", "Inputs"), ("outputs_sha256", "Outputs")):
        digests = record[key]
        if digests:
            lines += ["", *_table([f"{label.lower()[:-1]} of `{stage.name}`", "sha256"],
                                  [(f"`{_display_path(p, root)}`", f"`{d}`") for p, d in digests.items()])]
        elif key == "inputs_sha256":
            lines += ["", f"Input checksums of `{stage.name}`: none recorded."]
    return lines


def _not_run(stage: Stage, root: Path | None) -> list[str]:
    files = ", ".join(f"`{_display_path(str(stage.directory / f), root)}`" for f in stage.missing)
    return [f"**Not run**: stage `{stage.name}` has no output ({files} absent)."]


def _section_verify(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    stage = stages["verify"]
    if not stage.ran:
        return _not_run(stage, root)
    report = stage.main()
    lines = [f"Verification: **{'OK' if report['ok'] else 'FAILED'}** "
             f"({len(report['problems'])} problems, {len(report['warnings'])} warnings"
             + (f", {report['elapsed_s']:.1f} s" if report["elapsed_s"] is not None else "") + ").", ""]
    lines += _table(["count", "value"], [(k, _int(v) if isinstance(v, int) else _fmt(v))
                                         for k, v in report["counts"].items()])
    lines += ["", "Checksums:", ""]
    rows = []
    manifest = report["manifest"]
    if manifest is not None:
        mism = manifest["mismatches"]
        status = "ok" if mism == 0 else ("n/a" if mism is None else f"{mism} mismatches")
        rows.append((f"`{manifest['path'] or 'manifest.json'}` (every file listed)",
                     f"{status}, {_int(manifest['files_checked'])} files checked"))
    rows += [(f"`{name}` (official)", status) for name, status in report["official"].items()]
    lines += _table(["file", "status"], rows) if rows else ["No checksums recorded."]
    for label, items in (("Problems", report["problems"]), ("Warnings", report["warnings"])):
        if items:
            lines += ["", f"{label} (first {min(len(items), 10)} of {len(items)}):", ""]
            for item in items[:10]:
                if isinstance(item, Mapping):
                    where = str(item.get("path", ""))
                    if item.get("line") is not None:
                        where += f":{item['line']}"
                    lines.append(f"- {item.get('kind', '?')}: `{where}`: {item.get('message', '')}")
                else:
                    lines.append(f"- {item}")
    return lines


def _section_validate(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    stage = stages["validate"]
    if not stage.ran:
        return _not_run(stage, root)
    report = stage.main()
    budget = report["param_budget"]
    lines = [f"Validation: **{'OK' if report['ok'] else 'FAILED'}**; parameter budget {budget:,}.", ""]
    rows = []
    for m in report["models"]:
        macs = "n/a" if m["macs_640"] is None else f"{m['macs_640'] / 1e9:.3f}"
        shapes = "n/a" if m["shapes_ok"] is None else ("ok" if m["shapes_ok"] else "FAILED")
        rows.append((f"`{m['name']}`", f"{m['parameters']:,}", f"{budget - m['parameters']:+,}",
                     "yes" if m["within_budget"] else "**no**", macs, shapes, "; ".join(map(str, m["problems"]))))
    lines += _table(["model", "parameters", "headroom", "within budget", "GMACs @ 640x640", "output shapes",
                     "problems"], rows)
    lines.append("")
    if report["golden_skipped"]:
        lines.append(f"ODConv golden vectors: skipped ({report['golden_skipped']}).")
    elif report["golden"]:
        passed = sum(g["ok"] for g in report["golden"])
        worst = max((d for g in report["golden"] for d in g["max_abs_diff"].values()), default=math.nan)
        lines.append(f"ODConv golden vectors (official module): {passed} of {len(report['golden'])} files match, "
                     f"max |diff| {_fmt(worst, '.2e')}.")
        failed = [g for g in report["golden"] if not g["ok"]]
        lines += [f"- `{g['name']}`: FAILED {g['error'] or g['max_abs_diff']}" for g in failed]
    else:
        lines.append("ODConv golden vectors: not checked.")
    return lines


def _epoch_rows(n: int, limit: int = MAX_EPOCH_ROWS) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _section_train(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    stage = stages["train"]
    if not stage.ran:
        return _not_run(stage, root)
    metrics = stage.main()
    columns, n = metrics["columns"], metrics["epochs"]
    params = (stage.provenance or {}).get("params", {}).get("train", {})
    model = f"`{params['model']}`" if isinstance(params, Mapping) and params.get("model") else "the model"
    if n == 0:
        return [f"`metrics.csv` has a header but no epoch yet: training of {model} has not finished an epoch."]
    last = n - 1

    def value(column: str, row: int = last, spec: str = ".4g") -> str:
        return _fmt(columns[column][row], spec) if column in columns else "n/a"

    summary = f"{model} trained for {n} epoch{'s' if n != 1 else ''} (last epoch {value('epoch', spec='.0f')})"
    if "loss" in columns:
        summary += f"; final loss {value('loss')}"
        terms = [f"{c} {value(c)}" for c in ("loc", "cls", "landm") if c in columns]
        summary += f" ({', '.join(terms)})" if terms else ""
    if "images_per_s" in columns:
        summary += f"; {value('images_per_s', spec='.1f')} images/s"
    if "wall_s" in columns and not math.isnan(columns["wall_s"][last]):
        summary += f"; wall time {columns['wall_s'][last] / 60:.1f} min"
    lines = [summary + ".", ""]
    shown = [c for c in ("epoch", "loss", "loc", "cls", "landm", "lr", "temperature", "num_pos", "grad_norm",
                         "images_per_s") if c in columns]
    lines += _table(shown, [[_fmt(columns[c][i], ".0f" if c == "epoch" else ".4g") for c in shown]
                            for i in _epoch_rows(n)])
    if n > MAX_EPOCH_ROWS:
        lines += ["", f"({MAX_EPOCH_ROWS} of {n} epochs shown; all are in `metrics.csv`.)"]
    if "training" in plots:
        lines += ["", f"![Loss terms per epoch]({plots['training']})"]
    lines += ["", "**Attention entropy** (ODConv, nats, on a fixed probe batch at each epoch end):", ""]
    kinds = entropy_columns(columns)
    if not kinds:
        lines.append("No attention-entropy columns in `metrics.csv` (the model has no ODConv, or "
                     "`train.probe_images` is 0).")
        return lines
    if "entropy" in plots:
        lines += [f"![Attention entropy per epoch]({plots['entropy']})", ""]
    rows = []
    for kind, modules in kinds.items():
        ceiling = "ln 2 = 0.69315" if kind in ("spatial", "channel") else "ln n (n kernels)"
        for module, column in modules.items():
            rows.append((kind, f"`{module}`", _fmt(columns[column][0], ".5f"), _fmt(columns[column][last], ".5f"),
                         ceiling))
    lines += _table(["kind", "module", "first epoch", "last epoch", "maximum"], rows)
    return lines


def _section_accuracy(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    score, predict = stages["score"], stages["predict"]
    lines: list[str] = []
    if predict.ran:
        p = predict.main()
        text = f"Predictions: {p['images']} images"
        if p["detections"] is not None:
            text += f", {p['detections']:,} detections"
        if p["seconds_per_image"] is not None:
            text += f", {p['seconds_per_image']:.3f} s per image"
        if p["device"]:
            text += f" on {p['device']}"
        if p["skipped"]:
            text += f"; {len(p['skipped'])} images skipped"
        lines += [text + ".", ""]
    else:
        lines += _not_run(predict, root) + [""]
    if not score.ran:
        return lines + _not_run(score, root)
    result = score.main()
    model = predict_model(stages)
    subset = result["num_images"] < result["num_images_total"] if result["subset"] is None else result["subset"]
    lines.append(
        f"WIDER FACE val AP{f' of `{model}`' if model else ''} (official protocol"
        + (f", IoU {result['iou_thresh']:g}" if result["iou_thresh"] is not None else "")
        + f"): **{result['num_images']} of the {result['num_images_total']} val images took part**"
        + (" (a subset: only the faces of these images count)." if subset else ".")
    )
    lines.append("")
    rows = []
    for s in SETTINGS:
        faces = result["num_faces"].get(s)
        total = result["num_faces_total"].get(s)
        faces_text = _int(faces) + (f" of {_int(total)}" if total is not None else "")
        rows.append((s.capitalize(), percent(result["ap"][s]), faces_text))
    lines += _table(["setting", "AP (%)", "faces"], rows)
    lines += ["", *_comparison(stages, result, model, root)]
    if result["num_predictions"] is not None:
        lines += ["", f"{result['num_predictions']:,} predicted boxes scored."]
    if "pr_curves" in plots:
        lines += ["", f"![Precision-recall curves]({plots['pr_curves']})"]
    else:
        lines += ["", "No PR curves (the score stage wrote no `pr_curves.png`)."]
    return lines


def _comparison(stages: Mapping[str, Stage], result: Mapping[str, Any], model: str | None,
                root: Path | None) -> list[str]:
    """The trained model's AP next to the reference detectors' (references stage), measured on the same images."""
    refs = stages["references"]
    if not refs.ran:
        return ["**Compared with**: nothing (the `references` stage has not run: "
                f"`{_display_path(str(refs.directory / 'references.json'), root)}` is absent)."]
    detectors = refs.main()["detectors"]
    if not detectors:
        return ["**Compared with**: no reference detectors (the references: section lists none)."]
    lines = ["**Compared with** reference detectors run by the `references` stage over the same val images with the "
             "same protocol (their weights were not trained by this pipeline):", ""]
    rows = [(f"`{model or 'this run'}` (this pipeline's model)", *(percent(result["ap"][s]) for s in SETTINGS),
             result["num_images"], "`score` stage")]
    for ref in detectors:
        what = f"model `{ref['model']}`" if ref["model"] else f"peer `{ref['peer']}`"
        source = what + (f", `{_display_path(ref['weights'], root)}`" if ref["weights"] else "")
        images = str(ref["num_images"])
        if ref["num_images"] != result["num_images"]:
            images += " (**not the same images**)"
        rows.append((f"`{ref['name']}`", *(percent(ref["ap"][s]) for s in SETTINGS), images, source))
    lines += _table(["detector", "Easy AP (%)", "Medium AP (%)", "Hard AP (%)", "images", "source"], rows)
    return lines


def _section_export(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    stage = stages["export"]
    if not stage.ran:
        return _not_run(stage, root)
    summary = stage.main()
    tolerance = float(summary["options"].get("atol", PARITY_TOLERANCE))
    worst = max(summary["parity"].values(), default=math.nan)
    ok = not math.isnan(worst) and worst <= tolerance
    size = "" if summary["bytes"] is None else f", {summary['bytes'] / 1024:.0f} KB"
    weights = _display_path(summary["weights"] or "n/a", root)
    lines = [f"`{_display_path(summary['path'], root)}` ({summary['format']}{size}) from "
             f"`{summary['model'] or 'the checkpoint'}` with weights `{weights}`."
             f" Parity with eager PyTorch: **{'OK' if ok else 'FAILED'}** (max abs difference {_fmt(worst, '.2e')}, "
             f"tolerance {tolerance:g}).", ""]
    lines += _table(["output", "max abs difference", "within tolerance"],
                    [(f"`{name}`", _fmt(d, ".2e"), "yes" if (not math.isnan(d) and d <= tolerance) else "**no**")
                     for name, d in summary["parity"].items()])
    shapes = ", ".join("x".join(str(v) for v in s) if isinstance(s, list) else str(s) for s in summary["parity_inputs"])
    if shapes:
        lines += ["", f"Parity inputs (B x H x W, seeded random pixels): {shapes}."]
    if summary["options"]:
        opts = ", ".join(f"{k} {json.dumps(v)}" for k, v in summary["options"].items())
        lines += ["", f"Export options: {opts}."]
    return lines


def _section_benchmark(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    stage = stages["benchmark"]
    if not stage.ran:
        return _not_run(stage, root)
    bench = stage.main()
    config, env = bench["config"], bench["environment"]
    order = {b: i for i, b in enumerate(_BACKEND_LABELS)}
    columns = sorted(dict.fromkeys((r["backend"], r["threads"]) for r in bench["latencies"]),
                     key=lambda c: (order.get(c[0], len(order)), c[1]))
    size = config.get("input_size")
    intro = "Latency (median, ms"
    if isinstance(size, list) and len(size) == 2:
        intro += f", batch 1 at {size[0]}x{size[1]}"
    if config.get("runs") is not None:
        intro += f", {config['runs']} timed runs after {config.get('warmup', '?')} warm-up"
    intro += ")"
    if env:
        cpu = env.get("processor") if env.get("processor") not in (None, "", "unknown") else env.get("machine")
        intro += (f" on {env.get('cpu_count', '?')} CPUs ({cpu or 'cpu'}), "
                  f"torch {env.get('torch', '?')}, onnxruntime {env.get('onnxruntime', '?')}")
    lines = [intro + ":", ""]
    header = ["model", "params", "GMACs", "ONNX (KB)"] + [
        f"{_BACKEND_LABELS.get(b, b)}, {t} thread{'s' if t != 1 else ''}" for b, t in columns]
    names = list(dict.fromkeys([m["name"] for m in bench["models"]] + [r["model"] for r in bench["latencies"]]))
    infos = {m["name"]: m for m in bench["models"]}
    rows = []
    for name in names:
        info = infos.get(name, {})
        cells = [f"`{name}`", _int(info.get("params")),
                 "n/a" if info.get("macs") is None else f"{info['macs'] / 1e9:.3f}",
                 "n/a" if info.get("onnx_bytes") is None else f"{info['onnx_bytes'] / 1024:.0f}"]
        for backend, threads in columns:
            row = next((r for r in bench["latencies"]
                        if (r["model"], r["backend"], r["threads"]) == (name, backend, threads)), None)
            cells.append("-" if row is None else f"{row['median_ms']:.2f}")
        rows.append(cells)
    lines += _table(header, rows)
    if bench["ratios"]:
        lines += ["", *_table(["ratio", "value", "goal", "met"],
                              [(r["name"], f"{r['value']:.3f}", f"<= {r['goal']:g}",
                                "yes" if r["value"] <= r["goal"] else "no") for r in bench["ratios"]])]
    if bench["notes"]:
        lines += [""] + [f"- {note}" for note in bench["notes"]]
    return lines


def _section_attention(stages: Mapping[str, Stage], plots: Mapping[str, str], root: Path | None) -> list[str]:
    stage = stages["attention"]
    if not stage.ran:
        return _not_run(stage, root)
    summary = stage.main()["summary"]
    lines = [run_description(summary), "", TABLE_LEGEND, "", *attention_table(summary), "", *criterion_note(summary)]
    for key, caption in (("distributions", "Attention values per module"),
                         ("kernel_selection", "Kernel selection per module"),
                         ("spatial_maps", "Mean spatial attention per module")):
        if f"attention.{key}" in plots:  # copied by draw_plots from the analysis folder
            lines += ["", f"![{caption}]({plots[f'attention.{key}']})"]
    return lines


@dataclass(frozen=True)
class _Section:
    title: str
    stages: tuple[str, ...]
    body: Callable[[Mapping[str, Stage], Mapping[str, str], Path | None], list[str]]

    def shown(self, stages: Mapping[str, Stage]) -> bool:
        """Every section is shown, except one of optional stages none of which has run."""
        optional = all(name in OPTIONAL_STAGES for name in self.stages)
        return not optional or any(stages[name].ran for name in self.stages)


_SECTIONS: tuple[_Section, ...] = (
    _Section("Data verification", ("download", "verify"), _section_verify),
    _Section("Parameter budget", ("validate",), _section_validate),
    _Section("Training", ("train",), _section_train),
    _Section("Accuracy on WIDER FACE val", ("predict", "score", "references"), _section_accuracy),
    _Section("Export parity", ("export",), _section_export),
    _Section("Latency", ("benchmark",), _section_benchmark),
    _Section("ODConv attention analysis", ("attention",), _section_attention),
)


def _status(stage: Stage) -> str:
    if not stage.ran:
        return "not run"
    data = stage.main() if STAGE_FILES[stage.name] else {}
    if stage.name in ("verify", "validate"):
        return "OK" if data["ok"] else "FAILED"
    if stage.name == "train":
        return f"{data['epochs']} epoch{'s' if data['epochs'] != 1 else ''}"
    if stage.name == "predict":
        return f"{data['images']} images"
    if stage.name == "score":
        return "AP " + " / ".join(percent(data["ap"][s]) for s in SETTINGS)
    if stage.name == "export":
        worst = max(data["parity"].values(), default=math.nan)
        tol = float(data["options"].get("atol", PARITY_TOLERANCE))
        return f"parity {'OK' if not math.isnan(worst) and worst <= tol else 'FAILED'} ({_fmt(worst, '.1e')})"
    if stage.name == "benchmark":
        return f"{len(data['latencies'])} latencies"
    if stage.name == "references":
        return f"{len(data['detectors'])} detectors"
    if stage.name == "attention":
        return f"{len(data['modules'])} ODConv2d modules, {data['images']} images"
    return "recorded"


def render_markdown(stages: Mapping[str, Stage], plots: Mapping[str, str] | None = None, *,
                    root: str | os.PathLike[str] | None = None, generated: str | None = None,
                    code: Mapping[str, Any] | None = None) -> str:
    """The report as Markdown (pure: reads nothing, writes nothing).

    Args:
        stages: ``{stage name: Stage}`` (:func:`~featherface.report.inputs.load_results`); a stage left out
            counts as not run.
        plots: ``{key: file name}`` of the plots drawn beside the report
            (:func:`~featherface.report.plots.draw_plots`).
        root: the project folder: recorded paths inside it are shown relative to it.
        generated: the creation time shown in the header (ISO 8601).
        code: the code version that made the report (:func:`featherface.utils.provenance.code_version`).
    """
    plots = dict(plots or {})
    root_path = Path(root) if root is not None else None
    stages = {name: stages.get(name) or Stage(name, (root_path or Path(".")) / "results" / name, {}, None,
                                              STAGE_FILES[name]) for name in STAGE_FILES}
    lines = ["# FeatherFace ODConv: pipeline report", ""]
    meta = []
    if generated:
        meta.append(f"Generated {generated}.")
    if code:
        meta.append("Code: " + _code_line({"git_commit": code.get("git_commit"), "git_dirty": code.get("git_dirty"),
                                          "package": code.get("package")}) + ".")
    if meta:
        lines += [" ".join(meta), ""]
    lines += ["Every section names the stage, the parameters and the input checksums that produced its numbers "
              "(from the stage's `provenance.json`).", ""]
    sections = [section for section in _SECTIONS if section.shown(stages)]
    overview = []
    for i, section in enumerate(sections, start=1):
        for name in section.stages:
            stage = stages[name]
            record = stage.provenance or {}
            commit = record.get("git_commit")
            overview.append((f"{i}. {section.title}", f"`{name}`", _status(stage), record.get("created") or "n/a",
                             "n/a" if not commit else f"`{commit[:10]}`" + (" (dirty)" if record.get("git_dirty")
                                                                           else "")))
    lines += _table(["section", "stage", "status", "created", "commit"], overview)
    for i, section in enumerate(sections, start=1):
        lines += ["", f"## {i}. {section.title}", ""]
        lines += section.body(stages, plots, root_path)
        for name in section.stages:
            stage = stages[name]
            if name == "download" and not stage.ran:
                continue  # the data folder was not given: nothing to say
            lines += ["", *render_provenance(stage, root_path)]
    return "\n".join(lines).rstrip() + "\n"
