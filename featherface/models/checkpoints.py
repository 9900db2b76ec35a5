"""Our checkpoint format, and reading any weights file safely.

Our format (written by :func:`save_checkpoint`, read by :func:`load_checkpoint` /
:func:`featherface.models.loading.build_model_from_checkpoint`) is one ``torch.save``'d dict::

    {"format": "featherface", "format_version": 1,
     "model": state_dict, "config": FeatherFaceConfig.to_dict(), ...extra (optimizer, epoch, ...)}

readable with ``torch.load(weights_only=True)`` as long as the extras are plain data and tensors.

Every weights file is read by :func:`read_checkpoint` (``weights_only=True``; a refused file is explained by
:func:`describe_unreadable`, never loaded unsafely) and every state dict is copied into a model by
:func:`load_state_dict_checked` (keys, shapes and finite values checked, one clear error otherwise). The fork's
and the ImageNet file's key names are mapped in :mod:`featherface.models.convert`; a model is built from a file
of any of these formats by :mod:`featherface.models.loading`. This module imports no model, so every model
module can use it.
"""

from __future__ import annotations

import errno
import logging
import os
import pickletools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from featherface.utils.io import atomic_target

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "LoadReport",
    "describe_object",
    "describe_unreadable",
    "detect_format",
    "is_tensor_mapping",
    "key_listing",
    "load_checkpoint",
    "load_state_dict_checked",
    "read_checkpoint",
    "save_checkpoint",
    "strip_module_prefix",
    "write_checkpoint_file",
    "unwrap_model",
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


def strip_module_prefix(key: str) -> str:
    """``key`` without the ``module.`` prefix that ``nn.DataParallel`` adds."""
    return key[len("module.") :] if key.startswith("module.") else key


def is_tensor_mapping(obj: Any) -> bool:
    """A non-empty mapping of string keys to tensors (a state dict)."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def detect_format(obj: Any) -> str:
    """``"featherface"`` (ours), ``"fork"`` (fork state dict), ``"imagenet"`` (MobileNet tar) or ``"unknown"``."""
    if isinstance(obj, Mapping) and "model" in obj and "config" in obj:
        return "featherface"
    if is_tensor_mapping(obj) and any(k.startswith("body.stage") for k in obj):
        return "fork"
    if isinstance(obj, Mapping) and is_tensor_mapping(obj.get("state_dict")):
        if any(strip_module_prefix(k).startswith("stage1.") for k in obj["state_dict"]):
            return "imagenet"
    return "unknown"


def describe_object(obj: Any) -> str:
    """What ``obj`` is, for messages: ``a dict with N keys (k1, k2, ...)`` or ``a <type name>``."""
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(map(str, keys[:8])) + (", ..." if len(keys) > 8 else "")
        return f"a dict with {len(keys)} keys ({shown})"
    return f"a {type(obj).__name__}"


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, /, **extra: Any) -> Path:
    """Write ``{"format", "format_version", "model", "config", **extra}`` to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed to disk, then renamed
    over ``path`` (:func:`featherface.utils.io.atomic_target` with ``fsync=True``), so a crash never leaves a
    truncated checkpoint; a failed write raises :class:`CheckpointWriteError`.

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
    model = unwrap_model(model)
    config = getattr(model, "config", None)
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
    }
    payload.update(extra)
    return write_checkpoint_file(path, payload)


def write_checkpoint_file(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """``torch.save`` a checkpoint dict to ``path`` atomically (temporary file, flushed, renamed over ``path``).

    Raises:
        CheckpointWriteError: the file could not be written (the message names it and the reason).
    """
    dest = Path(path)
    try:
        with atomic_target(dest, fsync=True) as tmp, open(tmp, "wb") as handle:
            torch.save(dict(payload), handle)
    except (OSError, RuntimeError) as err:
        if isinstance(err, CheckpointWriteError):
            raise
        raise CheckpointWriteError(dest, err) from err
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
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC:
        return "no space left on the device"
    if code == errno.EFBIG:
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
        raise CheckpointError(f"{path}: not a FeatherFace checkpoint: found {describe_object(obj)}.{hint}")
    version = obj.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this library reads ({FORMAT_VERSION})"
        )
    if not isinstance(obj["model"], Mapping):
        raise CheckpointError(f"{path}: entry 'model' is {describe_object(obj['model'])}, expected a state dict")
    if obj["config"] is not None and not isinstance(obj["config"], Mapping):
        raise CheckpointError(f"{path}: entry 'config' is {describe_object(obj['config'])}, expected a mapping")
    return dict(obj)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else None
        )
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def key_listing(title: str, items: list[str]) -> str:
    """A message line ``title (N): item, item, ...`` showing at most the first 12 items."""
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
    model = unwrap_model(model)
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
            message += key_listing("missing keys", missing)
        if unexpected:
            message += key_listing("unexpected keys", unexpected)
        if mismatched:
            message += key_listing("shape mismatches", mismatched)
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
            + key_listing("non-finite tensors", broken)
            + "\n  Saved from a diverged training run? Use an earlier checkpoint (e.g. last.pt of a finished epoch)."
        )
