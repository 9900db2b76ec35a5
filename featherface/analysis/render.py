"""The attention analysis as Markdown, from its JSON summary (:func:`featherface.analysis.attention.summarize`).

Pure functions without torch or matplotlib, shared by ``attention.md`` (:func:`render_markdown`) and the pipeline
report's optional section (:mod:`featherface.report.render`), plus the analysis's file names.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = [
    "ATTENTION_PLOT_FILES",
    "KERNEL_ENTROPY_CRITERION",
    "OUTPUT_FILES",
    "PLOT_CAPTIONS",
    "TABLE_LEGEND",
    "attention_table",
    "criterion_note",
    "criterion_text",
    "render_markdown",
    "run_description",
]

#: The founding notebook's criterion of a selective kernel attention: entropy below this many nats.
KERNEL_ENTROPY_CRITERION = 1.0
#: The files the analysis writes besides the plots (:func:`featherface.analysis.attention.write_analysis`).
OUTPUT_FILES: dict[str, str] = {"json": "attention.json", "markdown": "attention.md", "values": "attention.npz"}
#: The plots the analysis may draw, by key (:mod:`featherface.analysis.plots`).
ATTENTION_PLOT_FILES: dict[str, str] = {
    "distributions": "attention_distributions.png",
    "kernel_selection": "kernel_selection.png",
    "spatial_maps": "spatial_maps.png",
}
#: One line per plot key.
PLOT_CAPTIONS: dict[str, str] = {
    "distributions": "distribution of the attention values per module (box plots, one panel per head)",
    "kernel_selection": "kernel selection frequency (argmax share) and mean kernel weight per module",
    "spatial_maps": "spatial attention a_s as k x k maps, averaged over the images",
}

TABLE_LEGEND = (
    "Sigmoid heads (channel, filter, spatial): mean over images and elements ± between-image variation (the std "
    "across images averaged over the elements; in parentheses relative to the mean); H is the mean binary entropy "
    "in nats, maximum ln 2 = 0.693 (every value 0.5). Kernel head: mean weight of each kernel ± between-image "
    "variation, the mean categorical entropy with its maximum ln n, and the share of images in which each kernel "
    "has the largest weight. \"-\": the module has no such head (filter: depthwise conv; spatial: k = 1; "
    "kernel: one kernel)."
)


def _criterion(summary: Mapping[str, Any]) -> float:
    return float(summary.get("criterion_nats", KERNEL_ENTROPY_CRITERION))


def _sigmoid_cell(stats: Mapping[str, Any]) -> str:
    if "skipped" in stats:
        return "-"
    rel = stats.get("between_image_rel")
    rel_text = "" if rel is None else f" ({100 * rel:.1f}%)"
    return f"{stats['overall_mean']:.3f} ±{stats['between_image_std']:.3f}{rel_text}; H {stats['entropy']:.3f}"


def criterion_text(kernel: Mapping[str, Any], criterion: float = KERNEL_ENTROPY_CRITERION) -> str:
    """``yes`` / ``no`` for "kernel-attention entropy below ``criterion`` nats", saying when it is trivial or n/a."""
    if "skipped" in kernel:
        return "n/a (one kernel)"
    answer = "yes" if kernel["entropy"] < criterion else "no"
    if kernel["entropy_max"] < criterion:
        return f"{answer} (trivially: max ln {len(kernel['mean'])} = {kernel['entropy_max']:.3f} < {criterion:.1f})"
    return answer


def attention_table(summary: Mapping[str, Any]) -> list[str]:
    """The Markdown table of the summary, one row per module (lines, no trailing blank)."""
    criterion = _criterion(summary)
    header = ["module", "Cin→Cout, k, groups, n", "channel a_c", "filter a_f", "spatial a_s", "kernel a_w mean",
              "kernel entropy, nats (max ln n)", f"kernel entropy below {criterion:.1f} nats",
              "kernel selected (argmax share)"]
    rows = []
    for m in summary["modules"]:
        heads = m["heads"]
        kernel = heads["kernel"]
        if "skipped" in kernel:
            k_mean = k_entropy = k_selected = "-"
        else:
            k_mean = " / ".join(f"{v:.3f}" for v in kernel["mean"]) + f" ±{kernel['between_image_std']:.3f}"
            k_entropy = (f"{kernel['entropy']:.3f} (max {kernel['entropy_max']:.3f}, "
                         f"{100 * kernel['entropy'] / kernel['entropy_max']:.0f}%)")
            k_selected = ", ".join(f"#{i} {100 * f:.0f}%" for i, f in enumerate(kernel["argmax_frequency"]))
        shape = f"{m['in_channels']}→{m['out_channels']}, {m['kernel_size']}, {m['groups']}, {m['kernel_num']}"
        rows.append([f"`{m['name']}`", shape, _sigmoid_cell(heads["channel"]), _sigmoid_cell(heads["filter"]),
                     _sigmoid_cell(heads["spatial"]), k_mean, k_entropy, criterion_text(kernel, criterion), k_selected])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def run_description(summary: Mapping[str, Any]) -> str:
    """One sentence: the model, weights, module count, images and how they were prepared."""
    model = summary.get("model") or "the model"
    source = f" from `{summary['images_dir']}`" if summary.get("images_dir") else ""
    listed = summary.get("images_available")
    spread = f" (evenly spaced over its {listed} images)" if listed and listed > summary["images"] else ""
    size = summary.get("long_side")
    size_text = "at original size" if size is None else f"resized to a long side of {size} px"
    weights = f" (weights `{summary['weights']}`)" if summary.get("weights") else ""
    return (f"`{model}`{weights}: {len(summary['modules'])} ODConv2d modules, {summary['images']} images{source}"
            f"{spread}, {size_text}, eval mode, batch 1, the stored temperature.")


def criterion_note(summary: Mapping[str, Any]) -> list[str]:
    """What the entropy criterion means for n kernels (and a line when no module has a kernel attention)."""
    criterion = _criterion(summary)
    lines = [f"Criterion \"kernel-attention entropy below {criterion:.1f} nats\" (the founding notebook's): the "
             f"entropy of n kernels is at most ln n, so the criterion only says something when ln n > {criterion:.1f}, "
             "i.e. "
             "n >= 3 (ln 3 = 1.099, ln 4 = 1.386). With n = 2 (maximum ln 2 = 0.693) it holds for any attention, "
             "even a uniform one; compare the entropy with its maximum instead."]
    if not any("skipped" not in m["heads"]["kernel"] for m in summary["modules"]):
        lines += ["", "No module has more than one kernel: there is no kernel attention to assess."]
    return lines


def render_markdown(summary: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """``attention.md``: what was run, the table of :func:`attention_table`, the criterion's meaning, the plots."""
    lines = ["# ODConv attention analysis", "", run_description(summary), "", TABLE_LEGEND, ""]
    lines += attention_table(summary)
    lines += ["", *criterion_note(summary)]
    if plots:
        lines += ["", "Plots:", ""] + [f"- `{name}`: {PLOT_CAPTIONS.get(key, key)}" for key, name in plots.items()]
    return "\n".join(lines) + "\n"
