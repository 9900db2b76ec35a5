"""The study table: one row per run of ``study.runs`` (``workflow/rules/study.smk``), and, in a study with
seeds, each model's mean and spread over its seeds with the differences that exceed that spread.

Each run folder ``<study.dir>/<model>-<init>[-seed<k>]/`` holds what the pipeline wrote for it: ``final.pt`` and
``metrics.csv`` (train stage, with ``provenance.json``), ``predict/summary.json`` and ``score/ap.json``. This
module reads them back, nothing else: every cell of the table comes from a file a stage wrote. Entry point:
``featherface study-table --params params-study.yaml`` (:func:`run`).
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from featherface.config import ConfigError, Params
from featherface.models.loading import build_model_from_checkpoint
from featherface.models.registry import model_config
from featherface.utils.io import write_json_atomic, write_text_atomic

__all__ = ["LEVELS", "SeedSummary", "StudyRow", "collect_study", "differences_beyond_spread", "has_attention", "run",
           "study_markdown", "summarise_seeds", "write_study_table"]

#: The three WIDER FACE difficulty levels, as the rows' attribute names.
LEVELS: tuple[str, ...] = ("easy", "medium", "hard")


@dataclass(frozen=True)
class StudyRow:
    """One training run and its evaluation.

    Attributes:
        run: the folder name ``<model>-<init>`` (``<model>-<init>-seed<k>`` in a study with seeds).
        group: ``<model>-<init>``; seed: ``train.seed`` of a study with seeds, else None.
        easy, medium, hard: WIDER FACE AP in percent on the val images the data folder holds.
        val_images: how many val images took part.
        params: trainable and frozen parameters of the trained model.
        epochs: epochs trained; ``train_images``: images per epoch.
        wall_s: training seconds summed over all epochs (resumed runs included; evaluation excluded).
        images_per_s: training images per second, mean over the epochs (data loading included).
        hardware: where it trained (from the train stage's provenance).
        command: the command that reproduces the row.
        bypassed: Easy / Medium / Hard AP in percent with the attention bypassed (``study.bypass``; ``<run>/bypass/
            ap.json``), None when not measured (a study without ``bypass``, a model without attention).
    """

    run: str
    model: str
    init: str
    group: str
    seed: int | None
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
    bypassed: tuple[float, float, float] | None = None


def _shown(folder: Path) -> str:
    """``folder`` as the reproducing commands name it: relative to the working folder when it is inside it."""
    try:
        return folder.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return folder.as_posix()


def has_attention(model: str) -> bool:
    """Whether the registered model has attention that ``--bypass-attention`` can switch off (blocks at the six
    sites, or ODConv as the SSH convs)."""
    config = model_config(model)
    return config.attention != "none" or config.context_conv == "odconv"


def _ap_percent(score: dict, path: Path) -> tuple[float, float, float]:
    """Easy / Medium / Hard AP in percent from the content of an ``ap.json`` (``path`` names it in errors)."""
    try:
        return tuple(100 * float(score["ap"][level]) for level in LEVELS)  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"study: {path} has no Easy / Medium / Hard AP (keys ap.easy, ap.medium, ap.hard)") from None


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
    for name, study_run in params.study.study_runs().items():
        run_dir = study_dir / name
        score_path = run_dir / "score" / "ap.json"
        score = _read_json(score_path)
        easy, medium, hard = _ap_percent(score, score_path)
        bypassed = None
        if params.study.bypass and has_attention(study_run.model):
            bypass_path = run_dir / "bypass" / "ap.json"
            bypassed = _ap_percent(_read_json(bypass_path), bypass_path)
        metrics = _read_metrics(run_dir / "metrics.csv")
        provenance = _read_json(run_dir / "provenance.json")
        speeds = [float(r["images_per_s"]) for r in metrics if r.get("images_per_s")]
        rows.append(StudyRow(
            run=name,
            model=study_run.model,
            init=study_run.init,
            group=study_run.group,
            seed=study_run.seed,
            easy=easy,
            medium=medium,
            hard=hard,
            val_images=int(score.get("num_images", 0)),
            params=_count_parameters(run_dir / "final.pt"),
            epochs=int(metrics[-1]["epoch"]),
            train_images=int(provenance.get("images", 0)),
            wall_s=float(metrics[-1]["wall_s"]),
            images_per_s=sum(speeds) / len(speeds) if speeds else float("nan"),
            hardware=str(provenance.get("hardware", provenance.get("device", "?"))),
            command=f"FEATHERFACE_PARAMS={params_file} snakemake --cores 1 {_shown(study_dir)}/{name}/score/ap.json",
            bypassed=bypassed,
        ))
    return rows


@dataclass(frozen=True)
class SeedSummary:
    """One ``<model>-<init>`` pair over its seeds: AP in percent per level.

    Attributes:
        mean, std: mean and sample standard deviation over the seeds (std 0 for one seed).
        low, high: the smallest and largest AP among the seeds (the spread is ``high - low``).
        bypassed_mean: mean Easy / Medium / Hard AP with the attention bypassed (None when not measured).
    """

    group: str
    model: str
    init: str
    seeds: tuple[int | None, ...]
    mean: dict[str, float]
    std: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    bypassed_mean: tuple[float, float, float] | None = None


def summarise_seeds(rows: list[StudyRow]) -> list[SeedSummary]:
    """Group the rows by ``<model>-<init>`` (in first-seen order) and summarise each level over the seeds."""
    groups: dict[str, list[StudyRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    summaries = []
    for group, members in groups.items():
        values = {level: [getattr(r, level) for r in members] for level in LEVELS}
        summaries.append(SeedSummary(
            group=group,
            model=members[0].model,
            init=members[0].init,
            seeds=tuple(r.seed for r in members),
            mean={level: statistics.fmean(v) for level, v in values.items()},
            std={level: statistics.stdev(v) if len(v) > 1 else 0.0 for level, v in values.items()},
            low={level: min(v) for level, v in values.items()},
            high={level: max(v) for level, v in values.items()},
            bypassed_mean=_mean_bypassed(members),
        ))
    return summaries


def _mean_bypassed(rows: list[StudyRow]) -> tuple[float, float, float] | None:
    measured = [r.bypassed for r in rows if r.bypassed]
    if not measured:
        return None
    return tuple(statistics.fmean(values) for values in zip(*measured))  # type: ignore[return-value]


def differences_beyond_spread(summaries: list[SeedSummary]) -> list[tuple[str, str, str, float]]:
    """The differences the seeds support: ``(level, better group, worse group, mean difference)`` for every pair
    and level where one group's worst seed beats the other's best (their ranges do not overlap). Pairs with a
    single seed each are never called."""
    called = []
    for a, b in itertools.combinations(summaries, 2):
        if len(a.seeds) < 2 and len(b.seeds) < 2:
            continue
        for level in LEVELS:
            if a.low[level] > b.high[level]:
                called.append((level, a.group, b.group, a.mean[level] - b.mean[level]))
            elif b.low[level] > a.high[level]:
                called.append((level, b.group, a.group, b.mean[level] - a.mean[level]))
    return called


def _bypassed_cell(values: tuple[float, float, float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "-"


def _runs_markdown(rows: list[StudyRow]) -> list[str]:
    with_seeds = any(r.seed is not None for r in rows)
    with_bypass = any(r.bypassed for r in rows)
    seed_head, seed_rule = (" seed |", "---:|") if with_seeds else ("", "")
    bypass_head, bypass_rule = (" attention bypassed (E / M / H) |", "---|") if with_bypass else ("", "")
    lines = [
        f"| model | init |{seed_head} Easy | Medium | Hard |{bypass_head} params | epochs | train wall time | images/s "
        "| hardware |",
        f"|---|---|{seed_rule}---:|---:|---:|{bypass_rule}---:|---:|---:|---:|---|",
    ]
    for r in rows:
        seed = f" {r.seed} |" if with_seeds else ""
        bypassed = f" {_bypassed_cell(r.bypassed)} |" if with_bypass else ""
        lines.append(
            f"| {r.model} | {r.init} |{seed} {r.easy:.2f} | {r.medium:.2f} | {r.hard:.2f} |{bypassed} {r.params:,} "
            f"| {r.epochs} | {r.wall_s / 60:.1f} min | {r.images_per_s:.1f} | {r.hardware} |"
        )
    return lines


def _seeds_markdown(summaries: list[SeedSummary]) -> list[str]:
    with_bypass = any(s.bypassed_mean for s in summaries)
    lines = [
        "Mean ± sample standard deviation over the seeds [lowest, highest]"
        + (", and the mean with the attention bypassed:" if with_bypass else ":"),
        "",
        "| model | init | seeds | Easy | Medium | Hard |" + (" attention bypassed (E / M / H) |" if with_bypass else ""),
        "|---|---|---:|---|---|---|" + ("---|" if with_bypass else ""),
    ]
    for s in summaries:
        cells = " | ".join(f"{s.mean[lv]:.2f} ± {s.std[lv]:.2f} [{s.low[lv]:.2f}, {s.high[lv]:.2f}]" for lv in LEVELS)
        bypassed = f" {_bypassed_cell(s.bypassed_mean)} |" if with_bypass else ""
        lines.append(f"| {s.model} | {s.init} | {len(s.seeds)} | {cells} |{bypassed}")
    called = differences_beyond_spread(summaries)
    lines += ["", "Differences larger than the seeds' spread (one model's worst seed above the other's best):", ""]
    if called:
        lines += [f"- {level.capitalize()}: {better} above {worse} by {diff:.2f} points (means)"
                  for level, better, worse, diff in called]
    else:
        lines.append("- none: every pair's seed ranges overlap at every level")
    return lines


def study_markdown(rows: list[StudyRow]) -> str:
    """The rows as a Markdown table (AP in percent, wall time in minutes), followed in a study with seeds by each
    model's mean and spread and the differences that exceed the spread."""
    lines = _runs_markdown(rows)
    if any(r.seed is not None for r in rows):
        lines += [""] + _seeds_markdown(summarise_seeds(rows))
    if rows:
        lines += ["", f"AP on {rows[0].val_images} WIDER FACE val images at original size; trained on "
                      f"{rows[0].train_images} images. Reproduce a row with:", ""]
        lines += [f"    {r.command}" for r in rows]
    return "\n".join(lines) + "\n"


def write_study_table(rows: list[StudyRow], out_dir: str | Path) -> Path:
    """Write ``table.md`` and ``table.json`` (``runs``, and ``seeds``: the per-model summaries) into ``out_dir``;
    returns the Markdown file."""
    out_dir = Path(out_dir)
    summaries = summarise_seeds(rows) if any(r.seed is not None for r in rows) else []
    write_json_atomic(out_dir / "table.json", {"runs": [asdict(r) for r in rows],
                                               "seeds": [asdict(s) for s in summaries]})
    path = out_dir / "table.md"
    write_text_atomic(path, study_markdown(rows))
    return path


def run(params: Params, root: str | Path, out_dir: str | Path | None = None,
        params_file: str = "params.yaml") -> Path:
    """Collect every run of ``study.runs`` (times ``study.seeds``) from ``out_dir`` (default
    ``<root>/<study.dir>``), write ``table.md`` and ``table.json`` there and return the Markdown file.
    ``params_file`` is the parameter file as the reproducing commands should name it.

    Raises:
        ConfigError: ``study.runs`` is empty. FileNotFoundError, ValueError: a run's file is missing or malformed.
    """
    out_dir = Path(out_dir) if out_dir else Path(root) / params.study.dir
    if not params.study.runs:
        raise ConfigError(f"{params_file}: study.runs is empty (list MODEL:INIT pairs, see params-study.yaml)")
    return write_study_table(collect_study(params, out_dir, params_file=params_file), out_dir)
