"""Switch a model's attention off, to measure what it contributes (``featherface evaluate --bypass-attention``).

Two kinds of attention, two definitions of "bypassed":

* **Attention blocks at the six sites** (:class:`~featherface.nn.odconv_attention.ODConvAttention`, ``y = x +
  scale * ODConv_dw(x)``; :class:`~featherface.nn.cbam.CBAM`; :class:`~featherface.nn.eca_sam.ECASAM`): the block
  is replaced by the identity, ``y = x``. This is the trunk the block was added to.
* **ODConv2d modules that are the convolution itself** (the SSH convs of ``featherface_odconv_ssh``): removing
  them would remove the convolution, so each attention (channel, filter, spatial, kernel) is fixed to its mean over
  a set of calibration images (:meth:`~featherface.nn.odconv.ODConv2d.fix_attentions`): the ODConv becomes a static
  convolution, the same kernel ``mean(a_f) mean(a_c) mean(a_s) sum_i mean(a_w)[i] W_i`` for every image. (Each
  attention is averaged separately; the kernel built from the mean attentions is not the mean of the per-image
  kernels, which would couple the heads.) The means are taken in one pass of the model with dynamic attentions,
  in eval mode, one calibration image at a time.

Both are in place; :func:`restore_attention` undoes a bypass. Calibration inputs must be prepared as for the
evaluation (same resizing), e.g. with :func:`featherface.analysis.attention.network_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

from featherface.analysis.attention import capture_attentions
from featherface.nn.cbam import CBAM
from featherface.nn.eca_sam import ECASAM
from featherface.nn.odconv import ODConv2d, ODConvAttentions
from featherface.nn.odconv_attention import ODConvAttention
from featherface.train.metrics import odconv_modules

__all__ = [
    "BypassReport",
    "attention_blocks",
    "bypass_attention",
    "mean_attentions",
    "restore_attention",
]


#: The attention blocks FeatherFace variants insert (each a residual around its attention, so bypassable).
_BLOCK_TYPES: tuple[type[nn.Module], ...] = (ODConvAttention, CBAM, ECASAM)


@dataclass
class BypassReport:
    """What :func:`bypass_attention` changed.

    Attributes:
        identity: ``{name: block}`` of the attention blocks replaced by ``nn.Identity`` (kept for
            :func:`restore_attention`).
        fixed: names of the ODConv2d modules whose attentions were fixed to their calibration mean.
        calibration_images: the number of calibration images (0 when no ODConv2d needed them).
    """

    identity: dict[str, nn.Module] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    calibration_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``identity`` (block name -> class name), ``fixed``, ``calibration_images``."""
        return {"identity": {name: type(block).__name__ for name, block in self.identity.items()},
                "fixed": list(self.fixed), "calibration_images": self.calibration_images}

    def describe(self) -> str:
        """One sentence for logs and the CLI."""
        parts = []
        if self.identity:
            parts.append(f"{len(self.identity)} attention blocks replaced by identity "
                         f"({', '.join(self.identity)})")
        if self.fixed:
            parts.append(f"{len(self.fixed)} ODConv2d attentions fixed to their mean over "
                         f"{self.calibration_images} calibration images")
        return "; ".join(parts) or "nothing bypassed"


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The attention blocks of ``model`` (ODConvAttention, CBAM, ECASAM), outermost only, in module order."""
    types = _BLOCK_TYPES
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return found


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


@torch.no_grad()
def mean_attentions(model: nn.Module, inputs: Iterable[torch.Tensor]) -> tuple[dict[str, ODConvAttentions], int]:
    """Each ODConv2d's attentions averaged over the images of ``inputs`` (float64 sums), eval mode.

    Args:
        inputs: network inputs (B, 3, H, W); a batch counts as B images.

    Returns:
        ``({module name: ODConvAttentions with B = 1 (skipped heads: ones)}, number of images)``.

    Raises:
        ValueError: ``inputs`` is empty.
    """
    sums: dict[str, dict[str, torch.Tensor | None]] = {}
    images = 0
    for x in inputs:
        for name, heads in capture_attentions(model, x).items():
            acc = sums.setdefault(name, {})
            for head, value in heads.items():
                if value is None:
                    acc[head] = None
                else:
                    total = value.double().sum(dim=0, keepdim=True)
                    acc[head] = total if acc.get(head) is None else acc[head] + total  # type: ignore[operator]
        images += x.shape[0]
    if images == 0:
        raise ValueError("no calibration images: the mean attentions are undefined")
    modules = dict(odconv_modules(model))
    means = {}
    for name, heads in sums.items():
        module = modules[name]
        dtype = module.weight.dtype

        def mean(head: str, size: int) -> torch.Tensor:
            value = heads[head]
            return module.weight.new_ones(1, size) if value is None else (value / images).to(dtype)

        k = module.kernel_size
        means[name] = ODConvAttentions(
            channel=mean("channel", module.in_channels).reshape(1, -1, 1, 1),
            filter=mean("filter", module.out_channels).reshape(1, -1, 1, 1),
            spatial=mean("spatial", k * k).reshape(1, 1, 1, 1, k, k),
            kernel=mean("kernel", module.kernel_num).reshape(1, -1, 1, 1, 1, 1),
            hidden=mean("hidden", 0).reshape(1, -1, 1, 1),
        )
    return means, images


def bypass_attention(model: nn.Module, calibration: Iterable[torch.Tensor] | None = None) -> BypassReport:
    """Switch the attention of ``model`` off, in place (definitions: module docstring).

    First every attention block (ODConvAttention, CBAM, ECASAM) becomes ``nn.Identity``; then every remaining
    ODConv2d gets its attentions fixed to their mean over ``calibration`` (computed on the model with the blocks
    already removed, so on the inputs the ODConvs will see).

    Args:
        model: e.g. a :class:`~featherface.models.featherface.FeatherFace`.
        calibration: network inputs (1, 3, H, W) prepared like the evaluation's; needed only when the model has
            ODConv2d modules outside attention blocks (read lazily, not at all otherwise).

    Raises:
        ValueError: the model has no attention to bypass, or it has ODConv2d convs and no calibration images.
    """
    report = BypassReport()
    for name, block in attention_blocks(model):
        parent, child = _parent(model, name)
        setattr(parent, child, nn.Identity())
        report.identity[name] = block
    convs = odconv_modules(model)
    if convs:
        if calibration is None:
            raise ValueError(f"{len(convs)} ODConv2d modules are convolutions, not blocks: bypassing them fixes "
                             "their attentions to the mean over calibration images, and none were given")
        means, report.calibration_images = mean_attentions(model, calibration)
        for name, module in convs:
            module.fix_attentions(means[name])
            report.fixed.append(name)
    if not report.identity and not report.fixed:
        raise ValueError("the model has no attention to bypass (no ODConvAttention, CBAM, ECASAM block, no ODConv2d)")
    return report


def restore_attention(model: nn.Module, report: BypassReport) -> None:
    """Undo :func:`bypass_attention`: put the blocks back and make the fixed ODConv2d attentions dynamic again."""
    for name, block in report.identity.items():
        parent, child = _parent(model, name)
        setattr(parent, child, block)
    modules = dict(model.named_modules())
    for name in report.fixed:
        module = modules[name]
        if isinstance(module, ODConv2d):
            module.fix_attentions(None)
