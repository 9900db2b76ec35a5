"""The attention branch of an ODConv (:class:`featherface.nn.odconv.ODConv2d`): GAP -> fc -> BN -> ReLU -> four heads.

Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022 (official code OSVAI/ODConv,
``modules/odconv.py``, class ``Attention``)::

    h   = ReLU(BN(fc(GAP(x))))                      (B, A), A = max(int(Cin * reduction), min_channel)
    a_c = sigmoid(channel_fc(h) / T)                (B, Cin)
    a_f = sigmoid(filter_fc(h) / T)                 (B, Cout)     skipped for a depthwise conv
    a_s = sigmoid(spatial_fc(h) / T)                (B, k * k)    skipped for k = 1
    a_w = softmax(kernel_fc(h) / T)                 (B, n)        skipped for n = 1

State dict keys are the official ones (``fc.weight``, ``bn.*``, ``{channel,filter,spatial,kernel}_fc.*``) plus
the buffer ``temperature``. Train mode with batch 1 is handled as :class:`~featherface.nn.odconv.ODConv2d`
describes (running statistics and a warning, or an error).
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BATCH1_POLICIES", "AttentionBranch", "Batch1Policy", "BranchOutputs", "attention_channels"]

logger = logging.getLogger(__name__)

Batch1Policy = Literal["running_stats", "error"]
BATCH1_POLICIES = ("running_stats", "error")


def attention_channels(in_channels: int, reduction: float = 0.0625, min_channel: int = 16) -> int:
    """Width A of the attention branch: ``max(int(in_channels * reduction), min_channel)`` (official rule)."""
    return max(int(in_channels * reduction), min_channel)


class BranchOutputs(NamedTuple):
    """Head outputs after sigmoid / softmax, flat; None for a skipped head (used by the fast path)."""

    channel: torch.Tensor  # (B, Cin)
    filter: torch.Tensor | None  # (B, Cout)
    spatial: torch.Tensor | None  # (B, k * k)
    kernel: torch.Tensor | None  # (B, n)
    hidden: torch.Tensor  # (B, A, 1, 1)


class AttentionBranch(nn.Module):
    """The shared attention branch of an ODConv: GAP -> fc -> BN -> ReLU -> four heads.

    Args:
        in_channels, out_channels, kernel_size, groups, kernel_num: of the ODConv.
        reduction, min_channel: branch width A = max(int(in_channels * reduction), min_channel).
        temperature: T > 0, stored as the buffer ``temperature``.
        batch1_train: what a train-mode forward with batch 1 does (see :class:`ODConv2d`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        groups: int = 1,
        reduction: float = 0.0625,
        kernel_num: int = 4,
        min_channel: int = 16,
        temperature: float = 1.0,
        batch1_train: Batch1Policy = "running_stats",
    ) -> None:
        super().__init__()
        hidden = attention_channels(in_channels, reduction, min_channel)
        self.kernel_size = kernel_size
        self.kernel_num = kernel_num
        self.batch1_train = batch1_train
        self._warned_batch1 = False
        # Creation order matches the official module, so torch.manual_seed gives the same initial weights.
        self.fc = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.channel_fc = nn.Conv2d(hidden, in_channels, 1, bias=True)
        depthwise = in_channels == groups and in_channels == out_channels
        self.filter_fc = None if depthwise else nn.Conv2d(hidden, out_channels, 1, bias=True)
        self.spatial_fc = None if kernel_size == 1 else nn.Conv2d(hidden, kernel_size * kernel_size, 1, bias=True)
        self.kernel_fc = None if kernel_num == 1 else nn.Conv2d(hidden, kernel_num, 1, bias=True)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # noqa: ANN001 (torch signature)
        # Official ODConv state dicts have no temperature: keep the current one instead of failing strict loading.
        key = prefix + "temperature"
        if key not in state_dict:
            state_dict[key] = self.temperature.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, A, 1, 1). The 1x1 convs run as matmuls on the pooled (B, Cin) vector."""
        h = _linear(F.adaptive_avg_pool2d(x, 1).flatten(1), self.fc)[:, :, None, None]
        if self.training and h.shape[0] == 1 and not torch.jit.is_tracing():
            if self.batch1_train == "error":
                raise ValueError(
                    "ODConv attention branch in train mode got batch size 1: its BatchNorm normalises the "
                    "globally pooled (1x1) features over the batch, which is a single value per channel, so "
                    "batch statistics are undefined. Use batch >= 2, call .eval(), or build the module "
                    "with batch1_train='running_stats'."
                )
            if not self._warned_batch1:
                logger.warning(
                    "ODConv attention branch in train mode with batch 1: BatchNorm over a 1x1 pooled map "
                    "has one value per channel; normalising with the running statistics (not updated)."
                )
                self._warned_batch1 = True
            bn = self.bn
            h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            h = self.bn(h)
        return F.relu(h)

    def logits(self, x: torch.Tensor) -> BranchOutputs:
        """Attentions (after sigmoid / softmax) for input (B, Cin, H, W); None where a head is skipped."""
        h = self._hidden(x)
        flat = h.flatten(1)
        t = self.temperature

        def head(fc: nn.Conv2d) -> torch.Tensor:
            return _linear(flat, fc) / t

        channel = torch.sigmoid(head(self.channel_fc))
        filt = None if self.filter_fc is None else torch.sigmoid(head(self.filter_fc))
        spatial = None if self.spatial_fc is None else torch.sigmoid(head(self.spatial_fc))
        kernel = None if self.kernel_fc is None else torch.softmax(head(self.kernel_fc), dim=1)
        return BranchOutputs(channel, filt, spatial, kernel, h)

    def extra_repr(self) -> str:
        return f"temperature={float(self.temperature):.4g}, batch1_train={self.batch1_train!r}"


def _linear(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv applied to a pooled vector: (B, Cin) -> (B, Cout) (cheaper than conv2d on a 1x1 map)."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)
