"""Foreign weights -> our key names: the one place that reads the FeatherFace fork's and the ImageNet file's keys.

* the fokouarnaud/FeatherFace fork's raw state dicts (``featherface_v1_fork.pth``,
  ``featherface_eca_cbam_fork.pth``): keys ``body.stageN.*``, ``bifpn.N.*``, ``ssh1..3.*``,
  ``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1.*``, and the ECA + spatial attention blocks
  ``backbone_attention_{0,1,2}`` / ``bifpn_attention_{0,1,2}.{eca,sam}.conv.weight`` ->
  ``attention.{c3..c5,p3..p5}.{channel_gate,spatial_gate}.conv.weight`` -> :func:`convert_fork_state_dict`,
  :func:`load_fork_weights`;
* the ImageNet MobileNetV1-0.25 (``mobilenetV1X0.25_pretrain.tar``: ``{"state_dict":
  {"module.stageN.*", "module.fc.*"}, ...}``) -> :func:`load_imagenet_backbone`.

Reading the files (safely) and the checked copy into a model are :mod:`featherface.models.checkpoints`'.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Collection, Mapping

import torch
from torch import nn

from featherface.models.checkpoints import (
    CheckpointError,
    LoadReport,
    describe_object,
    detect_format,
    is_tensor_mapping,
    key_listing,
    load_state_dict_checked,
    read_checkpoint,
    strip_module_prefix,
    unwrap_model,
)

__all__ = ["convert_fork_state_dict", "load_fork_weights", "load_imagenet_backbone"]

log = logging.getLogger(__name__)

_DW_PARTS = {"0": "dw.conv", "1": "dw.bn", "3": "pw.conv", "4": "pw.bn"}
_STEM_PARTS = {"0": "conv", "1": "bn"}
_BIFPN_SEP = {"conv4_up": "sep_p4_td", "conv3_up": "sep_p3_out", "conv4_down": "sep_p4_out", "conv5_down": "sep_p5_out"}
_BIFPN_WEIGHTS = {"p4_w1": "weight_p4_td", "p3_w1": "weight_p3_out", "p4_w2": "weight_p4_out", "p5_w2": "weight_p5_out"}
_BIFPN_PROJ = {
    "p3_down_channel": "proj_p3",
    "p4_down_channel": "proj_p4",
    "p5_down_channel": "proj_p5",
    "p4_down_channel_2": "proj_p4_bottom_up",
    "p5_down_channel_2": "proj_p5_bottom_up",
}
_SEP_PARTS = {"depthwise_conv.conv": "dw", "pointwise_conv.conv": "pw", "bn": "bn"}
_SSH_CONVS = {
    "conv3X3": "conv3x3",
    "conv5X5_1": "conv5x5_reduce",
    "conv5X5_2": "conv5x5",
    "conv7X7_2": "conv7x7_reduce",
    "conv7x7_3": "conv7x7",
}
_SSH_PARTS = {"0.offset_conv": "conv.offset_conv", "0.modulator_conv": "conv.mask_conv", "1": "bn"}
_HEADS = {"ClassHead": "cls", "BboxHead": "box", "LandmarkHead": "landmark"}

_RE_STAGE = re.compile(r"^stage([123])\.(\d+)\.(\d+)\.(.+)$")
_RE_BIFPN_W = re.compile(r"^bifpn\.(\d+)\.(p4_w1|p3_w1|p4_w2|p5_w2)$")
_RE_BIFPN_SEP = re.compile(
    r"^bifpn\.(\d+)\.(conv4_up|conv3_up|conv4_down|conv5_down)\.(depthwise_conv\.conv|pointwise_conv\.conv|bn)\.(.+)$"
)
_RE_BIFPN_PROJ = re.compile(r"^bifpn\.(\d+)\.(p[345]_down_channel(?:_2)?)\.([01])\.(?:conv\.)?(.+)$")
_RE_SSH = re.compile(
    r"^ssh([123])\.(conv3X3|conv5X5_1|conv5X5_2|conv7X7_2|conv7x7_3)\."
    r"(0\.offset_conv|0\.modulator_conv|0\.regular_conv|1)\.(.+)$"
)
_RE_HEAD = re.compile(r"^(ClassHead|BboxHead|LandmarkHead)\.(\d+)\.conv1x1\.(.+)$")
_RE_FORK_ATTENTION = re.compile(r"^(backbone_attention_\d+|bifpn_attention_\d+|backbone_cbam_\d+|attention_cbam_\d+)\.")
_RE_FORK_ECA_SAM = re.compile(r"^(backbone|bifpn)_attention_([012])\.(eca|sam)\.conv\.weight$")
#: The fork's ECA + spatial attention blocks -> our sites and :class:`~featherface.nn.eca_sam.ECASAM` gates.
_FORK_ATTENTION_SITES = {"backbone": ("c3", "c4", "c5"), "bifpn": ("p3", "p4", "p5")}
_FORK_ATTENTION_GATES = {"eca": "channel_gate", "sam": "spatial_gate"}

def _map_mobilenet_key(key: str) -> str | None:
    """RetinaFace MobileNetV1 key (``stageN.i.j.param``) -> :class:`MobileNetV1Backbone` key, or None."""
    m = _RE_STAGE.match(key)
    if not m:
        return None
    stage, block, part, rest = m.groups()
    block_i = int(block)
    if stage == "1" and block_i == 0:
        name = _STEM_PARTS.get(part)
        return f"stem.{name}.{rest}" if name else None
    name = _DW_PARTS.get(part)
    if name is None:
        return None
    if stage == "1":
        block_i -= 1
    return f"stage{stage}.{block_i}.{name}.{rest}"


def _map_fork_key(key: str) -> str | None:
    """Fork key -> our FeatherFace key, or None when it has no counterpart."""
    if key.startswith("body."):
        mapped = _map_mobilenet_key(key[len("body.") :])
        return f"backbone.{mapped}" if mapped else None
    m = _RE_BIFPN_W.match(key)
    if m:
        return f"neck.cells.{m.group(1)}.{_BIFPN_WEIGHTS[m.group(2)]}"
    m = _RE_BIFPN_SEP.match(key)
    if m:
        cell, conv, part, rest = m.groups()
        return f"neck.cells.{cell}.{_BIFPN_SEP[conv]}.{_SEP_PARTS[part]}.{rest}"
    m = _RE_BIFPN_PROJ.match(key)
    if m and m.group(2) in _BIFPN_PROJ:
        cell, proj, part, rest = m.groups()
        return f"neck.cells.{cell}.{_BIFPN_PROJ[proj]}.{'conv' if part == '0' else 'bn'}.{rest}"
    m = _RE_SSH.match(key)
    if m:
        level, conv, part, rest = m.groups()
        prefix = f"context.{int(level) - 1}.{_SSH_CONVS[conv]}"
        if part == "0.regular_conv":
            return f"{prefix}.conv.weight" if rest == "weight" else None
        return f"{prefix}.{_SSH_PARTS[part]}.{rest}"
    m = _RE_HEAD.match(key)
    if m:
        head, level, rest = m.groups()
        return f"heads.{_HEADS[head]}.{level}.{rest}"
    return None


def _map_fork_attention_key(key: str) -> str | None:
    """Fork ECA + spatial attention key -> our ``attention.<site>.<gate>.conv.weight`` key, or None.

    ``backbone_attention_{0,1,2}`` sit on C3 / C4 / C5, ``bifpn_attention_{0,1,2}`` on P3 / P4 / P5;
    ``eca`` is :class:`~featherface.nn.eca_sam.ECASAM`'s ``channel_gate``, ``sam`` its ``spatial_gate``.
    """
    m = _RE_FORK_ECA_SAM.match(key)
    if not m:
        return None
    place, index, gate = m.groups()
    return f"attention.{_FORK_ATTENTION_SITES[place][int(index)]}.{_FORK_ATTENTION_GATES[gate]}.conv.weight"


def _fork_eca_sam_keys() -> list[str]:
    """Every key of the fork's six ECA + spatial attention blocks (12 tensors)."""
    return [
        f"{place}_attention_{i}.{gate}.conv.weight"
        for place in _FORK_ATTENTION_SITES
        for i in range(3)
        for gate in _FORK_ATTENTION_GATES
    ]


def _fork_attention_reason(key: str) -> str:
    if ".eca." in key:
        return ("fork ECA channel attention (ECA + spatial attention block): no counterpart in this model "
                "(featherface_eca_sam has one)")
    if ".sam." in key:
        return ("fork spatial attention (ECA + spatial attention block): no counterpart in this model "
                "(featherface_eca_sam has one)")
    return "fork residual CBAM block: a different design from ours, not loaded"


def convert_fork_state_dict(
    state_dict: Mapping[str, torch.Tensor], target_keys: Collection[str] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename a fork state dict to our key names.

    Args:
        state_dict: the fork's tensors.
        target_keys: the target model's state-dict keys. The fork's ECA + spatial attention tensors
            (``backbone_attention_*`` / ``bifpn_attention_*``) are converted only where these keys hold
            their counterpart (``attention.<site>.channel_gate`` / ``spatial_gate``, i.e. the model has
            an :class:`~featherface.nn.eca_sam.ECASAM` block at that site); otherwise they are skipped.

    Returns:
        (converted state dict, skipped source keys -> reason). The fork's residual CBAM blocks
        (``backbone_cbam_*`` / ``attention_cbam_*``) have no counterpart here and are always skipped.
    """
    targets = set(target_keys)
    converted: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in state_dict.items():
        mapped = _map_fork_key(key)
        if mapped is None:
            attention_key = _map_fork_attention_key(key)
            mapped = attention_key if attention_key in targets else None
        if mapped is not None:
            converted[mapped] = value
        elif _RE_FORK_ATTENTION.match(key):
            skipped[key] = _fork_attention_reason(key)
        else:
            skipped[key] = "unrecognised fork key"
    return converted, skipped


def load_fork_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    *,
    strict_trunk: bool = True,
    name: str | None = None,
) -> LoadReport:
    """Load a fork state dict into a :class:`FeatherFace` of the same width and cell count.

    The trunk (every key outside ``attention.*``) must match exactly: every trunk key filled, no
    extra trunk key, equal shapes, else :class:`CheckpointError`. The fork's ECA + spatial attention
    tensors fill the model's :class:`~featherface.nn.eca_sam.ECASAM` blocks (``featherface_eca_sam``:
    all 485 tensors load), and are then required like the trunk. Other attention blocks are left at
    their current values and listed in ``LoadReport.not_loaded``; fork attention keys without a
    counterpart in the model are listed in ``LoadReport.skipped`` with the reason.

    Args:
        model: the target model.
        source: a path to a fork ``.pth`` file, or its state dict.
        strict_trunk: when False, missing trunk keys are tolerated (reported in ``not_loaded``).
        name: how to name a state-dict source in messages (default: the path, or ``<state dict>``).
    """
    name = name or "<state dict>"
    if not isinstance(source, Mapping):
        name = str(source)
        source = read_checkpoint(source)
        if detect_format(source) != "fork":
            raise CheckpointError(f"{name}: not a FeatherFace fork state dict: found {describe_object(source)}")
    elif isinstance(source, Mapping) and not is_tensor_mapping(source):
        raise CheckpointError(f"{name}: expected a state dict of tensors, found {describe_object(source)}")
    target_keys = list(unwrap_model(model).state_dict())
    converted, skipped = convert_fork_state_dict(source, target_keys)
    unknown = [k for k, why in skipped.items() if why == "unrecognised fork key"]
    if unknown and strict_trunk:
        raise CheckpointError(f"{name}: keys this loader does not know" + key_listing("unrecognised keys", unknown))
    fillable = {_map_fork_attention_key(k) for k in _fork_eca_sam_keys()} & set(target_keys)
    required = (lambda k: not k.startswith("attention.") or k in fillable) if strict_trunk else (lambda k: False)
    report = load_state_dict_checked(model, converted, name, required=required)
    report.skipped = skipped
    log.info(
        "%s: loaded %d tensors, skipped %d source keys, %d model keys left as they were",
        name, len(report.loaded), len(skipped), len(report.not_loaded),
    )
    return report


def load_imagenet_backbone(backbone: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Load ``mobilenetV1X0.25_pretrain.tar`` (ImageNet, keys ``module.stageN.*``) into a backbone.

    The classifier (``module.fc.*``) is dropped; every backbone tensor must be present (strict).

    Raises:
        FileNotFoundError, CheckpointError.
    """
    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not is_tensor_mapping(obj):
        raise CheckpointError(f"{path}: not an ImageNet MobileNetV1 checkpoint: found {describe_object(obj)}")
    converted: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in obj.items():
        bare = strip_module_prefix(key)
        mapped = _map_mobilenet_key(bare)
        if mapped is not None:
            converted[mapped] = value
        elif bare.startswith("fc."):
            skipped[key] = "ImageNet classifier, not part of the detector"
        else:
            skipped[key] = "unrecognised key"
    unknown = [k for k, why in skipped.items() if why == "unrecognised key"]
    if unknown:
        raise CheckpointError(
            f"{path}: not an ImageNet MobileNetV1-0.25 checkpoint" + key_listing("unrecognised keys", unknown)
        )
    report = load_state_dict_checked(backbone, converted, str(path))
    report.skipped = skipped
    log.info("%s: loaded %d backbone tensors (skipped %d)", path, len(report.loaded), len(skipped))
    return report
