"""The study table: one row per run of ``study.runs`` (``workflow/rules/study.smk``).

Each run folder ``<study_dir>/<model>-<init>/`` holds what the pipeline wrote for it: ``final.pt`` and
``metrics.csv`` (train stage, with ``provenance.json``), ``predict/summary.json`` and ``score/ap.json``. This
module reads them back, nothing else: every cell of the table comes from a file a stage wrote. Entry point:
``featherface study-table --params params-study.yaml`` (:func:`run`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from featherface.config import ConfigError, Params
from featherface.models.loading import build_model_from_checkpoint
from featherface.utils.io import write_json_atomic, write_text_atomic

__all__ = ["STUDY_DIR", "StudyRow", "collect_study", "run", "study_markdown", "write_study_table"]

#: The study's folder, relative to the project root (one sub-folder per run).
STUDY_DIR = "results/study"


@dataclass(frozen=True)
class StudyRow:
    """One training run and its evaluation.

    Attributes:
        run: the folder name ``<model>-<init>``.
        easy, medium, hard: WIDER FACE AP in percent on the val images the data folder holds.
        val_images: how many val images took part.
        params: trainable and frozen parameters of the trained model.
        epochs: epochs trained; ``train_images``: images per epoch.
        wall_s: training seconds summed over all epochs (resumed runs included; evaluation excluded).
        images_per_s: training images per second, mean over the epochs (data loading included).
        hardware: where it trained (from the train stage's provenance).
        command: the command that reproduces the row.
    """

    run: str
    model: str
    init: str
    easy: float
    medium: float
    hard: float
    val_images: int
    params: int
    epochs: int
    train_images: int
    wall_s: float
    images_per_s: float
    hardware: str
    command: str


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"study: {path} is missing (run its pipeline stage first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"study: {path} is not valid JSON: {err}") from None


def _read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"study: {path} is missing (the train stage writes it)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"study: {path} has no epochs")
    return rows


def _count_parameters(final: Path) -> int:
    model = build_model_from_checkpoint(final)
    return sum(p.numel() for p in model.parameters())


def collect_study(params: Params, study_dir: str | Path, params_file: str = "params.yaml") -> list[StudyRow]:
    """Read every run of ``params.study.runs`` from ``study_dir`` (missing files raise, naming the file)."""
    study_dir = Path(study_dir)
    rows = []
    for name, (model, init) in params.study.run_names().items():
        run_dir = study_dir / name
        ap = _read_json(run_dir / "score" / "ap.json")
        metrics = _read_metrics(run_dir / "metrics.csv")
        provenance = _read_json(run_dir / "provenance.json")
        speeds = [float(r["images_per_s"]) for r in metrics if r.get("images_per_s")]
        rows.append(StudyRow(
            run=name,
            model=model,
            init=init,
            easy=100 * float(ap["ap"]["easy"]),
            medium=100 * float(ap["ap"]["medium"]),
            hard=100 * float(ap["ap"]["hard"]),
            val_images=int(ap["num_images"]),
            params=_count_parameters(run_dir / "final.pt"),
            epochs=int(metrics[-1]["epoch"]),
            train_images=int(provenance.get("images", 0)),
            wall_s=float(metrics[-1]["wall_s"]),
            images_per_s=sum(speeds) / len(speeds) if speeds else float("nan"),
            hardware=str(provenance.get("hardware", provenance.get("device", "?"))),
            command=f"FEATHERFACE_PARAMS={params_file} snakemake --cores 1 {study_dir.as_posix()}/{name}/score/ap.json",
        ))
    return rows


def study_markdown(rows: list[StudyRow]) -> str:
    """The rows as a Markdown table (AP in percent, wall time in minutes)."""
    lines = [
        "| model | init | Easy | Medium | Hard | params | epochs | train wall time | images/s | hardware |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.init} | {r.easy:.2f} | {r.medium:.2f} | {r.hard:.2f} | {r.params:,} | {r.epochs} "
            f"| {r.wall_s / 60:.1f} min | {r.images_per_s:.1f} | {r.hardware} |"
        )
    if rows:
        lines += ["", f"AP on {rows[0].val_images} WIDER FACE val images at original size; trained on "
                      f"{rows[0].train_images} images. Reproduce a row with:", ""]
        lines += [f"    {r.command}" for r in rows]
    return "\n".join(lines) + "\n"


def write_study_table(rows: list[StudyRow], out_dir: str | Path) -> Path:
    """Write ``table.md`` and ``table.json`` into ``out_dir``; returns the Markdown file."""
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "table.json", [asdict(r) for r in rows])
    path = out_dir / "table.md"
    write_text_atomic(path, study_markdown(rows))
    return path


def run(params: Params, root: str | Path, out_dir: str | Path | None = None,
        params_file: str = "params.yaml") -> Path:
    """Collect every run of ``study.runs`` from ``out_dir`` (default ``<root>/results/study``), write
    ``table.md`` and ``table.json`` there and return the Markdown file. ``params_file`` is the parameter file as
    the reproducing commands should name it.

    Raises:
        ConfigError: ``study.runs`` is empty. FileNotFoundError, ValueError: a run's file is missing or malformed.
    """
    out_dir = Path(out_dir) if out_dir else Path(root) / STUDY_DIR
    if not params.study.runs:
        raise ConfigError(f"{params_file}: study.runs is empty (list MODEL:INIT pairs, see params-study.yaml)")
    return write_study_table(collect_study(params, out_dir, params_file=params_file), out_dir)
