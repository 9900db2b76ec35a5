"""Exact deployment rewrites of a FeatherFace model: the same function, fewer and cheaper ONNX operators.

:func:`fuse_for_export` returns a copy of a model (eval mode) in which the slow-to-export blocks are replaced by
mathematically equal ones (float rounding aside, about 1e-6 relative), built for ONNX Runtime:

* **SSH deformable convs** (:class:`FusedDeformConvBN` inside :class:`FusedSSH`): the BatchNorm after each
  deformable conv is folded into its kernel and bias (the ONNX ``DeformConv`` has a bias input; the exporter
  folds BN only into ordinary ``Conv``), the factor 2 of the modulation mask ``2 sigmoid(m)`` is folded into
  the kernel too (a deformable conv is linear in its mask), and the offset and mask convs of all the
  deformable convs that read the same tensor become one ``Conv``: three per SSH instead of ten.
* **Dense ODConvs** (:class:`ComputedODConvBN`, ``featherface_odconv_ssh``'s SSH) at batch 1: the per-sample
  kernel is computed in the graph from the attention branch on the pooled input, with the following BatchNorm
  folded into the candidate kernels (its scale) and the conv bias (its shift), and applied with one ``Conv``.
  The two SSH convs that read the same tensor (``conv3x3`` and ``conv5x5_reduce`` on x, ``conv5x5`` and
  ``conv7x7_reduce`` on r) become one ``Conv`` with their kernels concatenated; likewise for plain SSH convs
  (:class:`StaticConvBN`). With 1 or 2 candidate kernels the kernels of such a group are computed together
  (:class:`MergedODConvKernels`: one attention branch, one sigmoid, no softmax): in ONNX Runtime the many tiny
  operators of per-conv attention branches, not the arithmetic, were the ODConv's cost.
* **SSH output** (:class:`FusedSSH`): the ReLU after the concatenation moves into the three branch convs
  (``relu(cat) == cat(relu)``; ONNX Runtime fuses a ReLU into a ``Conv``), and in a whole FeatherFace the channel
  shuffle is left out and the detection heads' 1x1 convs read the unshuffled channels through permuted weights.
* **Detection heads** (:class:`MergedHeads`): the box, class and landmark 1x1 convs of a level become one conv
  whose outputs are ordered per anchor (4 box, 2 class, 10 landmark values), so one transpose and one reshape per
  level, one concatenation and one split give the three outputs (three convs instead of nine; at batch 1 the
  reshapes have constant shapes, so ONNX Runtime reads no tensor shape to build them).
* **Residual depthwise ODConv sites** (:class:`ComputedODConvSite`, ``y = x + scale * ODConv_dw(x)``) at batch
  1: the per-sample depthwise kernel, with ``scale`` folded into the candidate kernels and the residual folded
  into the kernel as a 1 at its centre tap, applied with one depthwise ``Conv``.

In every ODConv the attention branch is also folded: its BatchNorm into the ``fc`` projection, the
temperature into the heads, and the four heads into one matrix product.

The ODConv rewrites need a batch of one: the kernel is computed for one sample, so its shape is static and the
exporter emits a plain ``Conv`` (with a dynamic batch the kernel shape would depend on the batch, which the
TorchScript-based exporter refuses). Height and width stay dynamic. :func:`fuse_for_export` with
``batch1=False`` rewrites only the batch-independent parts (the SSH deformable convs); the ODConv blocks then
keep their batch-independent im2col formulation.

The rewritten modules run in eager PyTorch as well (deformable convs by :func:`deform_conv2d_by_sampling`), so
a rewritten model can be compared with the original one directly (``tests/deploy/test_rewrites.py``).

Why one module of about 660 lines: it has one job, the exact rewrite that :func:`fuse_for_export` applies, and its
parts are not used apart (the SSH rewrite composes the ODConv and deformable ones, and the heads' permutation
undoes the SSH's shuffle); kept together so that each folding can be read next to the algebra above.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from featherface.models.heads import DetectionHeads
from featherface.nn.blocks import channel_shuffle
from featherface.nn.deform import deform_conv2d_by_sampling
from featherface.nn.odconv import ODConv2d
from featherface.nn.odconv_branch import AttentionBranch
from featherface.nn.odconv_attention import ODConvAttention
from featherface.nn.ssh import SSH, DeformConvBN, ModulatedDeformConv2d, ODConvBN, PlainConvBN

__all__ = [
    "ComputedODConvBN",
    "ComputedODConvSite",
    "FoldedAttention",
    "FusedDeformConvBN",
    "FusedSSH",
    "FusionReport",
    "MergedHeads",
    "MergedODConvKernels",
    "StaticConvBN",
    "fuse_for_export",
]

logger = logging.getLogger(__name__)


@dataclass
class FusionReport:
    """What :func:`fuse_for_export` rewrote: module paths per kind of rewrite, and what it left as it was."""

    ssh: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    deformable: list[str] = field(default_factory=list)
    odconv_dense: list[str] = field(default_factory=list)
    odconv_sites: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, int | list[str]]:
        """Counts per rewrite, and the paths of the blocks kept as they were (JSON-ready)."""
        return {"ssh": len(self.ssh), "heads": len(self.heads), "deformable": len(self.deformable),
                "odconv_dense": len(self.odconv_dense), "odconv_sites": len(self.odconv_sites), "kept": list(self.kept)}


# ------------------------------------------------------------------------------------------------ helpers
def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift`` per channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fuse_for_export: a BatchNorm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach().clone(), shift.detach().clone()


def _use_sampling() -> bool:
    """Eager mode: the ``grid_sample`` deformable conv; tracing / exporting: torchvision's (ONNX ``DeformConv``)."""
    exporting = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
    return not (exporting or torch.compiler.is_exporting())


# ---------------------------------------------------------------------------------------- ODConv folding
class FoldedAttention(nn.Module):
    """An ODConv attention branch for one sample, folded: pooled input -> one Gemm + ReLU -> one Gemm -> heads.

    ``fc`` absorbs the branch's BatchNorm (eval statistics), the heads absorb ``1 / T`` and are stacked into one
    matrix in the order channel, filter, spatial, kernel (skipped heads absent).

    Forward: ``(1, Cin, H, W)`` -> ``(channel (Cin,), filter (Cout,) or None, spatial (k*k,) or None,
    kernel (n,) or None)``, after sigmoid (softmax for the kernel head).
    """

    def __init__(self, branch: AttentionBranch) -> None:
        super().__init__()
        scale, shift = _bn_scale_shift(branch.bn)
        fc = branch.fc.weight.detach().flatten(1)
        self.fc_weight = nn.Parameter(fc * scale[:, None], requires_grad=False)
        self.fc_bias = nn.Parameter(shift, requires_grad=False)
        heads = [branch.channel_fc, branch.filter_fc, branch.spatial_fc, branch.kernel_fc]
        self.sizes = [0 if h is None else h.out_channels for h in heads]
        t = float(branch.temperature)
        used = [h for h in heads if h is not None]
        self.head_weight = nn.Parameter(torch.cat([h.weight.detach().flatten(1) for h in used]) / t,
                                        requires_grad=False)
        self.head_bias = nn.Parameter(torch.cat([h.bias.detach() for h in used]) / t, requires_grad=False)

    def head_rows(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The folded heads by name: (weight (rows, A), bias (rows,)), the skipped heads left out."""
        out, start = {}, 0
        for name, size in zip(("channel", "filter", "spatial", "kernel"), self.sizes):
            if size:
                out[name] = (self.head_weight[start:start + size].detach(), self.head_bias[start:start + size].detach())
                start += size
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                                                torch.Tensor | None]:
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (1, Cin)
        hidden = F.relu(F.linear(pooled, self.fc_weight, self.fc_bias))
        logits = F.linear(hidden, self.head_weight, self.head_bias)[0]
        channel_n, filter_n, spatial_n, kernel_n = self.sizes
        sig_n = channel_n + filter_n + spatial_n
        gates = torch.sigmoid(logits[:sig_n])
        channel = gates[:channel_n]
        filt = gates[channel_n:channel_n + filter_n] if filter_n else None
        spatial = gates[channel_n + filter_n:sig_n] if spatial_n else None
        kernel = torch.softmax(logits[sig_n:], dim=0) if kernel_n else None
        return channel, filt, spatial, kernel


def _mix_kernel(weight: torch.Tensor, channel: torch.Tensor, filt: torch.Tensor | None,
                spatial: torch.Tensor | None, kernel: torch.Tensor | None) -> torch.Tensor:
    """The folded kernel of one sample, ``a_f[o] a_c[i] a_s sum_j a_w[j] W_j``: (n, Cout, Cin/g, k, k) ->
    (Cout, Cin/g, k, k). Shapes come from ``weight`` (static), never from the input, so the exported ``Conv``
    has a kernel of known shape."""
    n, cout, cin_g, kh, kw = (int(s) for s in weight.shape)
    if kernel is None:
        w = weight[0]
    else:
        w = torch.matmul(kernel.reshape(1, n), weight.reshape(n, -1)).reshape(cout, cin_g, kh, kw)
    if spatial is not None:
        w = w * spatial.reshape(1, 1, kh, kw)
    if cin_g == 1:  # depthwise: the channel attention is per output channel
        w = w * channel.reshape(cout, 1, 1, 1)
    else:
        w = w * channel.reshape(1, cin_g, 1, 1)
    if filt is not None:
        w = w * filt.reshape(cout, 1, 1, 1)
    return w


def _mix_dense_kernel(rows: torch.Tensor, kernel_shape: tuple[int, int, int, int], channel: torch.Tensor,
                      filt: torch.Tensor | None, spatial: torch.Tensor | None,
                      kernel: torch.Tensor | None) -> torch.Tensor:
    """The folded kernel of one sample for a dense conv, with two passes over the kernel instead of four: the
    per-row kernel weights ``a_f[o] a_w[j]`` mix the candidates in one batched matrix product over the rows
    ``rows`` (Cout, n, Cin k k), then the input-side gains ``a_c[i] a_s[t]`` (one small outer product) multiply
    the result. Returns (Cout, Cin, k, k)."""
    cout, n, cin_kk = (int(v) for v in rows.shape)
    _, cin, kh, kw = kernel_shape
    gains = channel.reshape(cin, 1)
    if spatial is not None:
        gains = gains * spatial.reshape(1, kh * kw)
    gains = gains.reshape(1, 1, cin_kk)
    if kernel is None:
        mixed = rows[:, :1] if filt is None else rows[:, :1] * filt.reshape(cout, 1, 1)
    else:
        per_row = kernel.reshape(1, 1, n) if filt is None else filt.reshape(cout, 1, 1) * kernel.reshape(1, 1, n)
        mixed = torch.matmul(per_row, rows)  # (Cout, 1, Cin k k)
    return (mixed * gains).reshape(cout, cin, kh, kw)


def _check_batch1(x: torch.Tensor, where: str) -> None:
    if not torch.jit.is_tracing() and x.shape[0] != 1:
        raise ValueError(f"{where} computes the kernel of one sample: it takes a batch of 1, got {tuple(x.shape)} "
                         "(export with a dynamic batch keeps the batch-independent ODConv formulation)")


class ComputedODConvBN(nn.Module):
    """:class:`~featherface.nn.ssh.ODConvBN` (dense ODConv -> BN -> activation) for a batch of one.

    The BN scale is folded into the candidate kernels (it multiplies output channels, as the filter attention
    does), the BN shift becomes the conv bias; the per-sample kernel is computed from the folded attention
    branch and applied with one ``F.conv2d`` (one ONNX ``Conv`` whose weight is a graph value).
    """

    def __init__(self, block: ODConvBN) -> None:
        super().__init__()
        conv: ODConv2d = block.conv
        scale, shift = _bn_scale_shift(block.bn)
        self.attention = FoldedAttention(conv.attention)
        # (n, Cout, Cin/g, k, k); kernel_scale: the constant of ODConv2d's unit_neutral_gain (1 without it)
        weight = conv.weight.detach() * (scale.view(1, -1, 1, 1, 1) * conv.kernel_scale)
        n, cout = int(weight.shape[0]), int(weight.shape[1])
        self.dense = conv.groups == 1
        if self.dense:  # the candidate kernels as rows: (Cout, n, Cin k k)
            weight = weight.permute(1, 0, 2, 3, 4).reshape(cout, n, -1)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.kernel_shape = (cout, conv.in_channels // conv.groups, conv.kernel_size, conv.kernel_size)
        self.out_channels = cout
        self.bias = nn.Parameter(shift, requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.act = copy.deepcopy(block.act)

    def kernel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) of the conv for the sample ``x``."""
        _check_batch1(x, "ComputedODConvBN")
        if self.dense:
            return _mix_dense_kernel(self.weight, self.kernel_shape, *self.attention(x)), self.bias
        return _mix_kernel(self.weight, *self.attention(x)), self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.kernel(x)
        return self.act(F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups))


class StaticConvBN(nn.Module):
    """:class:`~featherface.nn.ssh.PlainConvBN` with its BN folded: ``act(conv(x, s W) + b)``; ``kernel`` returns
    the constant (weight, bias), so it can be merged with other convs on the same input."""

    def __init__(self, block: PlainConvBN) -> None:
        super().__init__()
        conv = block.conv
        scale, shift = _bn_scale_shift(block.bn)
        self.weight = nn.Parameter(conv.weight.detach() * scale.view(-1, 1, 1, 1), requires_grad=False)
        self.out_channels = conv.out_channels
        bias = shift if conv.bias is None else shift + conv.bias.detach() * scale
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.act = copy.deepcopy(block.act)

    def kernel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups))


class ComputedODConvSite(nn.Module):
    """:class:`~featherface.nn.odconv_attention.ODConvAttention` (``x + scale * ODConv_dw(x)``) for a batch of one.

    ``scale`` is folded into the candidate kernels and the residual into the computed kernel (1 added at the
    centre tap), so the block is one depthwise ``Conv`` whose weight is computed from the attention branch.
    """

    def __init__(self, block: ODConvAttention) -> None:
        super().__init__()
        conv: ODConv2d = block.conv
        k = conv.kernel_size
        if not (conv.groups == conv.in_channels == conv.out_channels and conv.stride == 1 and conv.dilation == 1
                and k % 2 == 1 and conv.padding == k // 2):
            raise ValueError("ComputedODConvSite needs a stride-1, 'same'-padded depthwise ODConv with an odd kernel")
        self.attention = FoldedAttention(conv.attention)
        scale = block.scale.detach()
        self.weight = nn.Parameter(conv.weight.detach() * (scale.view(1, -1, 1, 1, 1) * conv.kernel_scale),
                                   requires_grad=False)
        identity = torch.zeros(conv.out_channels, 1, k, k)
        identity[:, :, k // 2, k // 2] = 1.0
        self.register_buffer("identity", identity)
        self.channels, self.padding = conv.out_channels, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch1(x, "ComputedODConvSite")
        w = _mix_kernel(self.weight, *self.attention(x)) + self.identity
        return F.conv2d(x, w, None, 1, self.padding, 1, self.channels)


# -------------------------------------------------------------------------------------- deformable convs
class FusedDeformConvBN(nn.Module):
    """:class:`~featherface.nn.ssh.DeformConvBN` with its BN folded: ``act(DCN(x, offset, sigmoid(m), 2 s W) + b)``.

    The offset / mask convolution is not held here: :class:`FusedSSH` computes it, merged with those of the
    other deformable convs reading the same input, and passes the slice ``om`` (2 k^2 offset channels, then
    k^2 mask logits).
    """

    def __init__(self, block: DeformConvBN) -> None:
        super().__init__()
        conv: ModulatedDeformConv2d = block.conv
        scale, shift = _bn_scale_shift(block.bn)
        self.weight = nn.Parameter(2.0 * conv.weight.detach() * scale.view(-1, 1, 1, 1), requires_grad=False)
        self.bias = nn.Parameter(shift, requires_grad=False)
        self.taps = conv.kernel_size * conv.kernel_size
        self.stride, self.padding = conv.stride, conv.padding
        self.act = copy.deepcopy(block.act)

    @staticmethod
    def offset_mask_conv(block: DeformConvBN) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) of ``block``'s offset conv followed by its mask conv, as one conv."""
        conv = block.conv
        weight = torch.cat([conv.offset_conv.weight, conv.mask_conv.weight]).detach()
        bias = torch.cat([conv.offset_conv.bias, conv.mask_conv.bias]).detach()
        return weight, bias

    def forward(self, x: torch.Tensor, om: torch.Tensor) -> torch.Tensor:
        offset = om[:, : 2 * self.taps]
        mask = torch.sigmoid(om[:, 2 * self.taps: 3 * self.taps])
        if _use_sampling():
            y = deform_conv2d_by_sampling(x, offset, self.weight, mask, self.stride, self.padding)
            y = y + self.bias.view(1, -1, 1, 1)
        else:
            y = deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding, mask=mask)
        return self.act(y)


class _MergedConv(nn.Module):
    """The offset / mask convs of several deformable convs on one input, as one conv; forward returns the slices."""

    def __init__(self, blocks: list[DeformConvBN]) -> None:
        super().__init__()
        parts = [FusedDeformConvBN.offset_mask_conv(b) for b in blocks]
        conv = blocks[0].conv.offset_conv
        if any(b.conv.offset_conv.stride != conv.stride or b.conv.offset_conv.padding != conv.padding
               or b.conv.offset_conv.kernel_size != conv.kernel_size for b in blocks):
            raise ValueError("FusedSSH: deformable convs on one input with different offset-conv geometry")
        self.weight = nn.Parameter(torch.cat([w for w, _ in parts]), requires_grad=False)
        self.bias = nn.Parameter(torch.cat([b for _, b in parts]), requires_grad=False)
        self.sizes = [int(w.shape[0]) for w, _ in parts]
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        out, start = [], 0
        for size in self.sizes:
            out.append(y[:, start:start + size])
            start += size
        return out


class MergedODConvKernels(nn.Module):
    """The kernels of dense ODConvs reading the same input (:class:`ComputedODConvBN` parts with the same
    ``Cin``, ``k`` and ``n <= 2``), computed together in a few whole-group operations for a batch of one.

    Each part ``p`` has the kernel ``a_f[o] a_c[i] a_s[t] sum_j a_w[j] W_j[o, i, t]``. Here:

    * one attention branch: the parts' ``fc`` rows stacked, one head matrix (block-diagonal over the parts)
      and one sigmoid over every gate, in the order (row gates, kernel gates, channel, spatial);
    * with ``n = 2`` the kernel softmax is a sigmoid, ``softmax(l)_j = sigmoid(l_j - l_{1-j})``, so its head
      rows are differences of the kernel head's rows; they are repeated per output channel, as the filter
      rows are per candidate kernel, so that the weights ``a_f[o] a_w[j]`` are one product of two slices,
      shape (Cout, 1, n), which mix the candidates (Cout, n, Cin k k) in one batched matrix product;
    * the input-side gains ``a_c[i] a_s[t]`` of each part (an outer product, (P, Cin, k, k)) are gathered to
      the rows of their part.

    The graph is about 15 ONNX operators per group instead of about 25 per conv, with no softmax: 414 instead
    of 579 nodes after ONNX Runtime's optimisation for ``featherface_odconv_ssh`` (358 once :class:`MergedHeads`
    came), about 1-2% of its latency (``benchmarks/bench_odconv_export.py``).

    Forward: ``(1, Cin, H, W)`` -> ``(weight (sum Cout, Cin, k, k), bias (sum Cout,))``.
    """

    def __init__(self, parts: list[ComputedODConvBN]) -> None:
        super().__init__()
        if not self.applies(parts):
            raise ValueError("MergedODConvKernels: the parts must be dense ComputedODConvBN blocks with the same "
                             "input channels, kernel size and 1 or 2 candidate kernels")
        _, cin, kh, kw = parts[0].kernel_shape
        n = int(parts[0].weight.shape[1])
        self.n, self.cin, self.k, self.parts = n, cin, kh, len(parts)
        self.has_spatial = parts[0].attention.sizes[2] > 0
        self.fc_weight = nn.Parameter(torch.cat([p.attention.fc_weight for p in parts]), requires_grad=False)
        self.fc_bias = nn.Parameter(torch.cat([p.attention.fc_bias for p in parts]), requires_grad=False)
        hidden = [int(p.attention.fc_weight.shape[0]) for p in parts]
        blocks: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {"row": [], "kernel": [], "channel": [],
                                                                            "spatial": []}
        heads = [part.attention.head_rows() for part in parts]
        for index, (part, head) in enumerate(zip(parts, heads)):  # row gates (o, j): a_f[o], a_w[j]
            weight, bias = head["filter"]
            blocks["row"].append((index, weight.repeat_interleave(n, dim=0), bias.repeat_interleave(n)))
            if n == 2:  # a_w[j] = sigmoid(l_j - l_(1-j))
                weight, bias = head["kernel"]
                diff_w, diff_b = weight - weight.flip(0), bias - bias.flip(0)
                blocks["kernel"].append((index, diff_w.repeat(part.out_channels, 1), diff_b.repeat(part.out_channels)))
        for index, head in enumerate(heads):
            blocks["channel"].append((index, *head["channel"]))
            if self.has_spatial:
                blocks["spatial"].append((index, *head["spatial"]))
        self.gate_names = [name for name in ("row", "kernel", "channel", "spatial") if blocks[name]]
        rows = [entry for name in self.gate_names for entry in blocks[name]]
        self.split_sizes = [sum(int(b.shape[0]) for _, _, b in blocks[name]) for name in self.gate_names]
        starts = [sum(hidden[:i]) for i in range(len(parts))]
        dtype = parts[0].attention.head_weight.dtype
        head = torch.zeros(sum(self.split_sizes), sum(hidden), dtype=dtype)
        bias = torch.zeros(sum(self.split_sizes), dtype=dtype)
        row = 0
        for index, weight, b in rows:
            head[row:row + weight.shape[0], starts[index]:starts[index] + hidden[index]] = weight
            bias[row:row + b.shape[0]] = b
            row += int(b.shape[0])
        self.head_weight = nn.Parameter(head, requires_grad=False)
        self.head_bias = nn.Parameter(bias, requires_grad=False)
        # candidate kernels (Cout, n, Cin k k), (Cout, Cin, k, k) for n = 1
        kernels = torch.cat([p.weight for p in parts])
        self.kernels = nn.Parameter(kernels if n == 2 else kernels.reshape(-1, cin, kh, kw), requires_grad=False)
        self.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        self.out_channels = int(self.bias.shape[0])
        self.register_buffer("row_part", torch.cat([torch.full((p.out_channels,), i) for i, p in enumerate(parts)]))

    @staticmethod
    def applies(parts: list[nn.Module]) -> bool:
        """Whether :class:`MergedODConvKernels` can merge ``parts``: dense :class:`ComputedODConvBN` blocks with the
        same input channels, kernel size and heads, a filter head and 1 or 2 candidate kernels."""
        if not parts or not all(isinstance(p, ComputedODConvBN) and p.dense for p in parts):
            return False
        layouts = {(p.kernel_shape[1:], int(p.weight.shape[1]), tuple(s > 0 for s in p.attention.sizes))
                   for p in parts}  # type: ignore[union-attr]
        if len(layouts) != 1:
            return False
        _, n, (_, has_filter, _, has_kernel) = layouts.pop()
        return has_filter and n in (1, 2) and has_kernel == (n == 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch1(x, "MergedODConvKernels")
        pooled = x.mean(dim=(2, 3))  # (1, Cin)
        hidden = F.relu(F.linear(pooled, self.fc_weight, self.fc_bias))
        gates = torch.sigmoid(F.linear(hidden, self.head_weight, self.head_bias))
        named = dict(zip(self.gate_names, torch.split(gates, self.split_sizes, dim=1)))
        row, channel = named["row"], named["channel"]
        if self.n == 2:  # sum_j a_f[o] a_w[j] W_j[o]: (Cout, 1, 2) @ (Cout, 2, Cin k k)
            per_row = (row * named["kernel"]).reshape(self.out_channels, 1, 2)
            mixed = torch.matmul(per_row, self.kernels).reshape(self.out_channels, self.cin, self.k, self.k)
        else:
            mixed = row.reshape(self.out_channels, 1, 1, 1) * self.kernels
        gains = channel.reshape(self.parts, self.cin, 1, 1)  # a_c[i] a_s[t] of each part: (P, Cin, k, k)
        if self.has_spatial:
            gains = gains * named["spatial"].reshape(self.parts, 1, self.k, self.k)
        if self.parts > 1:
            gains = gains[self.row_part]  # (Cout, Cin, k, k)
        return mixed * gains, self.bias


class _SharedInputConv(nn.Module):
    """Conv blocks reading the same input, with the same geometry, as one conv: their (static or computed)
    kernels and biases concatenated along the output channels; each block's activation on its slice. Dense
    ODConvs are computed together (:class:`MergedODConvKernels`) when they can be."""

    def __init__(self, parts: list[nn.Module], merge_odconv: bool = True) -> None:
        super().__init__()
        first = parts[0]
        geometry = [(p.stride, p.padding, p.dilation, p.groups) for p in parts]
        if len(set(geometry)) != 1 or first.groups != 1:
            raise ValueError("FusedSSH: convs on one input with different geometry (or grouped) cannot be merged")
        self.merged = MergedODConvKernels(parts) if merge_odconv and MergedODConvKernels.applies(parts) else None
        self.parts = None if self.merged is not None else nn.ModuleList(parts)
        self.acts = nn.ModuleList(p.act for p in parts)
        self.sizes = [int(p.out_channels) for p in parts]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation

    def kernel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) of the one conv for the sample ``x``."""
        if self.merged is not None:
            return self.merged(x)
        kernels = [p.kernel(x) for p in self.parts]  # type: ignore[union-attr]
        if len(kernels) == 1:
            return kernels[0]
        return torch.cat([w for w, _ in kernels]), torch.cat([b for _, b in kernels])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        weight, bias = self.kernel(x)
        y = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)
        if len(self.sizes) == 1:
            return [self.acts[0](y)]
        out, start = [], 0
        for act, size in zip(self.acts, self.sizes):
            out.append(act(y[:, start:start + size]))
            start += size
        return out


class _Separate(nn.Module):
    """Blocks on one input run one by one (ODConvs kept for a dynamic batch): the :class:`_SharedInputConv`
    interface without merging."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [part(x) for part in self.parts]


def _deploy_conv(block: nn.Module, batch1: bool) -> nn.Module:
    """The deployment form of one non-deformable SSH conv block (a copy of it when it has none)."""
    if isinstance(block, ODConvBN) and batch1:
        return ComputedODConvBN(block)
    if isinstance(block, PlainConvBN):
        return StaticConvBN(block)
    return copy.deepcopy(block)  # an ODConvBN kept for a dynamic batch


class FusedSSH(nn.Module):
    """An :class:`~featherface.nn.ssh.SSH`, rewritten exactly for deployment.

    * Deformable convs: :class:`FusedDeformConvBN`, the offset / mask convs of ``conv3x3`` and ``conv5x5_reduce``
      (both on x) as one conv, likewise of ``conv5x5`` and ``conv7x7_reduce`` (both on r).
    * Plain convs, and at batch 1 ODConvs (:class:`ComputedODConvBN`): ``conv3x3`` and ``conv5x5_reduce`` as one
      conv with their kernels concatenated, likewise ``conv5x5`` and ``conv7x7_reduce``: three convs instead of five.
      The ODConv kernels of each group are computed together (:class:`MergedODConvKernels`) unless
      ``merge_odconv=False`` or the group cannot be merged.
    * ``relu(cat[a, b, c]) == cat[relu(a), relu(b), relu(c)]``: the ReLU moves into the three branch convs (where
      ONNX Runtime fuses it into the conv) instead of a pass over the concatenation.
    * ``shuffle=False`` leaves out the channel shuffle, for a caller that permutes the input channels of whatever
      reads the output instead (:func:`fuse_for_export` does it in the detection heads).
    """

    _NAMES = ("conv3x3", "conv5x5_reduce", "conv5x5", "conv7x7_reduce", "conv7x7")
    _LAST = ("conv3x3", "conv5x5", "conv7x7")  # the branch outputs: no activation of their own

    def __init__(self, ssh: SSH, batch1: bool, shuffle: bool = True, merge_odconv: bool = True) -> None:
        super().__init__()
        self.shuffle_groups = ssh.shuffle_groups if shuffle else 1
        blocks = {name: getattr(ssh, name) for name in self._NAMES}
        self.deformable = all(isinstance(b, DeformConvBN) for b in blocks.values())
        if not self.deformable and any(isinstance(b, DeformConvBN) for b in blocks.values()):
            raise ValueError("FusedSSH: an SSH mixing deformable and other convs is not supported")
        if self.deformable:
            parts = {name: FusedDeformConvBN(block) for name, block in blocks.items()}
            self.om_x = _MergedConv([blocks["conv3x3"], blocks["conv5x5_reduce"]])
            self.om_r = _MergedConv([blocks["conv5x5"], blocks["conv7x7_reduce"]])
            self.om_c = _MergedConv([blocks["conv7x7"]])
        else:
            parts = {name: _deploy_conv(block, batch1) for name, block in blocks.items()}
        # The ReLU after the concatenation moves into the branch outputs (their activation is the identity).
        self.relu_in_branches = all(isinstance(parts[n].act, nn.Identity) for n in self._LAST)
        if self.relu_in_branches:
            for name in self._LAST:
                parts[name].act = nn.ReLU()
        if self.deformable:
            for name, part in parts.items():
                setattr(self, name, part)
        else:
            mergeable = all(hasattr(part, "kernel") for part in parts.values())

            def group(blocks: list[nn.Module]) -> nn.Module:
                return _SharedInputConv(blocks, merge_odconv) if mergeable else _Separate(blocks)

            self.on_x = group([parts["conv3x3"], parts["conv5x5_reduce"]])
            self.on_r = group([parts["conv5x5"], parts["conv7x7_reduce"]])
            self.on_c1 = group([parts["conv7x7"]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deformable:
            om_a, om_r = self.om_x(x)
            a = self.conv3x3(x, om_a)
            r = self.conv5x5_reduce(x, om_r)
            om_b, om_c1 = self.om_r(r)
            b = self.conv5x5(r, om_b)
            c1 = self.conv7x7_reduce(r, om_c1)
            (om_c,) = self.om_c(c1)
            c = self.conv7x7(c1, om_c)
        else:
            a, r = self.on_x(x)
            b, c1 = self.on_r(r)
            (c,) = self.on_c1(c1)
        out = torch.cat([a, b, c], dim=1)
        if not self.relu_in_branches:
            out = torch.relu(out)
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        return out


def _fold_shuffle_into_heads(model: nn.Module, level: int, channels: int, groups: int) -> bool:
    """Permute the input channels of level ``level``'s head convs so that they read the SSH output before its
    channel shuffle: ``W s = W[:, perm^-1] o`` for ``s = o[perm]``. False when ``model`` has no such heads."""
    heads = getattr(model, "heads", None)
    if not isinstance(heads, DetectionHeads) or not hasattr(model, "context"):
        return False
    perm = channel_shuffle(torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1), groups)
    perm = perm.flatten().long()  # s[c] = o[perm[c]]
    for convs in (heads.cls, heads.box, heads.landmark):
        conv = convs[level]
        weight = torch.empty_like(conv.weight)
        weight[:, perm] = conv.weight.detach()
        conv.weight = nn.Parameter(weight, requires_grad=False)
    return True


class MergedHeads(nn.Module):
    """:class:`~featherface.models.heads.DetectionHeads` with the three convs of each level as one.

    Level ``l``'s conv has ``A * 16`` outputs, anchor-major: for anchor ``a`` the rows ``16 a .. 16 a + 15`` are its
    4 box, 2 class and 10 landmark rows (box row ``4 a + j`` of the box conv becomes row ``16 a + j``, and so on),
    so that ``(B, 16 A, H, W) -> (B, H W A, 16)`` is one transpose and one reshape, and the levels' priors, once
    concatenated, split into the three outputs along the last axis.

    Args:
        heads: the heads to merge (not modified).
        batch: the batch size the graph is for (its reshapes then have constant shapes), or None for any.

    Shapes:
        list of (B, C, H_l, W_l) -> (loc (B, P, 4), logits (B, P, 2), landmarks (B, P, 10)), as the original.
    """

    SIZES = (4, 2, 10)  # box, class, landmark values per anchor

    def __init__(self, heads: DetectionHeads, batch: int | None = None) -> None:
        super().__init__()
        self.batch = batch
        a, k = heads.num_anchors, sum(self.SIZES)
        self.levels = nn.ModuleList()
        for box, cls, landmark in zip(heads.box, heads.cls, heads.landmark):
            conv = nn.Conv2d(box.in_channels, a * k, 1)
            weight = torch.empty_like(conv.weight)
            bias = torch.empty_like(conv.bias)
            offset = 0  # where this head's values start among an anchor's k
            for source, size in zip((box, cls, landmark), self.SIZES):
                for anchor in range(a):
                    merged = slice(anchor * k + offset, anchor * k + offset + size)
                    own = slice(anchor * size, (anchor + 1) * size)
                    weight[merged] = source.weight.detach()[own]
                    bias[merged] = source.bias.detach()[own]
                offset += size
            conv.weight = nn.Parameter(weight, requires_grad=False)
            conv.bias = nn.Parameter(bias, requires_grad=False)
            self.levels.append(conv)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(features) != len(self.levels):
            raise ValueError(f"MergedHeads built for {len(self.levels)} levels got {len(features)} feature maps")
        k = sum(self.SIZES)
        flat = []
        for conv, f in zip(self.levels, features):
            batch = f.shape[0] if self.batch is None else self.batch
            flat.append(conv(f).permute(0, 2, 3, 1).reshape(batch, -1, k))
        loc, logits, landmarks = torch.split(torch.cat(flat, dim=1), list(self.SIZES), dim=2)
        return loc, logits, landmarks


# ---------------------------------------------------------------------------------------------- driver
def _context_level(model: nn.Module, name: str) -> int | None:
    """The level of the SSH at ``name`` when it is ``model.context[level]`` (a FeatherFace), else None."""
    prefix, _, index = name.rpartition(".")
    return int(index) if prefix == "context" and index.isdigit() else None


def fuse_for_export(model: nn.Module, *, batch1: bool = True,
                    merge_odconv: bool = True) -> tuple[nn.Module, FusionReport]:
    """A copy of ``model`` (eval mode, no gradients) with the exact deployment rewrites of this module.

    Args:
        model: a FeatherFace model (any module; the blocks it does not hold are left alone).
        batch1: also rewrite the ODConv blocks into computed-kernel convs, valid for a batch of one only.
        merge_odconv: compute the kernels of the SSH ODConvs on one input together (:class:`MergedODConvKernels`);
            False keeps one attention branch per conv (the earlier export, for benchmarks).

    Returns:
        ``(fused model, report)``; the caller's model is not touched.
    """
    fused = copy.deepcopy(model).cpu().eval()
    report = FusionReport()
    for name, module in list(fused.named_modules()):
        if not name:
            continue
        replacement: nn.Module | None = None
        if isinstance(module, SSH):
            level = _context_level(fused, name)
            fold = level is not None and module.shuffle_groups > 1 and _fold_shuffle_into_heads(
                fused, level, module.channels, module.shuffle_groups)
            replacement = FusedSSH(module, batch1, shuffle=not fold, merge_odconv=merge_odconv)
            report.ssh.append(name)
            for child, block in ((c, getattr(module, c)) for c in FusedSSH._NAMES):
                if isinstance(block, DeformConvBN):
                    report.deformable.append(f"{name}.{child}")
                elif isinstance(block, ODConvBN):
                    (report.odconv_dense if batch1 else report.kept).append(f"{name}.{child}")
        elif isinstance(module, ODConvAttention):
            if batch1:
                replacement = ComputedODConvSite(module)
                report.odconv_sites.append(name)
            else:
                report.kept.append(name)
        if replacement is not None:
            parent_name, _, attr = name.rpartition(".")
            parent = fused.get_submodule(parent_name) if parent_name else fused
            setattr(parent, attr, replacement)
    if isinstance(getattr(fused, "heads", None), DetectionHeads):  # after the shuffle folding, which edits them
        fused.heads = MergedHeads(fused.heads, batch=1 if batch1 else None)
        report.heads.append("heads")
    for p in fused.parameters():
        p.requires_grad_(False)
    logger.debug("fuse_for_export: %s", report.to_dict())
    return fused.eval(), report
