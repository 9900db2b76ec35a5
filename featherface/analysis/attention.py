"""The 4-D attention analysis: what every ODConv of a trained model attends to, image by image.

An :class:`~featherface.nn.odconv.ODConv2d` computes four attentions from the globally pooled input (Li et al.,
ICLR 2022; ``docs/odconv_design.md``): channel ``a_c`` (Cin values, sigmoid), filter ``a_f`` (Cout, sigmoid),
spatial ``a_s`` (k x k, sigmoid) and kernel ``a_w`` (n, softmax over the candidate kernels). A head the module
skips (filter for a depthwise conv, spatial for k = 1, kernel for n = 1) has no values here.

:func:`analyze_attention` runs the model (eval mode, batch 1, the stored temperature) over images and records
every head of every ODConv2d per image (:func:`collect_attentions`); :func:`summarize` turns them into, per module
and head:

* ``mean``, ``std``: per element (channel, filter, spatial position, kernel), over the images (population std);
* ``overall_mean``, ``min``, ``max``: over images and elements;
* ``between_image_std``: the std across images averaged over the elements (how much the attention changes from
  image to image), and ``between_image_rel`` = that / ``overall_mean``;
* ``within_image_std``: the std across elements averaged over the images (how selective one image's attention is);
* ``entropy``: for the sigmoid heads the binary entropy ``-(a ln a + (1 - a) ln(1 - a))`` averaged over elements
  and images (maximum ``ln 2``: every value 0.5); for the kernel head the categorical entropy
  ``-sum_i a_i ln a_i`` averaged over images (maximum ``ln n``: uniform mixing), all in nats, with ``entropy_max``;
* kernel head only: ``argmax_counts`` / ``argmax_frequency``, how often each kernel has the largest weight ("which
  kernels are selected"), and the founding notebook's criterion "kernel-attention entropy below 1.0 nats"
  (:data:`KERNEL_ENTROPY_CRITERION`), which is trivially met when ``ln n < 1`` (n = 2: ``ln 2 = 0.693``).

:func:`write_analysis` writes ``attention.json`` (the summary), ``attention.md`` (one table row per module,
:mod:`featherface.analysis.render`), ``attention.npz`` (the per-image values, ``<module>/<head>`` arrays (images,
elements)) and the PNG plots of :mod:`featherface.analysis.plots`. :func:`analyze_folder` loads a checkpoint and
picks the images; the CLI verb is ``featherface attention``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from featherface.analysis.plots import draw_attention_plots
from featherface.analysis.render import KERNEL_ENTROPY_CRITERION, OUTPUT_FILES, render_markdown
from featherface.inference.images import list_images, read_image, resize_long_side, to_tensor
from featherface.models.checkpoints import load_checkpoint
from featherface.models.loading import load_trained_model
from featherface.nn.odconv import ODConv2d
from featherface.train.metrics import binary_entropy, categorical_entropy, odconv_inputs, odconv_modules
from featherface.utils.io import ProgressCallback, atomic_target, write_json_atomic, write_text_atomic

__all__ = [
    "DEFAULT_MAX_IMAGES",
    "HEADS",
    "KERNEL_ENTROPY_CRITERION",
    "OUTPUT_FILES",
    "AttentionAnalysis",
    "analyze_attention",
    "analyze_folder",
    "capture_attentions",
    "collect_attentions",
    "kernel_selection",
    "network_inputs",
    "select_images",
    "summarize",
    "write_analysis",
]

#: The four attention heads of an ODConv, in the paper's order.
HEADS: tuple[str, ...] = ("channel", "filter", "spatial", "kernel")
#: Images analysed by default: about a minute on one CPU thread at a long side of 640 px.
DEFAULT_MAX_IMAGES = 100

Values = dict[str, dict[str, "np.ndarray | None"]]
"""``{module name: {head: (images, elements) array, or None for a skipped head}}``."""

_SKIPPED = {
    "filter": "depthwise conv: the filter head would repeat the channel head",
    "spatial": "k = 1: one kernel position",
    "kernel": "kernel_num = 1: a single kernel with weight 1",
}


# ------------------------------------------------------------------------------------------------------ inputs
def select_images(paths: Sequence[Path], count: int | None) -> list[Path]:
    """``count`` of ``paths`` evenly spaced over the list (all of them when ``count`` is None or >= the length).

    Evenly spaced rather than the first ``count``: a WIDER folder sorted by event would otherwise give images of
    its first event only. Deterministic: index ``floor(i * len(paths) / count)`` for ``i < count``.

    Raises:
        ValueError: ``count < 1``.
    """
    if count is not None and count < 1:
        raise ValueError(f"the number of images must be >= 1, got {count}")
    if count is None or count >= len(paths):
        return list(paths)
    return [paths[(i * len(paths)) // count] for i in range(count)]


def network_inputs(paths: Iterable[str | os.PathLike[str]], long_side: int | None = None,
                   device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
    """Each image as a network input (1, 3, H, W): BGR minus the mean, resized so its longer side is
    ``long_side`` pixels (``None``: original size), as :class:`featherface.inference.detector.FaceDetector` prepares it."""
    for path in paths:
        image, _ = resize_long_side(read_image(path), long_side)
        yield to_tensor(image).unsqueeze(0).to(device)


# ----------------------------------------------------------------------------------------------------- capture
@torch.no_grad()
def capture_attentions(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor | None]]:
    """The attentions of every ODConv2d in ``model`` during one forward of ``x`` (B, 3, H, W).

    Runs in eval mode (BatchNorm on running statistics; the model's mode is restored) with dynamic attentions:
    a forward pre-hook evaluates each module's :meth:`~featherface.nn.odconv_branch.AttentionBranch.logits` on the input
    that module receives.

    Returns:
        ``{module name: {"channel": (B, Cin), "filter": (B, Cout) or None, "spatial": (B, k*k) or None,
        "kernel": (B, n) or None, "hidden": (B, A)}}`` in the order of ``model.named_modules()``; None marks a
        head the module skips.
    """
    modules = odconv_modules(model)
    inputs = odconv_inputs(model, x)
    missing = [name for name, _ in modules if name not in inputs]
    if missing:
        raise RuntimeError(f"the forward pass did not reach the ODConv2d modules {missing}")
    captured: dict[str, dict[str, torch.Tensor | None]] = {}
    for name, module in modules:
        was = module.training
        module.eval()  # as during the eval-mode forward: the attention BatchNorm on its running statistics
        try:
            a = module.attention.logits(inputs[name])
        finally:
            module.train(was)
        captured[name] = {"channel": a.channel, "filter": a.filter, "spatial": a.spatial, "kernel": a.kernel,
                          "hidden": a.hidden.flatten(1)}
    return captured


def collect_attentions(model: nn.Module, inputs: Iterable[torch.Tensor],
                       progress: ProgressCallback | None = None,
                       total: int | None = None) -> Values:
    """Per-image attentions of every ODConv2d: ``{module: {head: (images, elements) float64 array or None}}``.

    Args:
        model: a model holding :class:`ODConv2d` modules (eval mode during the passes).
        inputs: network inputs (1, 3, H, W) (sizes may differ; a batch B > 1 counts as B images).
        progress: ``progress(done, total, what)`` after each input.
        total: the number of inputs, for ``progress``.

    Raises:
        ValueError: the model has no ODConv2d, or ``inputs`` is empty.
    """
    names = [name for name, _ in odconv_modules(model)]
    if not names:
        raise ValueError("the model has no ODConv2d module: nothing to analyse")
    chunks: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in names}
    skipped: dict[str, set[str]] = {name: set() for name in names}
    done = 0
    for x in inputs:
        for name, heads in capture_attentions(model, x).items():
            for head in HEADS:
                value = heads[head]
                if value is None:
                    skipped[name].add(head)
                else:
                    chunks[name].setdefault(head, []).append(value.detach().double().cpu().numpy())
        done += 1
        if progress is not None:
            progress(done, total, "attention")
    if done == 0:
        raise ValueError("no images to analyse")
    return {name: {head: None if head in skipped[name] else np.concatenate(chunks[name][head]) for head in HEADS}
            for name in names}


# -------------------------------------------------------------------------------------------------- statistics
def kernel_selection(kernel: np.ndarray) -> tuple[list[int], list[float]]:
    """How often each kernel has the largest kernel attention: ``(counts, fractions)`` over the images.

    Args:
        kernel: (images, n) kernel attentions. Ties go to the lowest index (``numpy.argmax``).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 2 or kernel.shape[0] == 0:
        raise ValueError(f"kernel_selection expects an (images, n) array with images >= 1, got {kernel.shape}")
    counts = np.bincount(kernel.argmax(axis=1), minlength=kernel.shape[1])
    return [int(c) for c in counts], [float(c) / kernel.shape[0] for c in counts]


def _floats(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(values).ravel()]


def _head_stats(values: np.ndarray, head: str) -> dict[str, Any]:
    """The statistics of one head's (images, elements) values (see the module docstring)."""
    mean = values.mean(axis=0)
    overall = float(values.mean())
    between = float(values.std(axis=0).mean())
    stats: dict[str, Any] = {
        "elements": int(values.shape[1]),
        "mean": _floats(mean),
        "std": _floats(values.std(axis=0)),
        "overall_mean": round(overall, 6),
        "min": round(float(values.min()), 6),
        "max": round(float(values.max()), 6),
        "between_image_std": round(between, 6),
        "between_image_rel": round(between / overall, 6) if overall > 0 else None,
        "within_image_std": round(float(values.std(axis=1).mean()), 6),
    }
    tensor = torch.from_numpy(values)
    if head == "kernel":
        per_image = categorical_entropy(tensor, dim=1).double().numpy()
        n = values.shape[1]
        counts, fractions = kernel_selection(values)
        entropy = float(per_image.mean())
        stats.update({
            "entropy": round(entropy, 6),
            "entropy_max": round(math.log(n), 6),
            "entropy_min_image": round(float(per_image.min()), 6),
            "entropy_max_image": round(float(per_image.max()), 6),
            "argmax_counts": counts,
            "argmax_frequency": [round(f, 6) for f in fractions],
            "entropy_below_criterion": entropy < KERNEL_ENTROPY_CRITERION,
            "criterion_trivial": math.log(n) < KERNEL_ENTROPY_CRITERION,
        })
    else:
        stats.update({"entropy": round(float(binary_entropy(tensor).double().mean()), 6),
                      "entropy_max": round(math.log(2.0), 6)})
    return stats


def _module_info(module: ODConv2d) -> dict[str, Any]:
    return {"in_channels": module.in_channels, "out_channels": module.out_channels,
            "kernel_size": module.kernel_size, "groups": module.groups, "kernel_num": module.kernel_num,
            "stride": module.stride, "temperature": round(module.temperature, 6)}


def summarize(model: nn.Module, values: Mapping[str, Mapping[str, np.ndarray | None]],
              meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON summary: ``{**meta, "images": N, "criterion_nats": 1.0, "modules": [...]}``.

    Each module entry has ``name``, the conv's shape (``in_channels``, ``out_channels``, ``kernel_size``, ``groups``,
    ``kernel_num``, ``stride``, ``temperature``) and ``heads``: ``{head: statistics}`` (module docstring), or
    ``{head: {"skipped": reason}}`` for a head the module does not have.
    """
    modules = dict(odconv_modules(model))
    entries = []
    images = None
    for name, heads in values.items():
        if name not in modules:
            raise KeyError(f"{name!r} is not an ODConv2d of the model")
        entry: dict[str, Any] = {"name": name, **_module_info(modules[name]), "heads": {}}
        for head in HEADS:
            array = heads.get(head)
            if array is None:
                entry["heads"][head] = {"skipped": _SKIPPED[head]}
                continue
            array = np.asarray(array, dtype=np.float64)
            if images is None:
                images = array.shape[0]
            elif array.shape[0] != images:
                raise ValueError(f"{name}.{head}: {array.shape[0]} images, expected {images}")
            entry["heads"][head] = _head_stats(array, head)
        entries.append(entry)
    return {**dict(meta or {}), "images": images or 0, "criterion_nats": KERNEL_ENTROPY_CRITERION,
            "modules": entries}


# ------------------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class AttentionAnalysis:
    """The result of :func:`analyze_attention`: the JSON ``summary`` and the per-image ``values``."""

    summary: dict[str, Any]
    values: Values


def analyze_attention(model: nn.Module, images: Sequence[str | os.PathLike[str]], *, long_side: int | None = 640,
                      device: str | torch.device = "cpu", meta: Mapping[str, Any] | None = None,
                      progress: ProgressCallback | None = None) -> AttentionAnalysis:
    """Run ``model`` over ``images`` (one at a time) and summarise every ODConv2d's attentions.

    Args:
        model: a model with ODConv2d modules (moved to ``device``; eval mode during the passes).
        images: image files.
        long_side: resize so the longer side has this many pixels (``None``: original size).
        meta: extra entries of the summary (model name, weights, image folder...).
        progress: ``progress(done, total, what)``.
    """
    model = model.to(device)
    start = time.perf_counter()
    with torch.inference_mode():
        values = collect_attentions(model, network_inputs(images, long_side, device), progress, len(images))
    info = {"image_files": [str(p) for p in images], **dict(meta or {}), "long_side": long_side,
            "seconds": round(time.perf_counter() - start, 2)}
    return AttentionAnalysis(summarize(model, values, info), values)


def analyze_folder(weights: str | os.PathLike[str], images_dir: str | os.PathLike[str], *, model: str | None = None,
                   max_images: int | None = DEFAULT_MAX_IMAGES, long_side: int | None = 640,
                   device: str | torch.device = "cpu",
                   progress: ProgressCallback | None = None) -> AttentionAnalysis:
    """:func:`analyze_attention` of a trained model over (up to ``max_images`` of) the images under a folder.

    Args:
        weights: a checkpoint of ours, or a fork state dict (then ``model`` is required).
        images_dir: searched recursively (e.g. the WIDER val folder ``<event>/<name>.jpg``).
        model: a registered model name (default: the architecture the checkpoint records).
        max_images: how many images, evenly spaced over the sorted list (:func:`select_images`); None: all.
        long_side: resize so the longer side has this many pixels (``None``: original size).

    Raises:
        FileNotFoundError: no such weights file or folder; ValueError: no images, or no ODConv2d in the model.
    """
    folder = Path(images_dir)
    available = list_images(folder)
    if not available:
        raise ValueError(f"no images under {folder}")
    paths = select_images(available, max_images)
    net = load_trained_model(weights, model)
    if model is None:
        model = load_checkpoint(weights).get("model_name")
    meta = {"model": model, "weights": str(weights), "images_dir": str(folder), "images_available": len(available),
            "image_files": [str(p.relative_to(folder)) for p in paths]}
    return analyze_attention(net, paths, long_side=long_side, device=device, meta=meta, progress=progress)


def write_analysis(analysis: AttentionAnalysis, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``attention.json``, ``attention.md``, ``attention.npz`` and the plots into ``out_dir``.

    Returns:
        ``{key: path}`` of every file written (``json``, ``markdown``, ``values`` and the plot keys).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = draw_attention_plots(analysis.summary, analysis.values, out)
    write_json_atomic(out / OUTPUT_FILES["json"], analysis.summary)
    write_text_atomic(out / OUTPUT_FILES["markdown"], render_markdown(analysis.summary, plots))
    arrays = {f"{name}/{head}": array.astype(np.float32) for name, heads in analysis.values.items()
              for head, array in heads.items() if array is not None}
    with atomic_target(out / OUTPUT_FILES["values"], suffix=".npz") as tmp:  # savez adds .npz to other names
        np.savez_compressed(tmp, **arrays)
    written = {key: out / name for key, name in OUTPUT_FILES.items()}
    written.update({key: out / name for key, name in plots.items()})
    return written
