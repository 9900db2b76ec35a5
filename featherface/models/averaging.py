"""Weight averaging ("model soup"): one model whose weights are the mean of several fine-tuned checkpoints.

Fine-tuning runs that start from the same weights usually stay in one basin of the loss, so the average of their
weights is itself a good model, often better than each of them, at no cost at inference (Wortsman et al., "Model
soups: averaging weights of multiple fine-tuned models improves accuracy without increasing inference time", ICML
2022). Here the runs are our trainings with another seed or recipe from one checkpoint (the built-in recipe's
phases, ``workflow/rules/builtin.smk``).

:func:`average_checkpoints` reads checkpoints of ours (:mod:`featherface.models.checkpoints`), checks that they
describe one architecture (same model config, same state-dict keys and shapes), and returns a checkpoint dict whose
floating-point tensors (weights, BatchNorm statistics, ODConv temperatures) are the weighted mean; integer tensors
(BatchNorm's ``num_batches_tracked``) are taken from the first checkpoint. Training state (optimiser, schedule,
random states) is left out: the result is a model to evaluate or to start a new phase from, not a run to resume.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from featherface.models.checkpoints import CheckpointError, load_checkpoint
from featherface.utils.io import sha256_file

__all__ = ["average_checkpoints"]

#: Entries of a training checkpoint that describe the model (kept from the first checkpoint); the rest (optimiser,
#: scheduler, scaler, random states, data order, step counters) belong to a run and are dropped.
_MODEL_ENTRIES = ("format", "format_version", "config", "kind", "model_name", "train_config")


def _mixing_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ValueError(f"average_checkpoints: {len(weights)} weights for {count} checkpoints")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"average_checkpoints: weights must be finite, >= 0 and not all 0, got {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def _check_same_architecture(first: dict[str, Any], other: dict[str, Any], first_path: Path, path: Path) -> None:
    if other.get("config") != first.get("config"):
        raise CheckpointError(f"{path}: its model config differs from {first_path}'s; only checkpoints of one "
                              "architecture can be averaged")
    a, b = first["model"], other["model"]
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if missing or extra:
        raise CheckpointError(f"{path}: state-dict keys differ from {first_path}'s (missing {missing[:5]}, "
                              f"unexpected {extra[:5]})")
    shapes = [k for k in a if tuple(a[k].shape) != tuple(b[k].shape)]
    if shapes:
        raise CheckpointError(f"{path}: tensor shapes differ from {first_path}'s at {shapes[:5]}")


def average_checkpoints(
    paths: Sequence[str | os.PathLike[str]], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """The weighted mean of checkpoints of ours with one architecture, as a checkpoint dict.

    Args:
        paths: two or more checkpoints (``final.pt`` / ``last.pt`` of a run, or the built-in weights).
        weights: one mixing weight per checkpoint (normalised to sum 1); ``None``: the uniform mean.

    Returns:
        ``{"format", "format_version", "model", "config", "kind", "model_name", "train_config"}`` (those the first
        checkpoint has) plus ``averaged_from``: ``[{"path", "sha256", "weight"}]``. Save it with
        :func:`featherface.models.checkpoints.write_checkpoint_file`;
        :func:`featherface.models.loading.build_model_from_checkpoint` reads it.

    Raises:
        ValueError: fewer than two paths, or bad weights. FileNotFoundError: a missing file.
        CheckpointError: a file that is not a checkpoint of ours, or checkpoints of different architectures (the
            message names the file and the first differences).
    """
    if len(paths) < 2:
        raise ValueError(f"average_checkpoints: give at least two checkpoints, got {len(paths)}")
    files = [Path(p) for p in paths]
    mix = _mixing_weights(len(files), weights)
    checkpoints = [load_checkpoint(path) for path in files]
    first = checkpoints[0]
    for path, checkpoint in zip(files[1:], checkpoints[1:]):
        _check_same_architecture(first, checkpoint, files[0], path)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in first["model"].items():
        if tensor.is_floating_point():
            mean = sum(w * c["model"][key].double() for w, c in zip(mix, checkpoints))
            state[key] = mean.to(tensor.dtype)
        else:
            state[key] = tensor.clone()
    result = {key: first[key] for key in _MODEL_ENTRIES if key in first}
    result["model"] = state
    result["averaged_from"] = [{"path": str(path), "sha256": sha256_file(path), "weight": w}
                               for path, w in zip(files, mix)]
    return result

