"""Precision / recall plots of WIDER FACE results (matplotlib, Agg canvas; no pyplot global state)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from featherface.eval.results import WiderResult, percent
from featherface.utils.figures import new_figure, save_png
from featherface.utils.io import write_text_atomic

__all__ = ["PR_CSV_DIR", "plot_pr_curves", "write_pr_csv"]

#: The folder (inside an output folder) of the PR curves as CSV: ``<setting>.csv``.
PR_CSV_DIR = "pr"


def plot_pr_curves(
    results: WiderResult | Mapping[str, WiderResult],
    out_png: str | os.PathLike[str],
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Draw Easy / Medium / Hard precision-recall curves as one figure with three panels.

    Args:
        results: one result, or ``{label: result}`` to compare several detectors (one curve each per panel;
            the legend gives the AP in percent).
        out_png: PNG to write (folders are created; written through a temporary file and a rename).
        title: figure title; by default says how many of the ground truth's images took part.
        dpi: resolution.

    Returns:
        The path written.
    """
    if isinstance(results, WiderResult):
        results = {"predictions": results}
    if not results:
        raise ValueError("plot_pr_curves needs at least one result")
    first = next(iter(results.values()))
    settings = first.settings
    fig = new_figure(4.2 * len(settings), 4.2, dpi)
    axes = fig.subplots(1, len(settings), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, setting in zip(axes, settings):
        for label, result in results.items():
            curve = result.pr_curves[setting]
            keep = ~np.isnan(curve.precision)  # thresholds with no proposal have no precision
            ax.plot(curve.recall[keep], curve.precision[keep], lw=1.5, label=f"{label} ({percent(result.ap[setting])})")
        ax.set_title(setting.capitalize())
        ax.set_xlabel("recall")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    axes[0].set_ylabel("precision")
    if title is None:
        title = f"WIDER FACE val: {first.num_images} of {first.num_images_total} images"
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, out_png)


def write_pr_csv(result: WiderResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write each setting's precision-recall curve as ``<out_dir>/<setting>.csv`` (columns ``threshold``,
    ``recall``, ``precision``; thresholds without a proposal, which have no precision, are left out): the data of
    ``dvc plots``. Each file is written through a temporary file and a rename. Returns the paths, in setting order.
    """
    paths = []
    for setting in result.settings:
        curve = result.pr_curves[setting]
        lines = ["threshold,recall,precision"]
        lines += [f"{t:.4f},{r:.6f},{p:.6f}" for t, r, p in zip(curve.thresholds, curve.recall, curve.precision)
                  if not math.isnan(p)]
        path = Path(out_dir) / f"{setting}.csv"
        write_text_atomic(path, "\n".join(lines) + "\n")
        paths.append(path)
    return paths
