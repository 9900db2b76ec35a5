"""Model summaries as data: parameter table, multiply-accumulate count, output shapes.

Nothing here prints; the CLI formats the returned dataclasses.

MAC convention (per image, batch 1, at a given H x W input):

* ``nn.Conv2d``: ``C_out * (C_in / groups) * k_h * k_w`` per output position; the bias is free.
  ``nn.Conv1d`` likewise with ``k`` (ECA's 1-D convolution across channels: ``C * k`` per image).
* ``nn.Linear``: ``in_features * out_features`` per output row.
* A module that defines ``extra_macs(input_shape) -> int`` (``input_shape`` the (B, C, H, W) of its
  first input) adds that number for its *own* work, i.e. what is not done by child modules whose
  hooks fire. :class:`~featherface.nn.ssh.ModulatedDeformConv2d` uses it for the deformable sampling
  (4 MACs per sampled value for bilinear interpolation + 1 for the modulation mask, per input
  channel, kernel tap and output position) plus its main convolution; its offset and modulator
  convolutions are ``nn.Conv2d`` children, counted by the convolution rule.
* :class:`~featherface.nn.odconv.ODConv2d` (which does all its work with functional calls, so no
  child hook fires) is counted analytically unless it defines ``extra_macs``: the attention
  branch (fc ``C_in * A`` and the heads ``A * (C_in [+ C_out] [+ k^2] [+ n])``; the global average
  pool is free), the kernel mixing ``n * C_out * C_in/g * k^2`` when n > 1, the folding of the
  spatial / channel / filter attentions into the kernel (``C_out * C_in/g * k^2`` each), and the
  per-sample convolution. In the static case (k = 1, n = 1) the input and output scalings
  (``C_in H W + C_out H' W'``) replace the folding.
* BatchNorm (folded into the preceding convolution at export), activations, pooling, resizing,
  BiFPN fusion and attention gating multiplications are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from featherface.nn.odconv import ODConv2d

__all__ = [
    "MacRow",
    "ModelSummary",
    "ParamRow",
    "count_macs",
    "output_shapes",
    "parameter_table",
    "summarize",
]


@dataclass(frozen=True)
class ParamRow:
    """Parameters of one module (grouped at a depth of the module tree).

    Attributes:
        name: dotted module path ("" for the root).
        kind: class name of the module.
        params: number of parameter elements.
        trainable: of which ``requires_grad``.
        own_only: True when the row counts only the parameters held directly by ``name`` (its
            children have rows of their own, e.g. the BiFPN fusion weights of a cell).
    """

    name: str
    kind: str
    params: int
    trainable: int
    own_only: bool = False


@dataclass(frozen=True)
class MacRow:
    """Multiply-accumulates of one module subtree (see the module docstring for the convention)."""

    name: str
    kind: str
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """Everything ``featherface info`` shows.

    Attributes:
        input_size: (H, W) of the input used for MACs and shapes.
        total_params / trainable_params: whole model.
        param_table: :class:`ParamRow` per module at ``depth``.
        total_macs: per image.
        mac_table: :class:`MacRow` per module at ``depth`` (modules with zero MACs omitted).
        macs_by_kind: MACs per counted layer type ("Conv2d", "ModulatedDeformConv2d", ...).
        output_shapes: name -> shape, for the intermediate maps (when the model has
            ``forward_features``) and the outputs ``loc``, ``logits``, ``landmarks``.
    """

    input_size: tuple[int, int]
    total_params: int
    trainable_params: int
    param_table: list[ParamRow]
    total_macs: int
    mac_table: list[MacRow]
    macs_by_kind: dict[str, int]
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _prefix(name: str, depth: int) -> str:
    return ".".join(name.split(".")[:depth]) if name else ""


def parameter_table(model: nn.Module, depth: int = 2) -> list[ParamRow]:
    """Parameters grouped by module path truncated to ``depth`` components, in registration order."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    modules = dict(model.named_modules())
    totals: dict[str, list[int]] = {}
    for full, p in model.named_parameters():
        owner = full.rsplit(".", 1)[0] if "." in full else ""
        key = _prefix(owner, depth)
        row = totals.setdefault(key, [0, 0])
        row[0] += p.numel()
        row[1] += p.numel() if p.requires_grad else 0
    keys = list(totals)
    rows = []
    for key in keys:
        has_children = any(other != key and other.startswith(key + "." if key else "") for other in keys)
        rows.append(
            ParamRow(
                name=key,
                kind=type(modules[key]).__name__,
                params=totals[key][0],
                trainable=totals[key][1],
                own_only=has_children,
            )
        )
    return rows


def _conv_macs(module: nn.Conv1d | nn.Conv2d, output: torch.Tensor) -> int:
    """MACs of a 1-D or 2-D convolution given its (B, C_out, *spatial) output."""
    per_position = module.out_channels * (module.in_channels // module.groups) * _prod(module.kernel_size)
    return per_position * output.shape[0] * _prod(output.shape[2:])


def _prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    rows = output.numel() // module.out_features
    return rows * module.in_features * module.out_features


def odconv_macs(module: Any, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
    """MACs of one ODConv2d forward (see the module docstring), for the given (B, C, H, W) shapes."""
    b = int(input_shape[0])
    cin, cout, k, g, n = module.in_channels, module.out_channels, module.kernel_size, module.groups, module.kernel_num
    branch = module.attention
    hidden = branch.fc.out_channels
    heads = cin + sum(
        fc.out_channels for fc in (branch.filter_fc, branch.spatial_fc, branch.kernel_fc) if fc is not None
    )
    attention = cin * hidden + hidden * heads
    kernel_elems = cout * (cin // g) * k * k
    out_positions = int(output_shape[2]) * int(output_shape[3])
    conv = kernel_elems * out_positions
    if getattr(module, "is_static", False):
        dynamic = cin * int(input_shape[2]) * int(input_shape[3])
        if branch.filter_fc is not None:
            dynamic += cout * out_positions
    else:
        folds = 1 + (branch.spatial_fc is not None) + (branch.filter_fc is not None)
        dynamic = (n * kernel_elems if n > 1 else 0) + folds * kernel_elems
    return b * (attention + dynamic + conv)


def _shape(t: Any) -> tuple[int, ...] | None:
    if isinstance(t, torch.Tensor):
        return tuple(t.shape)
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return tuple(t[0].shape)
    return None


def _make_input(model: nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> torch.Tensor:
    h, w = input_size
    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    return torch.zeros(1, in_channels, int(h), int(w), device=device, dtype=dtype)


def _run_eval(model: nn.Module, fn: Callable[[], Any]) -> Any:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was_training)


def count_macs(
    model: nn.Module, input_size: tuple[int, int] = (640, 640), depth: int = 2, in_channels: int = 3
) -> tuple[int, list[MacRow], dict[str, int]]:
    """Count multiply-accumulates of one forward on a zero (1, C, H, W) input (eval mode, no grad).

    Args:
        model: any module taking a (1, C, H, W) tensor.
        input_size: (H, W).
        depth: module-path depth of the rows.
        in_channels: C of the input (3 for FeatherFace).

    Returns:
        (total MACs, rows per module at ``depth`` in registration order, MACs per layer type).
    """
    names = {m: n for n, m in model.named_modules()}
    records: list[tuple[str, str, int]] = []
    handles = []

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        macs = 0
        kind = type(module).__name__
        out = output[0] if isinstance(output, (tuple, list)) else output
        in_shape = _shape(inputs[0]) if inputs else None
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            macs += _conv_macs(module, out)
        elif isinstance(module, nn.Linear):
            macs += _linear_macs(module, out)
        if hasattr(module, "extra_macs") and in_shape is not None:
            macs += int(module.extra_macs(in_shape))
        elif isinstance(module, ODConv2d) and in_shape is not None:
            macs += odconv_macs(module, in_shape, tuple(out.shape))
        if macs:
            records.append((names.get(module, "?"), kind, macs))

    for module in model.modules():
        handles.append(module.register_forward_hook(hook))
    try:
        _run_eval(model, lambda: model(_make_input(model, input_size, in_channels)))
    finally:
        for handle in handles:
            handle.remove()

    order = {_prefix(n, depth): i for i, (n, _) in reversed(list(enumerate(model.named_modules())))}
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    per_row: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    for name, kind, macs in records:
        key = _prefix(name, depth)
        per_row[key] = per_row.get(key, 0) + macs
        by_kind[kind] = by_kind.get(kind, 0) + macs
    ordered = sorted(per_row.items(), key=lambda kv: order.get(kv[0], 1 << 30))
    rows = [MacRow(k, kinds.get(k, "?"), v) for k, v in ordered]
    return sum(per_row.values()), rows, by_kind


def output_shapes(model: nn.Module, input_size: tuple[int, int] = (640, 640)) -> dict[str, tuple[int, ...]]:
    """Shapes of the intermediate maps (``forward_features`` when present) and of the outputs, batch 1."""

    def run() -> dict[str, tuple[int, ...]]:
        x = _make_input(model, input_size)
        shapes: dict[str, tuple[int, ...]] = {"input": tuple(x.shape)}
        if hasattr(model, "forward_features"):
            shapes.update({k: tuple(v.shape) for k, v in model.forward_features(x).items()})
        out = model(x)
        if isinstance(out, (tuple, list)) and len(out) == 3:
            for name, t in zip(("loc", "logits", "landmarks"), out):
                shapes[name] = tuple(t.shape)
        elif isinstance(out, torch.Tensor):
            shapes["output"] = tuple(out.shape)
        return shapes

    return _run_eval(model, run)


def summarize(model: nn.Module, input_size: tuple[int, int] = (640, 640), depth: int = 2) -> ModelSummary:
    """Parameter table, MACs and output shapes of ``model`` at an (H, W) input."""
    total_macs, mac_rows, by_kind = count_macs(model, input_size, depth)
    return ModelSummary(
        input_size=(int(input_size[0]), int(input_size[1])),
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        param_table=parameter_table(model, depth),
        total_macs=total_macs,
        mac_table=mac_rows,
        macs_by_kind=by_kind,
        output_shapes=output_shapes(model, input_size),
    )
