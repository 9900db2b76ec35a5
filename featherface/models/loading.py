"""A model from a weights file of any format we read: our checkpoints (which record their architecture) and the
fork's state dicts (which need a registered model name).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from featherface.models.checkpoints import (
    CheckpointError,
    LoadReport,
    describe_object,
    detect_format,
    load_checkpoint,
    load_state_dict_checked,
    read_checkpoint,
    unwrap_model,
)
from featherface.models.convert import load_fork_weights
from featherface.models.featherface import FeatherFace, FeatherFaceConfig
from featherface.models.registry import create_model

__all__ = ["build_model_from_checkpoint", "load_trained_model", "load_weights"]

log = logging.getLogger(__name__)


def build_model_from_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint of ours describes and load its weights (strict). Returned in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    if ckpt["config"] is None:
        raise CheckpointError(f"{path}: the checkpoint carries no model config; build the model and use load_weights")
    try:
        config = FeatherFaceConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from err
    model = FeatherFace(config)
    load_state_dict_checked(model, ckpt["model"], str(path))
    return model.eval()


def load_trained_model(
    path: str | os.PathLike[str], model_name: str | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """A trained model from its weights file, in eval mode.

    Args:
        path: a checkpoint of ours (it records its architecture) or a FeatherFace fork state dict.
        model_name: a registered model name to build and load ``path`` into (needed for a fork state dict, which
            does not record its architecture); None rebuilds the architecture a checkpoint of ours records.

    Raises:
        FileNotFoundError, KeyError (unknown model name), CheckpointError (unreadable, or weights that do not fit).
    """
    if model_name is None:
        try:
            return build_model_from_checkpoint(path, map_location)
        except CheckpointError as err:
            if detect_format(read_checkpoint(path)) != "fork":
                raise
            raise CheckpointError(
                f"{path}: a FeatherFace fork state dict does not record its architecture; name the model "
                "(e.g. 'featherface_v1' for featherface_v1_fork.pth)"
            ) from err
    model = create_model(model_name)
    report = load_weights(model, path, map_location)
    log.info("loaded %s into %s: %d tensors", path, model_name, len(report.loaded))
    return model.eval()


def load_weights(
    model: nn.Module, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> LoadReport:
    """Load a checkpoint of ours (strict) or a fork state dict (trunk strict) into ``model``."""
    obj = read_checkpoint(path, map_location)
    kind = detect_format(obj)
    if kind == "featherface":
        config = getattr(unwrap_model(model), "config", None)
        if config is not None and hasattr(config, "to_dict") and obj.get("config") not in (None, config.to_dict()):
            log.warning("%s: checkpoint config %s differs from the model's %s", path, obj["config"], config.to_dict())
        return load_state_dict_checked(model, obj["model"], str(path))
    if kind == "fork":
        return load_fork_weights(model, obj, name=str(path))
    raise CheckpointError(f"{path}: not a FeatherFace or fork checkpoint: found {describe_object(obj)}")

