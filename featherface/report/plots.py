"""The report's plots: matplotlib on an Agg canvas (no pyplot state), written as PNG files atomically.

:func:`draw_plots` draws what the stage outputs allow (training loss terms and ODConv attention entropies from
``train/metrics.csv``; the PR curves are the score stage's ``pr_curves.png`` and the attention analysis's plots
those of ``featherface attention``, copied) and deletes plots of earlier runs that cannot be drawn now.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from featherface.analysis.render import ATTENTION_PLOT_FILES
from featherface.report.inputs import Stage, entropy_columns
from featherface.utils.figures import new_figure, save_png

__all__ = ["LOSS_COLUMNS", "PLOT_FILES", "draw_plots", "plot_attention_entropy", "plot_training_curves"]

#: The plots the report may draw, by key (file names inside the output folder).
PLOT_FILES: dict[str, str] = {
    "training": "training_curves.png",
    "entropy": "attention_entropy.png",
    "pr_curves": "pr_curves.png",
}
#: The loss columns of ``metrics.csv`` (``loss`` is the weighted total, the others the unweighted terms).
LOSS_COLUMNS: tuple[str, ...] = ("loss", "loc", "cls", "landm")


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator  # lazy, as in featherface.utils.figures

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def plot_training_curves(columns: Mapping[str, Sequence[float]], out_png: str | os.PathLike[str],
                         dpi: int = 110) -> Path:
    """Loss terms per epoch (left: the weighted total ``loss``; right: the unweighted ``loc``, ``cls``, ``landm``).

    Args:
        columns: ``metrics.csv`` columns (:func:`~featherface.report.inputs.read_metrics_csv`); needs ``epoch``
            and one of :data:`LOSS_COLUMNS`.
        out_png: the PNG to write.
    """
    epochs = list(columns["epoch"])
    present = [c for c in LOSS_COLUMNS if c in columns]
    if not present:
        raise ValueError(f"plot_training_curves: none of the loss columns {LOSS_COLUMNS} is present")
    fig = new_figure(9.0, 3.6, dpi)
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
    return save_png(fig, out_png)


def plot_attention_entropy(columns: Mapping[str, Sequence[float]], out_png: str | os.PathLike[str],
                           dpi: int = 110) -> Path:
    """The ODConv attention entropies (nats) per epoch: one panel per kind (kernel, spatial, channel), one line
    per module; the binary kinds show their maximum ``ln 2`` (every attention value 0.5) as a dashed line.

    Args:
        columns: ``metrics.csv`` columns with ``epoch`` and ``entropy.<kind>.<module>`` columns.
        out_png: the PNG to write.
    """
    kinds = entropy_columns(columns)
    if not kinds:
        raise ValueError("plot_attention_entropy: no entropy.* column")
    epochs = list(columns["epoch"])
    fig = new_figure(4.3 * len(kinds), 3.8, dpi)
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
    return save_png(fig, out_png)


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
        if train.main()["epochs"] and entropy_columns(columns):
            plot_attention_entropy(columns, out / PLOT_FILES["entropy"])
            drawn["entropy"] = PLOT_FILES["entropy"]
    score = stages.get("score")
    if score is not None and score.ran:
        if (score.directory / "pr_curves.png").is_file():  # drawn by the score stage
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(score.directory / "pr_curves.png", out / PLOT_FILES["pr_curves"])
            drawn["pr_curves"] = PLOT_FILES["pr_curves"]
    attention = stages.get("attention")
    if attention is not None and attention.ran:  # drawn by `featherface attention`
        for key, file_name in ATTENTION_PLOT_FILES.items():
            if (attention.directory / file_name).is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(attention.directory / file_name, out / file_name)
                drawn[f"attention.{key}"] = file_name
    for key, file_name in PLOT_FILES.items():
        if key not in drawn:
            (out / file_name).unlink(missing_ok=True)
    for key, file_name in ATTENTION_PLOT_FILES.items():
        if f"attention.{key}" not in drawn:
            (out / file_name).unlink(missing_ok=True)
    return drawn
