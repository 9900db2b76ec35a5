"""Checkpoints: our single-file format, and the one place that reads the FeatherFace fork's key names.

Our format (written by :func:`save_checkpoint`, read by :func:`load_checkpoint` /
:func:`build_model_from_checkpoint`) is one ``torch.save``'d dict::

    {"format": "featherface", "format_version": 1,
     "model": state_dict, "config": FeatherFaceConfig.to_dict(), ...extra (optimizer, epoch, ...)}

readable with ``torch.load(weights_only=True)`` as long as the extras are plain data and tensors.

Foreign formats mapped here (and nowhere else):

* the fokouarnaud/FeatherFace fork's raw state dicts (``featherface_v1_fork.pth``,
  ``featherface_eca_cbam_fork.pth``): keys ``body.stageN.*``, ``bifpn.N.*``, ``ssh1..3.*``,
  ``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1.*``, and the ECA + spatial attention blocks
  ``backbone_attention_{0,1,2}`` / ``bifpn_attention_{0,1,2}.{eca,sam}.conv.weight`` ->
  ``attention.{c3..c5,p3..p5}.{channel_gate,spatial_gate}.conv.weight`` -> :func:`convert_fork_state_dict`,
  :func:`load_fork_weights`;
* the ImageNet MobileNetV1-0.25 (``mobilenetV1X0.25_pretrain.tar``: ``{"state_dict":
  {"module.stageN.*", "module.fc.*"}, ...}``) -> :func:`load_imagenet_backbone`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "LoadReport",
    "build_model_from_checkpoint",
    "convert_fork_state_dict",
    "detect_format",
    "load_checkpoint",
    "load_fork_weights",
    "load_imagenet_backbone",
    "load_state_dict_checked",
    "load_weights",
    "read_checkpoint",
    "describe_unreadable",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "featherface"
FORMAT_VERSION = 1
_RESERVED = ("format", "format_version", "model", "config")
_LIST_LIMIT = 12


class CheckpointError(ValueError):
    """A file that is not a checkpoint, or a checkpoint that does not fit the model."""


@dataclass
class LoadReport:
    """What a load did.

    Attributes:
        source: where the weights came from (path or description).
        loaded: model state-dict keys that received a value.
        skipped: source keys left out -> why.
        not_loaded: model state-dict keys left at their current values (e.g. attention blocks when
            loading a trunk-only checkpoint).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_loaded: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Reading and writing files
# ----------------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors.

    Raises:
        FileNotFoundError: ``path`` does not exist (or is a directory).
        CheckpointError: the file is not a (weights-only loadable) PyTorch file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint path is not a file: {p}")
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing a pickle file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError...)
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint: {describe_unreadable(p, err)}") from err


#: How a file starts -> what it is (for messages about files that are not checkpoints).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_BYTE = 0x80
#: Field tags that may follow an ONNX ModelProto's leading ``ir_version`` (field 1): producer name, version,
#: domain, model version, doc string, graph, opset imports, metadata.
_ONNX_SECOND_FIELDS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})


def _looks_like_onnx(head: bytes, path: Path) -> bool:
    """An ONNX file: the ``.onnx`` suffix, or a protobuf that starts with a small ``ir_version``."""
    if path.suffix.lower() == ".onnx":
        return True
    return len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 32 and head[2] in _ONNX_SECOND_FIELDS


def _pickle_globals(path: Path, limit: int = 3) -> list[str]:
    """The first ``module.name`` globals a plain pickle file imports (read with :mod:`pickletools`, which never
    runs the file); empty when it cannot be parsed."""
    import pickletools

    found: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as handle:
            for opcode, arg, _ in pickletools.genops(handle):
                if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                    strings.append(str(arg))
                elif opcode.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if len(found) >= limit:
                    break
    except Exception:  # a damaged pickle: say what could be read
        pass
    return found


def _blocked_global(message: str) -> str | None:
    """The Python object torch's safe loader refused (``posix.system``), from its error message."""
    match = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", message)
    return match.group(1) if match else None


def describe_unreadable(path: str | os.PathLike[str], error: BaseException | None = None) -> str:
    """What a file that ``torch.load(weights_only=True)`` refused is, and what to do about it.

    Never suggests loading it unsafely: a file that holds Python objects other than tensors is refused because
    loading it could run code.
    """
    p = Path(path)
    with open(p, "rb") as handle:
        head = handle.read(16)
    message = str(error or "")
    code = ("it holds Python objects other than tensors and plain data{found}, and loading such a file can run "
            "arbitrary code, so it is refused. Use a checkpoint written by featherface (save_checkpoint) or a state "
            "dict of tensors (torch.save(model.state_dict(), path))")
    if not head:
        return "the file is empty (0 bytes): an interrupted download or copy? Fetch it again"
    if head.startswith(_ZIP_MAGIC):
        blocked = _blocked_global(message)
        if blocked:
            return "a PyTorch file, but " + code.format(found=f" ({blocked})")
        if "central directory" in message or "zip archive" in message:
            return ("a damaged or truncated PyTorch file (its zip archive is incomplete): an interrupted download, "
                    "copy or save? Fetch or save it again")
        return f"a zip file that is not a readable PyTorch checkpoint ({_torch_reason(message)})"
    if head[0] == _PICKLE_PROTOCOL_BYTE:
        found = _pickle_globals(p) or ([_blocked_global(message)] if _blocked_global(message) else [])
        if found:
            return "a Python pickle: " + code.format(found=f" (it imports {', '.join(found)})")
        return (f"a Python pickle (or an old-format PyTorch file) that cannot be read safely "
                f"({_torch_reason(message)}): damaged, or not a checkpoint")
    if _looks_like_onnx(head, p):
        return ("it is an ONNX model: run it with featherface.inference.onnx.OnnxFaceDetector, or "
                "`featherface evaluate --peer featherface_onnx --weights FILE`")
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"a text file (it starts with {head.decode('ascii', 'replace')!r}), not a PyTorch checkpoint"
    return (f"unrecognised content (it starts with the bytes {head[:8].hex(' ')}): not a file written by "
            "torch.save; check the path")


#: Lines of torch's loader messages that are advice about its own options, not about the file.
_TORCH_BOILERPLATE = ("weights_only", "weights only", "please file an issue", "check the documentation")


def _torch_reason(message: str) -> str:
    """The specific reason in a torch loading error, without its advice about turning off safe loading."""
    for line in message.splitlines():
        line = line.strip().rstrip(":")
        if line and not any(phrase in line.lower() for phrase in _TORCH_BOILERPLATE):
            return line
    return "unreadable"


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def detect_format(obj: Any) -> str:
    """``"featherface"`` (ours), ``"fork"`` (fork state dict), ``"imagenet"`` (MobileNet tar) or ``"unknown"``."""
    if isinstance(obj, Mapping) and "model" in obj and "config" in obj:
        return "featherface"
    if _is_tensor_mapping(obj) and any(k.startswith("body.stage") for k in obj):
        return "fork"
    if isinstance(obj, Mapping) and _is_tensor_mapping(obj.get("state_dict")):
        if any(_strip_module(k).startswith("stage1.") for k in obj["state_dict"]):
            return "imagenet"
    return "unknown"


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(map(str, keys[:8])) + (", ..." if len(keys) > 8 else "")
        return f"a dict with {len(keys)} keys ({shown})"
    return f"a {type(obj).__name__}"


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, /, **extra: Any) -> Path:
    """Write ``{"format", "format_version", "model", "config", **extra}`` to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed to disk, then renamed
    over ``path`` (``os.replace``), so a crash never leaves a truncated checkpoint.

    Args:
        path: destination (parent directories are created).
        model: a :class:`~featherface.models.featherface.FeatherFace` (or a wrapper with ``.module``
            / ``._orig_mod``); its ``config`` is stored with ``to_dict()``.
        **extra: more entries (optimizer / scheduler state, epoch, metrics...). Must not use the
            reserved names ``format``, ``format_version``, ``model``, ``config``.

    Returns:
        The path written.
    """
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ValueError(f"save_checkpoint: extra entries use reserved names {clash}")
    model = _unwrap(model)
    config = getattr(model, "config", None)
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
    }
    payload.update(extra)
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        raise CheckpointWriteError(dest, err) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, dest)
    except BaseException as err:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, CheckpointWriteError):
            raise CheckpointWriteError(dest, err) from err
        raise
    log.info("saved checkpoint %s", dest)
    return dest


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (full disk, file size limit, permissions). The message names the
    file, the reason and says that an older file of that name is unchanged. Attribute ``path``: the destination."""

    def __init__(self, path: Path, error: BaseException) -> None:
        reason = _write_failure_reason(error)
        kept = f"the previous {path.name} is unchanged" if path.is_file() else f"no {path.name} was written"
        super().__init__(getattr(error, "errno", None) or 0,
                         f"cannot write the checkpoint {path}: {reason}; {kept}. Free some space or choose "
                         "another output folder")
        self.path = path
        #: more advice added by the caller (e.g. the trainer: what last.pt holds and how to continue).
        self.advice: str | None = None

    def __str__(self) -> str:
        return f"{self.strerror}. {self.advice}" if self.advice else f"{self.strerror}, then run again"


def _write_failure_reason(error: BaseException) -> str:
    """A short reason for a failed write: the OS error, or torch's zip writer error without its C++ location."""
    import errno as errno_codes

    code = getattr(error, "errno", None)
    if code == errno_codes.ENOSPC:
        return "no space left on the device"
    if code == errno_codes.EFBIG:
        return "file too large (a file size limit, see `ulimit -f`)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    raw = str(error)
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", raw).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    if "inline_container" in raw or "PytorchStreamWriter" in raw or "file write failed" in raw:
        return f"the file could not be written completely ({text}; a full disk, or a file size limit set by ulimit -f)"
    return text


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint in our format and check its structure.

    Raises:
        FileNotFoundError: missing path.
        CheckpointError: not a PyTorch file, or not in our format (the message names what it is,
            e.g. a fork state dict, and which loader reads it).
    """
    obj = read_checkpoint(path, map_location)
    kind = detect_format(obj)
    if kind != "featherface":
        hint = {
            "fork": " It is a FeatherFace fork state dict: load it with load_fork_weights(model, path).",
            "imagenet": " It is the ImageNet MobileNetV1 file: load it with "
            "load_imagenet_backbone(model.backbone, path).",
        }.get(kind, "")
        raise CheckpointError(f"{path}: not a FeatherFace checkpoint: found {_describe(obj)}.{hint}")
    version = obj.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this library reads ({FORMAT_VERSION})"
        )
    if not isinstance(obj["model"], Mapping):
        raise CheckpointError(f"{path}: entry 'model' is {_describe(obj['model'])}, expected a state dict")
    if obj["config"] is not None and not isinstance(obj["config"], Mapping):
        raise CheckpointError(f"{path}: entry 'config' is {_describe(obj['config'])}, expected a mapping")
    return dict(obj)


def build_model_from_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint of ours describes and load its weights (strict). Returned in eval mode."""
    from featherface.models.featherface import FeatherFace, FeatherFaceConfig

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
    from featherface.models.registry import create_model

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
        config = getattr(_unwrap(model), "config", None)
        if config is not None and hasattr(config, "to_dict") and obj.get("config") not in (None, config.to_dict()):
            log.warning("%s: checkpoint config %s differs from the model's %s", path, obj["config"], config.to_dict())
        return load_state_dict_checked(model, obj["model"], str(path))
    if kind == "fork":
        return load_fork_weights(model, obj, name=str(path))
    raise CheckpointError(f"{path}: not a FeatherFace or fork checkpoint: found {_describe(obj)}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    if len(items) > _LIST_LIMIT:
        shown += f", ... ({len(items) - _LIST_LIMIT} more)"
    return f"\n  {title} ({len(items)}): {shown}"


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    required: Callable[[str], bool] | None = None,
) -> LoadReport:
    """Copy ``state_dict`` into ``model`` after checking keys and shapes; raise one clear error otherwise.

    Args:
        model: target module.
        state_dict: source tensors, already named like ``model.state_dict()``.
        source: name used in messages.
        required: which model keys must be present in ``state_dict`` (default: all). Keys not
            required and absent are reported in ``LoadReport.not_loaded``.

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches ("a checkpoint
            of another architecture").
    """
    model = _unwrap(model)
    target = model.state_dict()
    required = required or (lambda key: True)
    missing = [k for k in target if k not in state_dict and required(k)]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state_dict.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or mismatched:
        message = f"{source}: the checkpoint does not fit this model (another architecture or width?)"
        if missing:
            message += _listing("missing keys", missing)
        if unexpected:
            message += _listing("unexpected keys", unexpected)
        if mismatched:
            message += _listing("shape mismatches", mismatched)
        raise CheckpointError(message)
    _check_finite(state_dict, source)
    model.load_state_dict(dict(state_dict), strict=False)
    report = LoadReport(source=source, loaded=list(state_dict))
    report.not_loaded = [k for k in target if k not in state_dict]
    return report


def _check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity: a model with them detects nothing, silently.

    Raises:
        CheckpointError: naming ``source`` and the first broken tensors.
    """
    broken = [k for k, v in state_dict.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(
            f"{source}: the weights hold NaN or infinite values, so the model would detect nothing"
            + _listing("non-finite tensors", broken)
            + "\n  Saved from a diverged training run? Use an earlier checkpoint (e.g. last.pt of a finished epoch)."
        )


# ----------------------------------------------------------------------------------------------
# The fork's key names (the only place they appear)
# ----------------------------------------------------------------------------------------------

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


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


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
            raise CheckpointError(f"{name}: not a FeatherFace fork state dict: found {_describe(source)}")
    elif isinstance(source, Mapping) and not _is_tensor_mapping(source):
        raise CheckpointError(f"{name}: expected a state dict of tensors, found {_describe(source)}")
    target_keys = list(_unwrap(model).state_dict())
    converted, skipped = convert_fork_state_dict(source, target_keys)
    unknown = [k for k, why in skipped.items() if why == "unrecognised fork key"]
    if unknown and strict_trunk:
        raise CheckpointError(f"{name}: keys this loader does not know" + _listing("unrecognised keys", unknown))
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
    if not _is_tensor_mapping(obj):
        raise CheckpointError(f"{path}: not an ImageNet MobileNetV1 checkpoint: found {_describe(obj)}")
    converted: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in obj.items():
        bare = _strip_module(key)
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
            f"{path}: not an ImageNet MobileNetV1-0.25 checkpoint" + _listing("unrecognised keys", unknown)
        )
    report = load_state_dict_checked(backbone, converted, str(path))
    report.skipped = skipped
    log.info("%s: loaded %d backbone tensors (skipped %d)", path, len(report.loaded), len(skipped))
    return report
