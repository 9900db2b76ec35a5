"""Reading and checking the stage outputs the report is built from.

:func:`load_results` reads every stage folder of :data:`STAGE_FILES` into a :class:`Stage`: the parsed content of
its files (JSON objects and the training ``metrics.csv``, each checked key by key) and its ``provenance.json``
(:func:`featherface.utils.provenance.write_record`). A file that is absent makes the stage "not run"; a file that exists
but cannot be read (bad JSON, a missing key, a CSV cell that is not a number) raises :class:`ReportError` naming
the file and the line or key. Nothing here draws or writes.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "OPTIONAL_STAGES",
    "SETTINGS",
    "STAGE_FILES",
    "ReportError",
    "Stage",
    "entropy_columns",
    "load_results",
    "load_stage",
    "predict_model",
    "read_json",
    "read_metrics_csv",
]

#: The files the report reads from each stage folder (all must be present for the stage to count as run). The
#: download stage is only represented by its ``provenance.json`` in the data folder.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "download": (),
    "verify": ("report.json",),
    "validate": ("report.json",),
    "train": ("metrics.csv",),
    "predict": ("summary.json",),
    "score": ("ap.json",),
    "references": ("references.json",),
    "export": ("summary.json",),
    "benchmark": ("latency.json",),
    "attention": ("attention.json",),
}
#: Stages whose report section is left out when they have not run (no "not run" section): optional analyses.
OPTIONAL_STAGES: tuple[str, ...] = ("attention",)
#: The WIDER FACE difficulty settings, in report order.
SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")


class ReportError(ValueError):
    """A stage output that exists but cannot be read: the message names the file and the line or key."""


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


def _parse_score(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    ap = _get(data, "ap", dict, where)
    ap_values = {s: _get(ap, s, _NUM, f"{where}: ap") for s in SETTINGS}
    return {
        "ap": ap_values,
        "num_images": _get(data, "num_images", int, where),
        "num_images_total": _get(data, "num_images_total", int, where),
        "subset": _get(data, "subset", bool, where, required=False),
        "num_faces": _get(data, "num_faces", dict, where, required=False, default={}),
        "num_faces_total": _get(data, "num_faces_total", dict, where, required=False, default={}),
        "num_predictions": _get(data, "num_predictions", int, where, required=False),
        "iou_thresh": _get(data, "iou_thresh", _NUM, where, required=False),
    }


def _parse_references(data: Any, path: Path) -> dict[str, Any]:
    where = str(path)
    data = _mapping(data, where)
    rows = []
    for i, row in enumerate(_get(data, "detectors", list, where)):
        at = f"{where}: detectors[{i}]"
        row = _mapping(row, at)
        ap = _get(row, "ap", dict, at)
        rows.append({
            "name": _get(row, "name", str, at),
            "model": _get(row, "model", str, at, required=False, default=""),
            "peer": _get(row, "peer", str, at, required=False, default=""),
            "weights": _get(row, "weights", str, at, required=False, default=""),
            "ap": {s: _get(ap, s, _NUM, f"{at}: ap", required=False, default=math.nan) for s in SETTINGS},
            "num_images": _get(row, "num_images", int, at),
            "num_images_total": _get(row, "num_images_total", int, at, required=False),
            "seconds_per_image": _get(row, "seconds_per_image", _NUM, at, required=False),
        })
    return {"detectors": rows, "iou_threshold": _get(data, "iou_threshold", _NUM, where, required=False)}


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


def _parse_attention(data: Any, path: Path) -> dict[str, Any]:
    """``featherface attention``'s summary, checked where the report reads it; returned whole as ``summary``."""
    where = str(path)
    data = _mapping(data, where)
    _get(data, "images", int, where)
    for i, module in enumerate(_get(data, "modules", list, where)):
        at = f"{where}: modules[{i}]"
        module = _mapping(module, at)
        _get(module, "name", str, at)
        for key in ("in_channels", "out_channels", "kernel_size", "groups", "kernel_num"):
            _get(module, key, int, at)
        heads = _get(module, "heads", dict, at)
        for head in ("channel", "filter", "spatial", "kernel"):
            stats = _mapping(_get(heads, head, dict, f"{at}: heads"), f"{at}: heads.{head}")
            if "skipped" in stats:
                continue
            h_at = f"{at}: heads.{head}"
            for key in ("overall_mean", "between_image_std", "entropy", "entropy_max"):
                _get(stats, key, _NUM, h_at)
            _get(stats, "mean", list, h_at)
            if head == "kernel":
                _get(stats, "argmax_frequency", list, h_at)
    return {"summary": data, "images": data["images"], "modules": [m["name"] for m in data["modules"]]}


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
    ("references", "references.json"): (read_json, _parse_references),
    ("export", "summary.json"): (read_json, _parse_export),
    ("benchmark", "latency.json"): (read_json, _parse_benchmark),
    ("attention", "attention.json"): (read_json, _parse_attention),
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



def entropy_columns(columns: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{kind: {module: column}}`` of the ``entropy.<kind>.<module>`` columns, in file order."""
    kinds: dict[str, dict[str, str]] = {}
    for column in columns:
        if column.startswith("entropy."):
            _, _, rest = column.partition(".")
            kind, _, module = rest.partition(".")
            kinds.setdefault(kind, {})[module or kind] = column
    return kinds


def predict_model(stages: Mapping[str, Stage]) -> str | None:
    """The model the accuracy numbers are of: ``params.predict.model`` of the score (else predict) record."""
    for name in ("score", "predict"):
        stage = stages.get(name)
        params = (stage.provenance or {}).get("params", {}).get("predict") if stage is not None else None
        if isinstance(params, Mapping) and isinstance(params.get("model"), str):
            return params["model"]
    return None
