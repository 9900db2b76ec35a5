"""Plots of the attention analysis (:mod:`featherface.analysis.attention`): matplotlib on an Agg canvas, PNG.

* ``attention_distributions.png``: one panel per head (channel, filter, spatial, kernel), one box per module
  showing the distribution of its attention values over images and elements;
* ``kernel_selection.png`` (only when a module has n > 1 kernels): per module, the share of images in which each
  kernel has the largest weight (bars) and each kernel's mean weight (dots);
* ``spatial_maps.png`` (only when a module has a spatial head): the k x k spatial attention averaged over the
  images, one heatmap per module (one colour scale for all), values written in the cells.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from featherface.analysis.render import ATTENTION_PLOT_FILES
from featherface.utils.figures import new_figure, save_png

__all__ = ["ATTENTION_PLOT_FILES", "draw_attention_plots", "plot_distributions", "plot_kernel_selection",
           "plot_spatial_maps"]

_HEADS = ("channel", "filter", "spatial", "kernel")
_HEAD_LABELS = {"channel": "channel a_c (sigmoid)", "filter": "filter a_f (sigmoid)",
                "spatial": "spatial a_s (sigmoid)", "kernel": "kernel a_w (softmax)"}


def _short(name: str) -> str:
    """A module name without the trailing ``.conv`` every ODConv2d of FeatherFace has."""
    return name[: -len(".conv")] if name.endswith(".conv") else name


def _modules_with(summary: Mapping[str, Any], head: str) -> list[Mapping[str, Any]]:
    """The module entries of ``summary`` whose ``head`` was computed (not skipped)."""
    return [m for m in summary["modules"] if "skipped" not in m["heads"][head]]


def _module_panels(count: int, columns: int, panel_size: tuple[float, float], margin: tuple[float, float],
                   dpi: int) -> tuple[Any, np.ndarray]:
    """A figure with one panel per module on a grid of at most ``columns`` columns, and its first ``count`` axes
    (the unused cells of the last row are hidden).

    Args:
        panel_size: (width, height) of one panel, inches; margin: inches added to the figure's (width, height).
    """
    cols = min(count, columns)
    rows = math.ceil(count / cols)
    fig = new_figure(panel_size[0] * cols + margin[0], panel_size[1] * rows + margin[1], dpi)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_distributions(values: Mapping[str, Mapping[str, np.ndarray | None]], out_png: str | os.PathLike[str],
                       dpi: int = 110) -> Path:
    """Box plots of the attention values (images x elements pooled) per module, one panel per head.

    Args:
        values: ``{module: {head: (images, elements) array or None}}``.
        out_png: the PNG to write.
    """
    names = list(values)
    fig = new_figure(max(8.0, 2.0 + 0.55 * len(names)), 7.5, dpi)
    axes = fig.subplots(2, 2).ravel()
    for ax, head in zip(axes, _HEADS):
        present = [(name, np.asarray(values[name][head]).ravel()) for name in names if values[name][head] is not None]
        ax.set_title(_HEAD_LABELS[head], fontsize="medium")
        if not present:
            ax.text(0.5, 0.5, "no module has this head", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.boxplot([v for _, v in present], whis=(1, 99), showfliers=False, widths=0.6)
        ax.set_xticks(range(1, len(present) + 1), [_short(n) for n, _ in present], rotation=60, ha="right",
                      fontsize="x-small")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("attention value")
    axes[2].set_ylabel("attention value")
    fig.suptitle("ODConv attention values per module (box: quartiles, whiskers: 1st-99th percentile)",
                 fontsize="medium")
    fig.tight_layout()
    return save_png(fig, out_png)


def plot_kernel_selection(summary: Mapping[str, Any], out_png: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Per module with n > 1 kernels: argmax share of each kernel (bars) and its mean weight (dots).

    Raises:
        ValueError: no module of ``summary`` has a kernel head.
    """
    modules = _modules_with(summary, "kernel")
    if not modules:
        raise ValueError("plot_kernel_selection: no module has more than one kernel")
    fig, axes = _module_panels(len(modules), 4, (3.0, 2.8), (0.0, 0.0), dpi)
    for ax, m in zip(axes, modules):
        kernel = m["heads"]["kernel"]
        n = len(kernel["mean"])
        x = np.arange(n)
        ax.bar(x, kernel["argmax_frequency"], color="tab:blue", alpha=0.7, label="argmax share")
        ax.plot(x, kernel["mean"], "o", color="tab:red", label="mean weight")
        ax.axhline(1.0 / n, ls="--", lw=0.8, color="grey", label="1/n (uniform)")
        ax.set_xticks(x, [f"#{i}" for i in x])
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{_short(m['name'])}\nH {kernel['entropy']:.3f} of ln {n} = {kernel['entropy_max']:.3f}",
                     fontsize="small")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize="x-small")
    fig.suptitle(f"Kernel selection over {summary['images']} images", fontsize="medium")
    fig.tight_layout()
    return save_png(fig, out_png)


def plot_spatial_maps(summary: Mapping[str, Any], out_png: str | os.PathLike[str], dpi: int = 110) -> Path:
    """The mean spatial attention of each module as a k x k heatmap (one colour scale for all, values in the cells).

    Raises:
        ValueError: no module of ``summary`` has a spatial head.
    """
    modules = _modules_with(summary, "spatial")
    if not modules:
        raise ValueError("plot_spatial_maps: no module has a spatial head")
    grids = [np.asarray(m["heads"]["spatial"]["mean"], dtype=float).reshape(m["kernel_size"], m["kernel_size"])
             for m in modules]
    low = min(float(g.min()) for g in grids)
    high = max(float(g.max()) for g in grids)
    if high - low < 1e-6:
        low, high = low - 0.01, high + 0.01
    fig, axes = _module_panels(len(modules), 5, (2.3, 2.5), (1.0, 0.4), dpi)
    image = None
    middle = (low + high) / 2
    for ax, m, grid in zip(axes, modules, grids):
        image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                    color="black" if v > middle else "white")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_short(m["name"]), fontsize="small")
    fig.suptitle(f"Spatial attention (k x k), mean over {summary['images']} images", fontsize="medium")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar_ax = fig.add_axes((0.92, 0.15, 0.02, 0.7))
    fig.colorbar(image, cax=bar_ax, format="%.2f")
    return save_png(fig, out_png)


def draw_attention_plots(summary: Mapping[str, Any], values: Mapping[str, Mapping[str, np.ndarray | None]],
                         out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Draw the plots the analysis allows into ``out_dir``; return ``{key: file name}``. Files of plots that do
    not apply now (no kernel or no spatial head) are deleted, so the folder never shows a stale figure."""
    out = Path(out_dir)
    drawn = {"distributions": ATTENTION_PLOT_FILES["distributions"]}
    plot_distributions(values, out / drawn["distributions"])
    if _modules_with(summary, "kernel"):
        drawn["kernel_selection"] = ATTENTION_PLOT_FILES["kernel_selection"]
        plot_kernel_selection(summary, out / drawn["kernel_selection"])
    if _modules_with(summary, "spatial"):
        drawn["spatial_maps"] = ATTENTION_PLOT_FILES["spatial_maps"]
        plot_spatial_maps(summary, out / drawn["spatial_maps"])
    for key, name in ATTENTION_PLOT_FILES.items():
        if key not in drawn:
            (out / name).unlink(missing_ok=True)
    return drawn
