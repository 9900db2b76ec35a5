"""Per-epoch training metrics: the ``metrics.csv`` log and the ODConv attention entropies.

``metrics.csv`` has one row per finished epoch with the columns of :data:`BASE_COLUMNS` (see
:mod:`featherface.train.engine` for their meaning and units), followed, for models with ODConv
modules, by attention-entropy columns measured by :func:`attention_entropies`. The file is rewritten
atomically (temporary file + rename) after every epoch, so it is never half-written; on resume the rows after
the checkpoint's epoch are dropped (they belong to an epoch that is being run again).

Attention entropy (in nats), measured at each epoch end on a fixed probe batch (the same training images
every epoch), with the model in eval mode (BatchNorm on its running statistics, nothing updated) at the
current temperature:

* ``entropy.kernel.<module>``: for an ODConv with ``kernel_num = n > 1``, the entropy of the kernel
  attention (a softmax over the n kernels), ``-sum_i a_i log a_i``, averaged over the probe images; between 0
  (one kernel) and ``log n`` (uniform mixing).
* For ``kernel_num = 1`` the kernel attention is the constant 1 (entropy 0, nothing to learn), so instead:
  ``entropy.spatial.<module>`` (k > 1) and ``entropy.channel.<module>``: the binary entropy
  ``-(a log a + (1 - a) log(1 - a))`` of each sigmoid attention value (k * k spatial positions, C_in channels),
  averaged over the values and the probe images; between 0 (saturated at 0 or 1) and ``log 2`` (all 0.5).

``<module>`` is the ODConv2d's name in the model (e.g. ``attention.c3.conv``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from featherface.nn.odconv import ODConv2d
from featherface.utils.io import write_text_atomic

__all__ = [
    "BASE_COLUMNS",
    "MetricsLog",
    "attention_entropies",
    "binary_entropy",
    "categorical_entropy",
    "odconv_inputs",
    "odconv_modules",
    "probe_batch",
]

log = logging.getLogger(__name__)

#: The columns every ``metrics.csv`` starts with, in order.
BASE_COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "lr",
    "lr_attention",
    "loss",
    "loc",
    "cls",
    "landm",
    "num_pos",
    "grad_norm",
    "images",
    "images_per_s",
    "epoch_s",
    "wall_s",
    "temperature",
)

_EPS = 1e-12


def categorical_entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy in nats of probability vectors along ``dim``: ``-sum p log p`` (0 log 0 = 0)."""
    p = p.float()
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Element-wise entropy in nats of Bernoulli probabilities: ``-(p log p + (1 - p) log(1 - p))``."""
    p = p.float()
    q = 1.0 - p
    return -(p * torch.log(p.clamp_min(_EPS)) + q * torch.log(q.clamp_min(_EPS)))


def odconv_modules(model: nn.Module) -> list[tuple[str, ODConv2d]]:
    """The ``(name, module)`` pairs of every :class:`ODConv2d` in ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ODConv2d)]


def entropy_columns(model: nn.Module) -> list[str]:
    """The entropy column names :func:`attention_entropies` produces for ``model`` (empty without ODConv)."""
    columns: list[str] = []
    for name, module in odconv_modules(model):
        if module.kernel_num > 1:
            columns.append(f"entropy.kernel.{name}")
        else:
            if module.kernel_size > 1:
                columns.append(f"entropy.spatial.{name}")
            columns.append(f"entropy.channel.{name}")
    return columns


@torch.no_grad()
def odconv_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each :class:`ODConv2d` of ``model`` receives during one forward of ``x``, by module name.

    The forward runs in eval mode (BatchNorm on its running statistics); the model's mode is restored. A module
    the forward does not reach is absent from the result.
    """
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in odconv_modules(model):
        def hook(_module: nn.Module, args: tuple[Any, ...], _name: str = name) -> None:
            inputs[_name] = args[0]
        handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return inputs


def probe_batch(dataset: Dataset, n: int) -> torch.Tensor | None:
    """The fixed probe batch of :func:`attention_entropies`: the images of the first ``n`` samples of ``dataset``
    as of epoch 0, (n, 3, S, S); None when ``n`` or the dataset is empty."""
    n = min(n, len(dataset))  # type: ignore[arg-type]
    if n <= 0:
        return None
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    return torch.stack([dataset[i][0] for i in range(n)])


@torch.no_grad()
def attention_entropies(model: nn.Module, probe: torch.Tensor) -> dict[str, float]:
    """ODConv attention entropies (nats) of ``model`` on the probe batch (see the module docstring).

    Args:
        model: a model (not a DDP wrapper) holding :class:`ODConv2d` modules; its train / eval mode is restored.
        probe: (B, 3, H, W) network input on the model's device.

    Returns:
        ``{column: value}`` for the columns of :func:`entropy_columns` (empty when the model has no ODConv).
    """
    modules = odconv_modules(model)
    if not modules:
        return {}
    inputs = odconv_inputs(model, probe)
    result: dict[str, float] = {}
    for name, module in modules:
        was = module.training
        module.eval()
        try:
            att = module.attentions(inputs[name])
        finally:
            module.train(was)
        b = att.channel.shape[0]
        if module.kernel_num > 1:
            result[f"entropy.kernel.{name}"] = float(categorical_entropy(att.kernel.reshape(b, -1)).mean())
        else:
            if module.kernel_size > 1:
                result[f"entropy.spatial.{name}"] = float(binary_entropy(att.spatial).mean())
            result[f"entropy.channel.{name}"] = float(binary_entropy(att.channel).mean())
    return result


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class MetricsLog:
    """An append-only CSV of per-epoch rows, rewritten atomically on every append.

    Args:
        path: the CSV file.
        columns: the leading columns (further keys of appended rows are added at the end, in order of first
            appearance; rows lacking a column leave it empty, i.e. n/a).
    """

    def __init__(self, path: str | Path, columns: Sequence[str] = BASE_COLUMNS) -> None:
        self.path = Path(path)
        self.columns: list[str] = list(columns)
        self.rows: list[dict[str, str]] = []

    @classmethod
    def resume(cls, path: str | Path, through_epoch: int, columns: Sequence[str] = BASE_COLUMNS) -> "MetricsLog":
        """Read an existing log keeping the rows with ``epoch <= through_epoch`` (an absent file gives an empty log).

        The file is rewritten at once, so rows of epochs that will run again disappear even if the run is
        killed before its next epoch ends.
        """
        logger = cls(path, columns)
        if logger.path.is_file():
            with open(logger.path, newline="") as handle:
                reader = csv.DictReader(handle)
                for name in reader.fieldnames or []:
                    if name not in logger.columns:
                        logger.columns.append(name)
                for line, row in enumerate(reader, start=2):
                    try:
                        epoch = int(row["epoch"])
                    except (KeyError, TypeError, ValueError):
                        raise ValueError(f"{logger.path}:{line}: no integer 'epoch' column in {row}") from None
                    if epoch <= through_epoch:
                        logger.rows.append({k: v or "" for k, v in row.items() if k is not None})
            log.info("%s: resumed with the %d rows of epochs <= %d", logger.path, len(logger.rows), through_epoch)
            logger._write()
        return logger

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row and rewrite the file."""
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        self.rows.append({k: _format(v) for k, v in row.items()})
        self._write()

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())
