"""The pipeline report: one Markdown document with tables and plots of every stage, and where each number came from.

:func:`write_report` reads the stage outputs under ``results/`` (and the download stage's record under the data
folder), draws PNG plots (matplotlib, Agg canvas, no pyplot state) and writes ``<out>/report.md`` beside them,
plus the report stage's own ``provenance.json`` (the sha256 of every file it read). Sections, in order:

=============================  ==============================  =================================================
section                        stage folder (files read)       content
=============================  ==============================  =================================================
Data verification              ``verify/report.json``          counts, checksum status, problems and warnings
                               ``<data>/provenance.json``      (the download stage's record, when given)
Parameter budget               ``validate/report.json``        parameters and MACs per model, ODConv golden check
Training                       ``train/metrics.csv``           loss terms per epoch, attention entropies (plots)
Accuracy                       ``predict/summary.json``,       Easy / Medium / Hard AP, PR curves (redrawn from
                               ``score/ap.json``               ``ap.json``; else ``score/pr_curves.png`` copied)
Export parity                  ``export/summary.json``         max |exported - eager| per output
Latency                        ``benchmark/latency.json``      the benchmark stage's latency table
=============================  ==============================  =================================================

Every section ends with the provenance of the stages behind it, read from their ``provenance.json``
(:func:`featherface.provenance.write_record`): stage, creation time, git commit and dirty flag, package and
Python versions, the parameters and the sha256 of the inputs. A stage that has not run (its file is absent)
gives a section that says so; a file that exists but cannot be read (bad JSON, a missing key, a CSV cell that is
not a number) raises :class:`ReportError` naming the file and the line or key.

Entry points: ``featherface report`` (the CLI verb) and ``python -m featherface.report --results results --out
results/report``. ``python -m featherface.report record STAGE --dir DIR ...`` writes a ``provenance.json`` for
stages whose CLI verb does not write one itself (export, benchmark; see ``workflow/rules/deploy.smk``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "PARITY_TOLERANCE",
    "PLOT_FILES",
    "REPORT_FILE",
    "STAGE_FILES",
    "ReportError",
    "Stage",
    "draw_plots",
    "load_results",
    "load_stage",
    "main",
    "plot_attention_entropy",
    "plot_pr_curves",
    "plot_training_curves",
    "read_json",
    "read_metrics_csv",
    "record_stage",
    "render_markdown",
    "render_provenance",
    "write_report",
]

log = logging.getLogger(__name__)

#: The files the report reads from each stage folder (all must be present for the stage to count as run). The
#: download stage is only represented by its ``provenance.json`` in the data folder.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "download": (),
    "verify": ("report.json",),
    "validate": ("report.json",),
    "train": ("metrics.csv",),
    "predict": ("summary.json",),
    "score": ("ap.json",),
    "export": ("summary.json",),
    "benchmark": ("latency.json",),
}
#: The report's file name inside its output folder.
REPORT_FILE = "report.md"
#: The plots the report may draw, by key (file names inside the output folder).
PLOT_FILES: dict[str, str] = {
    "training": "training_curves.png",
    "entropy": "attention_entropy.png",
    "pr_curves": "pr_curves.png",
}
#: Max abs difference the export stage's built-in check accepts (``featherface.export.CHECK_ATOL``; a test keeps
#: the two equal). A summary whose ``options`` name another ``atol`` is judged against that one.
PARITY_TOLERANCE = 1e-3
#: The loss columns of ``metrics.csv`` (``loss`` is the weighted total, the others the unweighted terms).
LOSS_COLUMNS: tuple[str, ...] = ("loss", "loc", "cls", "landm")
#: Rows of the per-epoch training table (evenly spaced epochs, the first and the last included).
MAX_EPOCH_ROWS = 12
SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")
_BACKEND_LABELS = {"torch": "PyTorch eager", "ort": "ORT fp32", "e2e": "end-to-end",
                   "e2e_original": "end-to-end, original size"}


class ReportError(ValueError):
    """A stage output that exists but cannot be read: the message names the file and the line or key."""


# ------------------------------------------------------------------------------------------------ reading
def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON content of ``path``.

    Raises:
        ReportError: the file is not valid JSON (the message gives the file, line and column).
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None


def _number(value: str, path: Path, line: int, column: str) -> float:
    if value is None:
        raise ReportError(f"{path}:{line}: the row has fewer fields than the header (column {column!r} missing)")
    if value.strip() == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise ReportError(f"{path}:{line}: column {column!r}: {value!r} is not a number") from None


def read_metrics_csv(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """The columns of a training ``metrics.csv`` (one row per epoch) as ``{column: [value per row]}``.

    Empty cells (a value the epoch did not measure) become NaN.

    Raises:
        ReportError: no header, no ``epoch`` column, a row with more or fewer fields than the header, or a cell
            that is not a number (the message gives ``file:line`` and the column).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if not header:
            raise ReportError(f"{path}: empty file (no header line)")
        if "epoch" not in header:
            raise ReportError(f"{path}:1: no 'epoch' column in the header {header}")
        columns: dict[str, list[float]] = {name: [] for name in header}
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise ReportError(f"{path}:{line}: the row has more fields than the header ({len(header)})")
            for name in header:
                columns[name].append(_number(row[name], path, line, name))
    return columns


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a number",
             float: "a number", type(None): "null"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool = True,
         default: Any = None) -> Any:
    """``obj[key]`` checked against ``kind`` (a JSON number accepts int and float, never bool)."""
    if key not in obj or obj[key] is None and not required:
        if required:
            raise ReportError(f"{where}: key {key!r} is missing")
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in kinds else value
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        raise ReportError(f"{where}: key {key!r} should be {_kind_name(kind)}, found {json.dumps(value)[:60]}")
    return value


_NUM = (int, float)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(f"{where}: expected a JSON object, found {type(value).__name__}")
    return value


def _parse_verify(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    checksums = _get(data, "checksums", dict, where)
    manifest = _get(checksums, "manifest", dict, f"{where}: checksums", required=False)
    official = _get(checksums, "official", dict, f"{where}: checksums", required=False, default={})
    return {
        "ok": _get(data, "ok", bool, where),
        "counts": _get(data, "counts", dict, where),
        "manifest": None if manifest is None else {
            "path": manifest.get("path"), "files_checked": manifest.get("files_checked"),
            "mismatches": manifest.get("mismatches"),
        },
        "official": {str(k): str(v) for k, v in official.items()},
        "problems": _get(data, "problems", list, where, required=False, default=[]),
        "warnings": _get(data, "warnings", list, where, required=False, default=[]),
        "skipped": _get(data, "skipped", list, where, required=False, default=[]),
        "elapsed_s": _get(data, "elapsed_s", _NUM, where, required=False),
    }


def _parse_validate(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    models = []
    for i, model in enumerate(_get(data, "models", list, where)):
        at = f"{where}: models[{i}]"
        model = _mapping(model, at)
        models.append({
            "name": _get(model, "name", str, at),
            "parameters": _get(model, "parameters", int, at),
            "within_budget": _get(model, "within_budget", bool, at),
            "macs_640": _get(model, "macs_640", _NUM, at, required=False),
            "shapes_ok": _get(model, "shapes_ok", bool, at, required=False),
            "problems": _get(model, "problems", list, at, required=False, default=[]),
        })
    golden = []
    for i, entry in enumerate(_get(data, "odconv_golden", list, where, required=False, default=[])):
        at = f"{where}: odconv_golden[{i}]"
        entry = _mapping(entry, at)
        diffs = _get(entry, "max_abs_diff", dict, at, required=False, default={})
        golden.append({"name": _get(entry, "name", str, at), "ok": _get(entry, "ok", bool, at),
                       "max_abs_diff": {str(k): float(v) for k, v in diffs.items() if isinstance(v, _NUM)},
                       "error": entry.get("error")})
    return {
        "ok": _get(data, "ok", bool, where),
        "param_budget": _get(data, "param_budget", int, where),
        "models": models,
        "golden": golden,
        "golden_skipped": _get(data, "golden_skipped", str, where, required=False),
    }


def _parse_metrics(columns: dict[str, list[float]], path: Path) -> dict[str, Any]:
    return {"columns": columns, "epochs": len(columns["epoch"])}


def _parse_predict(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    return {
        "images": _get(data, "images", int, where),
        "detections": _get(data, "detections", int, where, required=False),
        "seconds_per_image": _get(data, "seconds_per_image", _NUM, where, required=False),
        "device": _get(data, "device", str, where, required=False),
        "skipped": _get(data, "skipped", dict, where, required=False, default={}),
    }


def _curve(values: Any, where: str) -> list[float]:
    if not isinstance(values, list):
        raise ReportError(f"{where}: expected a list of numbers")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
        elif isinstance(v, _NUM) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise ReportError(f"{where}[{i}]: {json.dumps(v)[:40]} is not a number")
    return out


def _parse_score(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    ap = _get(data, "ap", dict, where)
    ap_values = {s: _get(ap, s, _NUM, f"{where}: ap") for s in SETTINGS}
    curves = None
    raw_curves = _get(data, "pr_curves", dict, where, required=False)
    if raw_curves is not None:
        curves = {}
        for s in SETTINGS:
            at = f"{where}: pr_curves"
            curve = _get(raw_curves, s, dict, at)
            recall = _curve(_get(curve, "recall", list, f"{at}.{s}"), f"{at}.{s}.recall")
            precision = _curve(_get(curve, "precision", list, f"{at}.{s}"), f"{at}.{s}.precision")
            if len(recall) != len(precision):
                raise ReportError(f"{at}.{s}: recall has {len(recall)} points, precision {len(precision)}")
            curves[s] = {"recall": recall, "precision": precision}
    return {
        "ap": ap_values,
        "num_images": _get(data, "num_images", int, where),
        "num_images_total": _get(data, "num_images_total", int, where),
        "subset": _get(data, "subset", bool, where, required=False),
        "num_faces": _get(data, "num_faces", dict, where, required=False, default={}),
        "num_faces_total": _get(data, "num_faces_total", dict, where, required=False, default={}),
        "num_predictions": _get(data, "num_predictions", int, where, required=False),
        "iou_thresh": _get(data, "iou_thresh", _NUM, where, required=False),
        "pr_curves": curves,
    }


def _parse_export(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    parity = _get(data, "parity", dict, where)
    values = {}
    for name, value in parity.items():
        if value is None:  # NaN written by a JSON encoder that refuses NaN
            values[str(name)] = math.nan
        else:
            values[str(name)] = float(_get(parity, name, _NUM, f"{where}: parity"))
    return {
        "path": _get(data, "path", str, where),
        "format": _get(data, "format", str, where),
        "bytes": _get(data, "bytes", int, where, required=False),
        "model": _get(data, "model", str, where, required=False),
        "weights": _get(data, "weights", str, where, required=False),
        "options": _get(data, "options", dict, where, required=False, default={}),
        "parity": values,
        "parity_inputs": _get(data, "parity_inputs", list, where, required=False, default=[]),
    }


def _parse_benchmark(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    models = []
    for i, model in enumerate(_get(data, "models", list, where)):
        at = f"{where}: models[{i}]"
        model = _mapping(model, at)
        models.append({"name": _get(model, "name", str, at), "params": _get(model, "params", int, at, required=False),
                       "macs": _get(model, "macs", _NUM, at, required=False),
                       "onnx_bytes": _get(model, "onnx_bytes", int, at, required=False),
                       "source": _get(model, "source", str, at, required=False)})
    rows = []
    for i, row in enumerate(_get(data, "latencies", list, where)):
        at = f"{where}: latencies[{i}]"
        row = _mapping(row, at)
        rows.append({"model": _get(row, "model", str, at), "backend": _get(row, "backend", str, at),
                     "threads": _get(row, "threads", int, at), "size": _get(row, "size", str, at, required=False),
                     "median_ms": _get(row, "median_ms", _NUM, at), "min_ms": _get(row, "min_ms", _NUM, at, False),
                     "max_ms": _get(row, "max_ms", _NUM, at, False), "runs": _get(row, "runs", int, at, False),
                     "detections": _get(row, "detections", int, at, False)})
    ratios = []
    for i, ratio in enumerate(_get(data, "ratios", list, where, required=False, default=[])):
        at = f"{where}: ratios[{i}]"
        ratio = _mapping(ratio, at)
        ratios.append({"name": _get(ratio, "name", str, at), "value": _get(ratio, "value", _NUM, at),
                       "goal": _get(ratio, "goal", _NUM, at), "met": _get(ratio, "met", bool, at, False)})
    return {
        "config": _get(data, "config", dict, where, required=False, default={}),
        "environment": _get(data, "environment", dict, where, required=False, default={}),
        "models": models,
        "latencies": rows,
        "ratios": ratios,
        "notes": [str(n) for n in _get(data, "notes", list, where, required=False, default=[])],
    }


def _parse_provenance(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    code = _get(data, "code", dict, where, required=False, default={})
    inputs = _get(data, "inputs_sha256", dict, where, required=False, default={})
    for name, digest in inputs.items():
        if not isinstance(digest, str):
            raise ReportError(f"{where}: inputs_sha256[{name!r}] should be a hex string, found {digest!r}")
    outputs = _get(data, "outputs_sha256", dict, where, required=False, default={})
    return {
        "stage": _get(data, "stage", str, where),
        "created": _get(data, "created", str, where, required=False),
        "git_commit": code.get("git_commit"),
        "git_dirty": code.get("git_dirty"),
        "package": code.get("package"),
        "python": _get(data, "python", str, where, required=False),
        "params": _get(data, "params", dict, where, required=False, default={}),
        "inputs_sha256": dict(inputs),
        "outputs_sha256": dict(outputs),
    }


#: (stage, file) -> (reader, parser): how each stage output is read and checked.
_PARSERS: dict[tuple[str, str], tuple[Callable[[Path], Any], Callable[[Any, Path], dict[str, Any]]]] = {
    ("verify", "report.json"): (read_json, _parse_verify),
    ("validate", "report.json"): (read_json, _parse_validate),
    ("train", "metrics.csv"): (read_metrics_csv, _parse_metrics),
    ("predict", "summary.json"): (read_json, _parse_predict),
    ("score", "ap.json"): (read_json, _parse_score),
    ("export", "summary.json"): (read_json, _parse_export),
    ("benchmark", "latency.json"): (read_json, _parse_benchmark),
}


@dataclass(frozen=True)
class Stage:
    """What one stage left in its folder, read and checked.

    Attributes:
        name: the stage (a key of :data:`STAGE_FILES`).
        directory: its output folder.
        files: ``{file name: parsed content}`` of the files of :data:`STAGE_FILES` that are present.
        provenance: its ``provenance.json``, normalised (keys ``stage``, ``created``, ``git_commit``,
            ``git_dirty``, ``package``, ``python``, ``params``, ``inputs_sha256``, ``outputs_sha256``), or ``None``.
        missing: the files of :data:`STAGE_FILES` that are absent.
        read: every file that was read (for the report's own provenance record).
    """

    name: str
    directory: Path
    files: Mapping[str, Any]
    provenance: Mapping[str, Any] | None
    missing: tuple[str, ...]
    read: tuple[Path, ...] = ()

    @property
    def ran(self) -> bool:
        """All of the stage's files are present (for ``download``: its provenance record is)."""
        if not STAGE_FILES.get(self.name):
            return self.provenance is not None
        return not self.missing

    def main(self) -> dict[str, Any]:
        """The parsed content of the stage's (first) file; only valid when :attr:`ran`."""
        return self.files[STAGE_FILES[self.name][0]]


def load_stage(directory: str | os.PathLike[str], name: str | None = None) -> Stage:
    """Read a stage folder: its files of :data:`STAGE_FILES` (those present) and its ``provenance.json``.

    Args:
        directory: the stage's output folder (absent: a stage that has not run).
        name: the stage name (default: the folder's name).

    Raises:
        KeyError: an unknown stage name.
        ReportError: a file that exists but is malformed (named, with the line or key).
    """
    directory = Path(directory)
    name = name or directory.name
    if name not in STAGE_FILES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(STAGE_FILES)}")
    files: dict[str, Any] = {}
    missing = []
    read = []
    for file_name in STAGE_FILES[name]:
        path = directory / file_name
        if not path.is_file():
            missing.append(file_name)
            continue
        reader, parser = _PARSERS[(name, file_name)]
        files[file_name] = parser(reader(path), path)
        read.append(path)
    provenance = None
    record = directory / "provenance.json"
    if record.is_file():
        provenance = _parse_provenance(read_json(record), record)
        read.append(record)
    return Stage(name, directory, files, provenance, tuple(missing), tuple(read))


def load_results(results_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
                 ) -> dict[str, Stage]:
    """Every stage of :data:`STAGE_FILES`: ``<results_dir>/<stage>`` (download: ``data_dir``, when given).

    Raises:
        FileNotFoundError: ``results_dir`` is not a folder.
        ReportError: a malformed stage output.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder not found: {results}")
    stages = {}
    for name in STAGE_FILES:
        if name == "download":
            folder = Path(data_dir) if data_dir is not None else results / "__no_data_dir__"
        else:
            folder = results / name
        stages[name] = load_stage(folder, name)
    return stages


# ---------------------------------------------------------------------------------------------- plotting
def _new_figure(width: float, height: float, dpi: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _save_png(fig: Any, path: Path) -> Path:
    """Render ``fig`` and write it atomically (temporary file in the same folder + rename)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot_training_curves(columns: Mapping[str, Sequence[float]], out_png: str | os.PathLike[str],
                         dpi: int = 110) -> Path:
    """Loss terms per epoch (left: the weighted total ``loss``; right: the unweighted ``loc``, ``cls``, ``landm``).

    Args:
        columns: ``metrics.csv`` columns (:func:`read_metrics_csv`); needs ``epoch`` and one of
            :data:`LOSS_COLUMNS`.
        out_png: the PNG to write.
    """
    epochs = list(columns["epoch"])
    present = [c for c in LOSS_COLUMNS if c in columns]
    if not present:
        raise ValueError(f"plot_training_curves: none of the loss columns {LOSS_COLUMNS} is present")
    fig = _new_figure(9.0, 3.6, dpi)
    total_ax, terms_ax = fig.subplots(1, 2)
    marker = "o" if len(epochs) <= 30 else None
    if "loss" in columns:
        total_ax.plot(epochs, columns["loss"], marker=marker, lw=1.5, color="black", label="loss (weighted total)")
    total_ax.set_title("total loss")
    for name in ("loc", "cls", "landm"):
        if name in columns:
            terms_ax.plot(epochs, columns[name], marker=marker, lw=1.5, label=name)
    terms_ax.set_title("loss terms (unweighted)")
    for ax in (total_ax, terms_ax):
        _epoch_axis(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return _save_png(fig, Path(out_png))


def _entropy_columns(columns: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{kind: {module: column}}`` of the ``entropy.<kind>.<module>`` columns, in file order."""
    kinds: dict[str, dict[str, str]] = {}
    for column in columns:
        if column.startswith("entropy."):
            _, _, rest = column.partition(".")
            kind, _, module = rest.partition(".")
            kinds.setdefault(kind, {})[module or kind] = column
    return kinds


def plot_attention_entropy(columns: Mapping[str, Sequence[float]], out_png: str | os.PathLike[str],
                           dpi: int = 110) -> Path:
    """The ODConv attention entropies (nats) per epoch: one panel per kind (kernel, spatial, channel), one line
    per module; the binary kinds show their maximum ``ln 2`` (every attention value 0.5) as a dashed line.

    Args:
        columns: ``metrics.csv`` columns with ``epoch`` and ``entropy.<kind>.<module>`` columns.
        out_png: the PNG to write.
    """
    kinds = _entropy_columns(columns)
    if not kinds:
        raise ValueError("plot_attention_entropy: no entropy.* column")
    epochs = list(columns["epoch"])
    fig = _new_figure(4.3 * len(kinds), 3.8, dpi)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    marker = "o" if len(epochs) <= 30 else None
    for ax, (kind, modules) in zip(axes, kinds.items()):
        for module, column in modules.items():
            ax.plot(epochs, columns[column], marker=marker, lw=1.2, label=module)
        if kind in ("spatial", "channel"):
            ax.axhline(math.log(2.0), ls="--", lw=1.0, color="grey", label="ln 2 (all 0.5)")
        ax.set_title(f"{kind} attention entropy")
        _epoch_axis(ax)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.legend(fontsize="x-small")
    axes[0].set_ylabel("entropy (nats)")
    fig.tight_layout()
    return _save_png(fig, Path(out_png))


def plot_pr_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], ap: Mapping[str, float],
                   out_png: str | os.PathLike[str], title: str = "", dpi: int = 110) -> Path:
    """Easy / Medium / Hard precision-recall curves from ``ap.json`` (points without a precision are left out).

    Args:
        curves: ``{setting: {"recall": [...], "precision": [...]}}``.
        ap: ``{setting: AP}`` (fractions), shown in the legends in percent.
        out_png: the PNG to write.
        title: the figure title.
    """
    fig = _new_figure(4.0 * len(SETTINGS), 3.9, dpi)
    axes = fig.subplots(1, len(SETTINGS), sharey=True)
    for ax, setting in zip(axes, SETTINGS):
        pairs = [(r, p) for r, p in zip(curves[setting]["recall"], curves[setting]["precision"])
                 if not (math.isnan(r) or math.isnan(p))]
        ax.plot([r for r, _ in pairs], [p for _, p in pairs], lw=1.5, label=f"AP {_pct(ap.get(setting))}")
        ax.set_title(setting.capitalize())
        ax.set_xlabel("recall")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    axes[0].set_ylabel("precision")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_png(fig, Path(out_png))


def _predict_model(stages: Mapping[str, Stage]) -> str | None:
    """The model the accuracy numbers are of: ``params.predict.model`` of the score (else predict) record."""
    for name in ("score", "predict"):
        stage = stages.get(name)
        params = (stage.provenance or {}).get("params", {}).get("predict") if stage is not None else None
        if isinstance(params, Mapping) and isinstance(params.get("model"), str):
            return params["model"]
    return None


def draw_plots(stages: Mapping[str, Stage], out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Draw the plots the stage outputs allow into ``out_dir`` and return ``{key: file name}`` (see
    :data:`PLOT_FILES`). Plots of earlier runs that cannot be drawn now are deleted, so the folder never shows a
    stale figure."""
    out = Path(out_dir)
    drawn: dict[str, str] = {}
    train = stages.get("train")
    if train is not None and train.ran:
        columns = train.main()["columns"]
        if train.main()["epochs"] and any(c in columns for c in LOSS_COLUMNS):
            plot_training_curves(columns, out / PLOT_FILES["training"])
            drawn["training"] = PLOT_FILES["training"]
        if train.main()["epochs"] and _entropy_columns(columns):
            plot_attention_entropy(columns, out / PLOT_FILES["entropy"])
            drawn["entropy"] = PLOT_FILES["entropy"]
    score = stages.get("score")
    if score is not None and score.ran:
        result = score.main()
        if result["pr_curves"] is not None:
            model = _predict_model(stages)
            title = (f"{model + ' on ' if model else ''}WIDER FACE val: {result['num_images']} of "
                     f"{result['num_images_total']} images")
            plot_pr_curves(result["pr_curves"], result["ap"], out / PLOT_FILES["pr_curves"], title=title)
            drawn["pr_curves"] = PLOT_FILES["pr_curves"]
        elif (score.directory / "pr_curves.png").is_file():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(score.directory / "pr_curves.png", out / PLOT_FILES["pr_curves"])
            drawn["pr_curves"] = PLOT_FILES["pr_curves"]
    for key, file_name in PLOT_FILES.items():
        if key not in drawn:
            (out / file_name).unlink(missing_ok=True)
    return drawn


# --------------------------------------------------------------------------------------------- rendering
def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


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
    import yaml

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
    kinds = _entropy_columns(columns)
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
    model = _predict_model(stages)
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
        rows.append((s.capitalize(), _pct(result["ap"][s]), faces_text))
    lines += _table(["setting", "AP (%)", "faces"], rows)
    if result["num_predictions"] is not None:
        lines += ["", f"{result['num_predictions']:,} predicted boxes scored."]
    if "pr_curves" in plots:
        lines += ["", f"![Precision-recall curves]({plots['pr_curves']})"]
    else:
        lines += ["", "No PR curves (neither `pr_curves` in `ap.json` nor `pr_curves.png`)."]
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


@dataclass(frozen=True)
class _Section:
    title: str
    stages: tuple[str, ...]
    body: Callable[[Mapping[str, Stage], Mapping[str, str], Path | None], list[str]]


_SECTIONS: tuple[_Section, ...] = (
    _Section("Data verification", ("download", "verify"), _section_verify),
    _Section("Parameter budget", ("validate",), _section_validate),
    _Section("Training", ("train",), _section_train),
    _Section("Accuracy on WIDER FACE val", ("predict", "score"), _section_accuracy),
    _Section("Export parity", ("export",), _section_export),
    _Section("Latency", ("benchmark",), _section_benchmark),
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
        return "AP " + " / ".join(_pct(data["ap"][s]) for s in SETTINGS)
    if stage.name == "export":
        worst = max(data["parity"].values(), default=math.nan)
        tol = float(data["options"].get("atol", PARITY_TOLERANCE))
        return f"parity {'OK' if not math.isnan(worst) and worst <= tol else 'FAILED'} ({_fmt(worst, '.1e')})"
    if stage.name == "benchmark":
        return f"{len(data['latencies'])} latencies"
    return "recorded"


def render_markdown(stages: Mapping[str, Stage], plots: Mapping[str, str] | None = None, *,
                    root: str | os.PathLike[str] | None = None, generated: str | None = None,
                    code: Mapping[str, Any] | None = None) -> str:
    """The report as Markdown (pure: reads nothing, writes nothing).

    Args:
        stages: ``{stage name: Stage}`` (:func:`load_results`); a stage left out counts as not run.
        plots: ``{key: file name}`` of the plots drawn beside the report (:func:`draw_plots`).
        root: the project folder: recorded paths inside it are shown relative to it.
        generated: the creation time shown in the header (ISO 8601).
        code: the code version that made the report (:func:`featherface.provenance.code_version`).
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
    overview = []
    for i, section in enumerate(_SECTIONS, start=1):
        for name in section.stages:
            stage = stages[name]
            record = stage.provenance or {}
            commit = record.get("git_commit")
            overview.append((f"{i}. {section.title}", f"`{name}`", _status(stage), record.get("created") or "n/a",
                             "n/a" if not commit else f"`{commit[:10]}`" + (" (dirty)" if record.get("git_dirty")
                                                                           else "")))
    lines += _table(["section", "stage", "status", "created", "commit"], overview)
    for i, section in enumerate(_SECTIONS, start=1):
        lines += ["", f"## {i}. {section.title}", ""]
        lines += section.body(stages, plots, root_path)
        for name in section.stages:
            stage = stages[name]
            if name == "download" and not stage.ran:
                continue  # the data folder was not given: nothing to say
            lines += ["", *render_provenance(stage, root_path)]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------- writing
def write_report(results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 data_dir: str | os.PathLike[str] | None = None, record: bool = True) -> Path:
    """Read the stage outputs, draw the plots and write ``<out_dir>/report.md``; return its path.

    Args:
        results_dir: the folder of the stage outputs (``results``); the project root is taken as its parent
            (recorded paths inside it are shown relative to it).
        out_dir: where the report and its PNGs go (``results/report``).
        data_dir: the data folder (``data``) holding the download stage's ``provenance.json`` (``None``: the
            download stage is left out).
        record: also write ``<out_dir>/provenance.json`` (stage ``report``, the sha256 of every file read).

    Raises:
        FileNotFoundError: ``results_dir`` is not a folder.
        ReportError: a malformed stage output (named).
    """
    from featherface.provenance import atomic_write_text, code_version, write_record

    results = Path(results_dir)
    out = Path(out_dir)
    stages = load_results(results, data_dir)
    plots = draw_plots(stages, out)
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    code = code_version()
    text = render_markdown(stages, plots, root=results.resolve().parent, generated=generated, code=code)
    path = out / REPORT_FILE
    atomic_write_text(path, text)
    if record:
        inputs = [p for stage in stages.values() for p in stage.read]
        write_record(out, "report", {"report": {"results": str(results), "data": None if data_dir is None
                                                else str(data_dir)}}, inputs=inputs,
                     extra={"stages_run": [name for name, s in stages.items() if s.ran]})
    log.info("report written to %s (%d plots)", path, len(plots))
    return path


def record_stage(out_dir: str | os.PathLike[str], stage: str, *, params_file: str | os.PathLike[str] | None = None,
                 sections: Sequence[str] = (), values: Mapping[str, Any] | None = None,
                 inputs: Sequence[str | os.PathLike[str]] = (), outputs: Sequence[str | os.PathLike[str]] = ()
                 ) -> Path:
    """Write ``<out_dir>/provenance.json`` for a stage whose command does not write one (export, benchmark).

    Args:
        out_dir: the stage's output folder.
        stage: the stage name.
        params_file: the parameter file the stage ran with (needed for ``sections``).
        sections: sections of the validated parameter file to record (``predict``), or single keys of one
            (``predict.model``: recorded as ``{"predict": {"model": ...}}``).
        values: further recorded parameter sections given directly (``{name: plain data}``), e.g. the settings
            a rule passed on its command line.
        inputs: files whose sha256 is recorded as ``inputs_sha256``.
        outputs: files whose sha256 is recorded as ``outputs_sha256`` (e.g. the exported model).

    Raises:
        FileNotFoundError: a missing input or output file, or parameter file.
        ValueError: an unknown parameter section or key, or a section given twice.
    """
    from featherface.provenance import sha256_file, write_record

    params: dict[str, Any] = {}
    if sections:
        import dataclasses

        from featherface.config import load_params, to_dict

        if params_file is None:
            raise ValueError("record_stage: sections need the parameter file")
        loaded = load_params(params_file)
        known = [f.name for f in dataclasses.fields(loaded)]
        for item in sections:
            name, _, key = item.partition(".")
            if name not in known:
                raise ValueError(f"record_stage: {params_file} has no section {name!r} (known: {', '.join(known)})")
            section = to_dict(getattr(loaded, name))
            if not key:
                params[name] = section
            elif key not in section:
                raise ValueError(f"record_stage: {params_file}: section {name!r} has no key {key!r} "
                                 f"(known: {', '.join(section)})")
            elif isinstance(params.get(name), dict):
                params[name][key] = section[key]
            else:
                params[name] = {key: section[key]}
    for name, value in (values or {}).items():
        if name in params:
            raise ValueError(f"record_stage: section {name!r} given both from the parameter file and as a value")
        params[name] = value
    for path in [*inputs, *outputs]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"record_stage: {stage}: file not found: {path}")
    extra = {"outputs_sha256": {str(p): sha256_file(p) for p in outputs}} if outputs else None
    return write_record(out_dir, stage, params, inputs=inputs, extra=extra)


# ----------------------------------------------------------------------------------------------------- CLI
def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m featherface.report",
        description="Write results/report/report.md (tables, plots and the provenance of every stage) from the "
        "stage outputs. 'python -m featherface.report record STAGE ...' writes a stage's provenance.json instead.",
    )
    parser.add_argument("--results", default="results", help="folder of the stage outputs (default: results)")
    parser.add_argument("--out", help="output folder (default: <results>/report)")
    parser.add_argument("--data", help="data folder holding the download stage's provenance.json (default: none)")
    return parser


def _record_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m featherface.report record",
        description="Write <dir>/provenance.json for a stage whose command writes none (export, benchmark).",
    )
    parser.add_argument("stage", help="stage name, e.g. export")
    parser.add_argument("--dir", required=True, help="the stage's output folder")
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--section", action="append", default=[], metavar="NAME[.KEY]",
                        help="record this section (or one key of it) of the parameter file (repeatable)")
    parser.add_argument("--value", action="append", default=[], metavar="NAME=JSON",
                        help="record a parameter section given as JSON (repeatable)")
    parser.add_argument("--input", action="append", default=[], metavar="FILE", help="input file (repeatable)")
    parser.add_argument("--output", action="append", default=[], metavar="FILE", help="output file (repeatable)")
    return parser


def _parse_values(items: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--value {item!r}: expected NAME=JSON")
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--value {name}: not valid JSON ({err.msg} at column {err.colno}): {text!r}") from None
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m featherface.report [--results DIR] [--out DIR] [--data DIR]`` writes the report;
    ``python -m featherface.report record STAGE --dir DIR [--params F] [--section S] [--value S=JSON]
    [--input F] [--output F]`` writes a stage's provenance record. Returns the exit status (2 on an error)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args_list[:1] == ["record"]:
            args = _record_parser().parse_args(args_list[1:])
            path = record_stage(args.dir, args.stage, params_file=args.params, sections=args.section,
                                values=_parse_values(args.value), inputs=args.input, outputs=args.output)
            print(f"{args.stage}: provenance record {path}")
            return 0
        args = _report_parser().parse_args(args_list)
        out = Path(args.out) if args.out else Path(args.results) / "report"
        path = write_report(args.results, out, data_dir=args.data)
    except (OSError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"featherface report: error: {message}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
