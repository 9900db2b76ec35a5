"""ODConv: Omni-Dimensional Dynamic Convolution.

Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022 (official code OSVAI/ODConv,
``modules/odconv.py``). A convolution whose kernel is recomputed for every sample from four attentions
produced by one small branch on the globally pooled input::

    h   = ReLU(BN(fc(GAP(x))))                      (B, A), A = max(int(Cin * reduction), min_channel)
    a_c = sigmoid(channel_fc(h) / T)                (B, Cin)      multiplies the input channels
    a_f = sigmoid(filter_fc(h) / T)                 (B, Cout)     multiplies the output channels
    a_s = sigmoid(spatial_fc(h) / T)                (B, k, k)     multiplies every kernel position
    a_w = softmax(kernel_fc(h) / T)                 (B, n)        mixes the n candidate kernels
    y   = a_f * ((sum_i a_w[i] * a_s * W_i) conv (a_c * x))

``fc`` is a 1x1 conv without bias, the four heads 1x1 convs with bias. A head is skipped when it carries
no information (the paper's and the official code's rules): the filter head for a depthwise conv
(``groups == Cin == Cout``, it would duplicate the channel head), the spatial head for k = 1, the kernel
head for n = 1. Initialisation as the official code: every conv weight (the n candidate kernels one by
one) Kaiming normal, fan_out, ReLU gain; head biases 0; BN weight 1, bias 0. T is the softmax/sigmoid
temperature: 1 at inference; the authors train with T falling linearly from 30 to 1 over the first 10
epochs (:func:`temperature_at`, :func:`set_temperature`).

State dict keys are the official ones (``weight`` (n, Cout, Cin/groups, k, k), ``attention.fc.weight``,
``attention.bn.*``, ``attention.{channel,filter,spatial,kernel}_fc.{weight,bias}``; a skipped head has
no keys), plus ``attention.temperature`` (a buffer, so T survives save/load). Official state dicts, which
lack it, load strictly: the module then keeps its current T. The branch itself is
:class:`featherface.nn.odconv_branch.AttentionBranch`.

Improvements over the official module:

* Train mode with batch 1: the BN of the attention branch sees one value per channel (the pooled map is
  1x1), so batch statistics are undefined (the official code crashes). Here it normalises with the running
  statistics (without updating them) and logs a warning once, or raises a clear error with
  ``batch1_train="error"``.
* Skipped heads are reported as tensors of ones (:meth:`ODConv2d.attentions`), never Python floats.
* The channel and filter attentions are folded into the per-sample kernel,
  ``(x * a_c) conv W * a_f == x conv (W * a_c[in] * a_f[out])`` (convolution is linear), so a sample
  costs one convolution plus the tiny attention branch instead of two extra passes over the activations.
* The per-sample convolution has two formulations (see :meth:`ODConv2d.forward`): a batch-folded grouped
  conv (eager, fastest in PyTorch) and an im2col + batched matmul one whose graph does not depend on the
  batch size, used automatically while tracing / exporting, so ONNX export keeps a dynamic batch axis.

Fixed attentions (:meth:`ODConv2d.fix_attentions`): the four attentions can be replaced by constants, e.g.
their mean over a set of images; the module is then a static convolution with the kernel
``a_f a_c a_s sum_i a_w[i] W_i`` built from those constants (used to evaluate a model with its attention
bypassed, :mod:`featherface.analysis.bypass`). Off by default; not part of the state dict.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from featherface.nn.odconv_branch import BATCH1_POLICIES, AttentionBranch, Batch1Policy, BranchOutputs

__all__ = [
    "ODConv2d",
    "ODConvAttentions",
    "set_temperature",
    "temperature_at",
]

logger = logging.getLogger(__name__)

ConvImpl = Literal["auto", "grouped", "matmul"]
_CONV_IMPLS = ("auto", "grouped", "matmul")


def temperature_at(epoch: float, start: float = 30.0, end: float = 1.0, epochs: int = 10) -> float:
    """Attention temperature at a (fractional) epoch: linear from ``start`` at 0 to ``end`` at ``epochs``.

    The schedule the ODConv authors train with (Li et al. 2022, following dynamic convolution: T falls
    linearly from 30 to 1 over the first 10 epochs, then stays at 1; DESIGN.md section 2).
    ``temperature_at(e) = start + (end - start) * min(e / epochs, 1)``. Pass
    ``epoch + iteration / iters_per_epoch`` for a per-iteration schedule.

    Raises:
        ValueError: negative or non-finite epoch, ``epochs <= 0``, or a non-positive temperature.
    """
    if not math.isfinite(epoch) or epoch < 0:
        raise ValueError(f"temperature_at: epoch must be a finite number >= 0, got {epoch}")
    if epochs <= 0:
        raise ValueError(f"temperature_at: epochs must be > 0, got {epochs}")
    if not (start > 0 and end > 0 and math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"temperature_at: start and end must be finite and > 0, got {start}, {end}")
    progress = min(epoch / epochs, 1.0)
    return float(start + (end - start) * progress)


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the attention temperature of every :class:`ODConv2d` inside ``model`` (``model`` included).

    Returns:
        The number of ODConv2d modules updated (0 when the model has none).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, ODConv2d):
            module.set_temperature(temperature)
            count += 1
    logger.debug("temperature %.4g set on %d ODConv2d modules", temperature, count)
    return count


class ODConvAttentions(NamedTuple):
    """The attentions of one forward, in the official module's shapes (skipped heads are ones).

    channel (B, Cin, 1, 1); filter (B, Cout, 1, 1); spatial (B, 1, 1, 1, k, k); kernel (B, n, 1, 1, 1, 1);
    hidden (B, A, 1, 1) = ReLU(BN(fc(GAP(x)))).
    """

    channel: torch.Tensor
    filter: torch.Tensor
    spatial: torch.Tensor
    kernel: torch.Tensor
    hidden: torch.Tensor


def _is_exporting() -> bool:
    """True while torch.jit tracing, the TorchScript ONNX exporter or torch.export is running."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


class ODConv2d(nn.Module):
    """Omni-dimensional dynamic 2-D convolution (Li et al. 2022), (B, Cin, H, W) -> (B, Cout, H', W').

    Args:
        in_channels, out_channels, kernel_size (square, int), stride, padding, dilation, groups:
            as :class:`torch.nn.Conv2d` (ints only; no bias, as the official module).
        reduction: attention width ratio; A = max(int(in_channels * reduction), min_channel).
        kernel_num: n candidate kernels (1 gives "ODConv 1x", 4 "ODConv 4x").
        min_channel: lower bound of A (16 in the official code).
        temperature: T > 0 of the attention heads (buffer ``attention.temperature``).
        conv_impl: how the per-sample convolution runs. ``"auto"`` (default): ``"grouped"`` in eager
            mode, ``"matmul"`` while tracing / exporting. ``"grouped"``: the batch is folded into the
            channels and one grouped conv with ``groups * B`` groups runs (fastest eager path; its group
            count depends on B, so an exported graph would have a fixed batch). ``"matmul"``: im2col by
            strided slices and a batched matmul (a shifted multiply-add for depthwise convs), whose
            graph is batch-size independent (ONNX export with a dynamic batch axis). A standalone module
            forced to ``"grouped"`` exports at a fixed batch size and runs about 2x faster in onnxruntime
            (docs/odconv_design.md); whole-model exports (:mod:`featherface.deploy.export`) use ``"matmul"``.
        batch1_train: a train-mode forward with batch 1: ``"running_stats"`` normalises the attention
            branch with the BN running statistics (warns once), ``"error"`` raises ValueError.
        unit_neutral_gain: scale the aggregated kernel by ``1 / neutral_attention_gain()`` (a constant, e.g. 8 for a
            dense 3x3 conv), so that attentions at their neutral values (sigmoid 0.5, softmax 1/n) leave the kernel
            mix unscaled. The kernels then keep the scale of an ordinary conv's, and an optimiser moves the
            effective kernel as fast as it moves a plain conv's (without it, a conv started from a static kernel
            needs kernels 8x larger and, with Adam, learns 8x slower). Off by default (the official module).

    When k = 1 and n = 1 (the official "pw1x" case) the kernel is not sample-dependent, so the module
    runs the static conv on ``x * a_c`` and multiplies by ``a_f`` (cheaper than per-sample kernels).
    """

    _fixed: BranchOutputs | None = None  # constant attentions of fix_attentions (a class default: None = dynamic)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
        min_channel: int = 16,
        temperature: float = 1.0,
        *,
        conv_impl: ConvImpl = "auto",
        batch1_train: Batch1Policy = "running_stats",
        unit_neutral_gain: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                 ("padding", padding, 0), ("dilation", dilation, 1), ("groups", groups, 1),
                                 ("kernel_num", kernel_num, 1), ("min_channel", min_channel, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"ODConv2d: {name} must be an int >= {low}, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ODConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                f"by groups ({groups})"
            )
        if not reduction > 0:
            raise ValueError(f"ODConv2d: reduction must be > 0, got {reduction}")
        _check_temperature(temperature)
        if conv_impl not in _CONV_IMPLS:
            raise ValueError(f"ODConv2d: conv_impl must be one of {_CONV_IMPLS}, got {conv_impl!r}")
        if batch1_train not in BATCH1_POLICIES:
            raise ValueError(f"ODConv2d: batch1_train must be one of {BATCH1_POLICIES}, got {batch1_train!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.kernel_num = kernel_num
        self.conv_impl: ConvImpl = conv_impl
        self.unit_neutral_gain = bool(unit_neutral_gain)
        # Attention first, then the weight: the official creation order (same RNG draws for the same seed).
        self.attention = AttentionBranch(in_channels, out_channels, kernel_size, groups, reduction,
                                         kernel_num, min_channel, temperature, batch1_train)
        self.weight = nn.Parameter(torch.randn(kernel_num, out_channels, in_channels // groups,
                                               kernel_size, kernel_size))
        for i in range(kernel_num):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")

    # ----------------------------------------------------------------------------------------- temperature
    @property
    def temperature(self) -> float:
        """The attention temperature T."""
        return float(self.attention.temperature)

    def set_temperature(self, temperature: float) -> None:
        """Set T (> 0) in place; it is saved with the state dict."""
        _check_temperature(temperature)
        self.attention.temperature.fill_(float(temperature))

    update_temperature = set_temperature  # the official name

    @property
    def is_static(self) -> bool:
        """True when the kernel itself is sample-independent (k = 1 and n = 1)."""
        return self.kernel_size == 1 and self.kernel_num == 1

    def neutral_attention_gain(self) -> float:
        """The product of the attentions that multiply every kernel tap when the heads output zero logits.

        sigmoid(0) = 0.5 for the channel head, the filter head (unless skipped) and the spatial head (unless
        skipped); the kernel softmax of zeros gives 1/n to each of n kernels, which sum to 1 when equal.
        """
        gain = 0.5
        if self.attention.filter_fc is not None:
            gain *= 0.5
        if self.attention.spatial_fc is not None:
            gain *= 0.5
        return gain

    @property
    def kernel_scale(self) -> float:
        """The constant the aggregated kernel is multiplied by: ``1 / neutral_attention_gain()`` with
        ``unit_neutral_gain``, else 1."""
        return 1.0 / self.neutral_attention_gain() if self.unit_neutral_gain else 1.0

    @torch.no_grad()
    def init_from_static(self, weight: torch.Tensor, kernel_noise: float = 0.0,
                         generator: torch.Generator | None = None) -> None:
        """Start as the static convolution ``weight`` (Cout, Cin/groups, k, k): the module's output equals
        ``F.conv2d(x, weight)`` for every input until training moves it.

        The four attention heads get zero weights and biases (every attention at its neutral value:
        sigmoid 0.5, softmax 1/n, whatever the input), and every candidate kernel becomes
        ``weight / neutral_attention_gain() + noise_i`` with zero-mean noise across the n kernels
        (``sum_i noise_i = 0``), so the kernel mix at uniform kernel attention is exactly ``weight`` while
        the kernels differ (identical kernels would get identical gradients and the kernel attention none).
        With ``unit_neutral_gain`` the kernels are ``weight + noise_i`` (the constant scale does the rest).

        Args:
            weight: (Cout, Cin/groups, k, k), e.g. the regular weight of a deformable conv or of ``nn.Conv2d``.
            kernel_noise: standard deviation of the noise, relative to the standard deviation of the scaled weight.
            generator: random generator of the noise.
        """
        expected = tuple(self.weight.shape[1:])
        if tuple(weight.shape) != expected:
            raise ValueError(f"ODConv2d.init_from_static: weight of shape {tuple(weight.shape)}, expected {expected}")
        for head in (self.attention.channel_fc, self.attention.filter_fc, self.attention.spatial_fc,
                     self.attention.kernel_fc):
            if head is not None:
                head.weight.zero_()
                head.bias.zero_()
        scaled = weight.to(self.weight) / (self.neutral_attention_gain() * self.kernel_scale)
        noise = torch.randn(self.weight.shape, generator=generator, dtype=self.weight.dtype).to(self.weight.device)
        noise = (noise - noise.mean(dim=0, keepdim=True)) * (kernel_noise * float(scaled.std()))
        self.weight.copy_(scaled.unsqueeze(0) + noise)

    # ----------------------------------------------------------------------------------- fixed attentions
    @property
    def attentions_fixed(self) -> bool:
        """True while :meth:`fix_attentions` holds constant attentions (the module is a static conv)."""
        return self._fixed is not None

    @torch.no_grad()
    def fix_attentions(self, attentions: ODConvAttentions | None) -> None:
        """Use constant attentions instead of the input-dependent ones; ``None`` restores the dynamic module.

        While fixed, every sample gets the same kernel ``a_f[o] a_c[i] a_s sum_j a_w[j] W_j`` built from the
        given values, so :meth:`forward` runs one static convolution and the attention branch is not evaluated;
        :meth:`attentions` and :meth:`sample_weights` report the fixed values (expanded to the batch). Fixing
        the attentions to those of one image reproduces that image's output. The values are a plain attribute,
        not buffers: they are not saved with the state dict and follow the input's device and dtype.

        Args:
            attentions: one set of attentions, each with the element count of :meth:`attentions` for one sample
                (channel Cin, filter Cout, spatial k*k, kernel n; hidden A or empty), e.g. the shapes of
                ``attentions(x)`` with B = 1 or the mean over images. Heads the module skips are ignored
                (their value is 1 by definition).

        Raises:
            ValueError: a head with the wrong number of elements, or a non-finite value.
        """
        if attentions is None:
            self._fixed = None
            return
        branch = self.attention
        sizes = {"channel": self.in_channels, "filter": self.out_channels,
                 "spatial": self.kernel_size * self.kernel_size, "kernel": self.kernel_num}
        present = {"channel": True, "filter": branch.filter_fc is not None,
                   "spatial": branch.spatial_fc is not None, "kernel": branch.kernel_fc is not None}
        flat: dict[str, torch.Tensor | None] = {}
        for kind, size in sizes.items():
            value = getattr(attentions, kind)
            if not present[kind]:
                flat[kind] = None
                continue
            value = torch.as_tensor(value, dtype=self.weight.dtype, device=self.weight.device).detach()
            if value.numel() != size:
                raise ValueError(f"ODConv2d.fix_attentions: {kind} attention has {value.numel()} elements, "
                                 f"expected {size} ({kind} of one sample)")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"ODConv2d.fix_attentions: {kind} attention has non-finite values")
            flat[kind] = value.reshape(1, size).clone()
        hidden = self.weight.new_zeros(0) if attentions.hidden is None else attentions.hidden
        hidden = torch.as_tensor(hidden, dtype=self.weight.dtype, device=self.weight.device)
        channel = flat["channel"]
        assert channel is not None  # the channel head is never skipped
        self._fixed = BranchOutputs(channel, flat["filter"], flat["spatial"], flat["kernel"],
                              hidden.detach().reshape(1, -1, 1, 1).clone())

    def _logits(self, x: torch.Tensor) -> BranchOutputs:
        """The attentions for x: the fixed ones expanded to the batch, else the attention branch's."""
        fixed = self._fixed
        if fixed is None:
            return self.attention.logits(x)
        b = x.shape[0]
        return BranchOutputs(*(None if t is None else t.to(device=x.device).expand(b, *t.shape[1:]) for t in fixed))

    # ------------------------------------------------------------------------------------------ attentions
    def attentions(self, x: torch.Tensor) -> ODConvAttentions:
        """The four attentions and the hidden features for x (B, Cin, H, W), official shapes, ones if skipped."""
        self._check_input(x)
        a = self._logits(x)
        b = x.shape[0]
        k = self.kernel_size
        ones = a.channel.new_ones
        filt = ones(b, self.out_channels) if a.filter is None else a.filter
        spatial = ones(b, k * k) if a.spatial is None else a.spatial
        kernel = ones(b, self.kernel_num) if a.kernel is None else a.kernel
        return ODConvAttentions(
            channel=a.channel.reshape(b, self.in_channels, 1, 1),
            filter=filt.reshape(b, self.out_channels, 1, 1),
            spatial=spatial.reshape(b, 1, 1, 1, k, k),
            kernel=kernel.reshape(b, self.kernel_num, 1, 1, 1, 1),
            hidden=a.hidden,
        )

    def aggregate_weight(self, att: ODConvAttentions) -> torch.Tensor:
        """The official aggregated kernel ``sum_i a_w[i] * a_s * W_i``, (B, Cout, Cin/groups, k, k).

        Channel and filter attentions are not included (the official code applies them to x and y).
        """
        return (att.spatial * att.kernel * self.weight.unsqueeze(0)).sum(dim=1)

    def sample_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample kernels with all four attentions folded in, (B, Cout, Cin/groups, k, k).

        ``F.conv2d(x[b:b+1], sample_weights(x)[b], ...)`` equals ``forward(x)[b:b+1]``.
        """
        self._check_input(x)
        return self._fold(self._logits(x))

    def _fold(self, a: BranchOutputs) -> torch.Tensor:
        """Fold the attentions into the kernels: (B, Cout, Cin/g, k, k) = a_f[o] a_c[i] a_s sum_i a_w[i] W_i."""
        n, cout, cin_g, k = self.kernel_num, self.out_channels, self.in_channels // self.groups, self.kernel_size
        g = self.groups
        b = a.channel.shape[0]
        if a.kernel is None:
            w = self.weight.reshape(1, g, cout // g, cin_g, k * k)
        else:
            w = torch.matmul(a.kernel, self.weight.reshape(n, -1)).reshape(b, g, cout // g, cin_g, k * k)
        if a.spatial is not None:
            w = w * a.spatial.reshape(b, 1, 1, 1, k * k)
        w = w * a.channel.reshape(b, g, 1, cin_g, 1)
        if a.filter is not None:
            w = w * a.filter.reshape(b, g, cout // g, 1, 1)
        if self.unit_neutral_gain:
            w = w * self.kernel_scale
        return w.reshape(b, cout, cin_g, k, k)

    # --------------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, H', W'), H' = floor((H + 2p - d(k-1) - 1) / s) + 1.

        Paths: k = 1 and n = 1 -> static conv on ``x * a_c``, times ``a_f``; otherwise the attentions are
        folded into per-sample kernels (:meth:`sample_weights`) and applied with the grouped
        (eager) or the matmul (tracing / export, or ``conv_impl="matmul"``) formulation. With fixed
        attentions (:meth:`fix_attentions`): one static conv with the kernel folded from them.
        """
        self._check_input(x)
        fixed = self._fixed
        if fixed is not None:
            w = self._fold(BranchOutputs(*(None if t is None else t.to(device=x.device) for t in fixed)))[0]
            return F.conv2d(x, w.to(x.dtype), None, self.stride, self.padding, self.dilation, self.groups)
        a = self.attention.logits(x)
        if self.is_static:
            y = F.conv2d(x * a.channel[:, :, None, None], self.weight[0], None, self.stride, self.padding,
                         self.dilation, self.groups)
            if self.unit_neutral_gain:
                y = y * self.kernel_scale
            return y if a.filter is None else y * a.filter[:, :, None, None]
        w = self._fold(a)
        impl = self.conv_impl
        if impl == "auto":
            impl = "matmul" if _is_exporting() else "grouped"
        if impl == "grouped":
            return self._conv_grouped(x, w)
        return self._conv_matmul(x, w)

    def _conv_grouped(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Per-sample conv as one grouped conv over the batch folded into channels (groups = B * groups)."""
        b, _, h, wd = x.shape
        y = F.conv2d(x.reshape(1, b * self.in_channels, h, wd), w.reshape(b * self.out_channels, *w.shape[2:]),
                     None, self.stride, self.padding, self.dilation, self.groups * b)
        return y.reshape(b, self.out_channels, y.shape[-2], y.shape[-1])

    def _conv_matmul(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Per-sample conv whose graph does not depend on B: im2col by k*k strided slices, batched matmul.

        Depthwise (Cin/g == Cout/g == 1): a multiply-add of the k*k shifted slices instead of the matmul.
        """
        k, s, d, p = self.kernel_size, self.stride, self.dilation, self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        span = d * (k - 1)
        # Slice with constant starts / negative ends so the graph stays valid for any H, W (and B).
        cols = [x[:, :, i * d: (i * d - span) or None: s, j * d: (j * d - span) or None: s]
                for i in range(k) for j in range(k)]
        b = x.shape[0]
        ho, wo = cols[0].shape[-2], cols[0].shape[-1]
        g, cout, cin_g = self.groups, self.out_channels, self.in_channels // self.groups
        if cin_g == 1 and cout == g:
            taps = w.reshape(b, cout, k * k, 1, 1)
            y = cols[0] * taps[:, :, 0]
            for t in range(1, k * k):
                y = y + cols[t] * taps[:, :, t]
            return y
        patches = torch.stack(cols, dim=2).reshape(b, g, cin_g * k * k, ho * wo)
        y = torch.matmul(w.reshape(b, g, cout // g, cin_g * k * k), patches)
        return y.reshape(b, cout, ho, wo)

    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_tracing():
            return
        if x.dim() != 4:
            raise ValueError(f"ODConv2d expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"ODConv2d expects {self.in_channels} input channels, got input of shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"kernel_num={self.kernel_num}, conv_impl={self.conv_impl!r}"
                + (", attentions fixed" if self._fixed is not None else ""))


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
            and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"ODConv temperature must be a finite number > 0, got {temperature!r}")
