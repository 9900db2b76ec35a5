"""Start one FeatherFace variant from another's weights: copy what matches, convert static convs into ODConvs.

:func:`transfer_weights` is what ``train.init: checkpoint`` runs. Every tensor of the target whose name and shape
match the source is copied. An :class:`~featherface.nn.odconv.ODConv2d` of the target whose counterpart in the
source (same module name) is a static 3x3 convolution (a deformable conv's regular weight, or an ``nn.Conv2d``)
starts as that convolution (:meth:`ODConv2d.init_from_static`: neutral attentions, candidate kernels that mix
back to the source kernel). What the source has and the target does not (the deformable convs' offset and
modulator convolutions) is reported as skipped; what the target has and the source does not keeps its
initialisation and is reported as not loaded.

A transfer from V1 (deformable SSH) to ``featherface_odconv_ssh`` is not function-preserving as a whole: the
deformable sampling offsets are dropped (measured on the 233 val images: V1 89.72 / 88.69 / 75.60 AP falls to
6.7 / 25.5 / 23.6 with the offsets set to zero), so the student is first taught to reproduce the teacher's
SSH features (``train.trainable``, ``train.distill_feature``; README "Training with a teacher").
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from featherface.models.checkpoints import LoadReport
from featherface.nn.odconv import ODConv2d

__all__ = ["static_weight", "transfer_weights"]

log = logging.getLogger(__name__)


def static_weight(module: nn.Module) -> torch.Tensor | None:
    """The (Cout, Cin/groups, k, k) kernel of a static convolution (``nn.Conv2d`` without bias, or a deformable
    conv's regular weight), or None when ``module`` is not one."""
    if isinstance(module, ODConv2d):
        return None
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4 and getattr(module, "bias", None) is None:
        return weight
    return None


def transfer_weights(
    source: nn.Module,
    target: nn.Module,
    *,
    kernel_noise: float = 0.01,
    seed: int = 0,
    source_name: str = "<model>",
    keep: Callable[[str], bool] | None = None,
) -> LoadReport:
    """Copy ``source``'s weights into ``target`` by name, converting static convs into ODConvs.

    Args:
        source: the trained model (any FeatherFace variant).
        target: the model to initialise (changed in place).
        kernel_noise: relative noise that tells an ODConv's candidate kernels apart (see
            :meth:`ODConv2d.init_from_static`).
        seed: seed of that noise.
        source_name: how to name the source in the report.
        keep: a predicate on target keys that must be left alone (default: none).

    Returns:
        A :class:`~featherface.models.checkpoints.LoadReport`: ``loaded`` target keys that got a value (copied or
        converted), ``not_loaded`` target keys left as they were, ``skipped`` source keys not used -> why.
    """
    report = LoadReport(source=source_name)
    generator = torch.Generator().manual_seed(seed)
    source_modules = dict(source.named_modules())
    source_state = source.state_dict()
    used: set[str] = set()
    converted: set[str] = set()
    for name, module in target.named_modules():
        if not isinstance(module, ODConv2d):
            continue
        counterpart = source_modules.get(name)
        weight = static_weight(counterpart) if counterpart is not None else None
        if weight is None or tuple(weight.shape) != tuple(module.weight.shape[1:]):
            continue
        module.init_from_static(weight.detach(), kernel_noise=kernel_noise, generator=generator)
        prefix = f"{name}." if name else ""
        used.add(f"{prefix}weight")
        converted.update(k for k in module.state_dict(prefix=prefix) if "temperature" not in k)
    target_state = target.state_dict()
    updates: dict[str, torch.Tensor] = {}
    for key, value in target_state.items():
        if keep is not None and keep(key):
            report.not_loaded.append(key)
        elif key in converted:
            report.loaded.append(key)
        elif key in source_state and source_state[key].shape == value.shape:
            updates[key] = source_state[key]
            used.add(key)
            report.loaded.append(key)
        else:
            report.not_loaded.append(key)
    target.load_state_dict(updates, strict=False)
    for key in source_state:
        if key not in used:
            report.skipped[key] = "no tensor of that name and shape in the target"
    log.info("%s: %d target tensors loaded (%d converted into ODConv), %d left as they were, %d source tensors "
             "unused", source_name, len(report.loaded), len(converted), len(report.not_loaded), len(report.skipped))
    return report
