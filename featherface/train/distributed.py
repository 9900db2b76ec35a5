"""Multi-process training helpers for ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m featherface.train --params params.yaml`` starts N processes and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`detect` reads
them and :func:`init` joins the process group (``nccl`` for CUDA devices, ``gloo`` on CPU). Without these
variables (or with ``WORLD_SIZE=1``) training runs in a single process and every helper here is a no-op.

Conventions of the trainer: rank 0 alone writes checkpoints, ``metrics.csv`` and logs progress; each
process loads its own shard of every epoch (``DistributedSampler`` with ``set_epoch``), with ``batch_size``
images per process; epoch metrics are summed over the ranks with :func:`all_reduce_sum`.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "all_reduce_sum", "barrier", "cleanup", "detect", "init"]

log = logging.getLogger(__name__)

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs progress."""
        return self.rank == 0


def _read_int(env: Mapping[str, str], key: str) -> int:
    raw = env[key]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {key}={raw!r} is not an integer (set by torchrun)") from None
    if value < 0:
        raise ValueError(f"environment variable {key}={value} must be >= 0")
    return value


def detect(env: Mapping[str, str] | None = None) -> DistEnv:
    """The torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or a single process when unset.

    Raises:
        ValueError: only some of the variables are set, or they are not consistent integers.
    """
    env = os.environ if env is None else env
    present = [k for k in _ENV_KEYS if k in env]
    if not present:
        return DistEnv()
    if len(present) != len(_ENV_KEYS):
        missing = [k for k in _ENV_KEYS if k not in env]
        raise ValueError(f"incomplete torchrun environment: {present} set but {missing} missing")
    rank, world, local = (_read_int(env, k) for k in _ENV_KEYS)
    if world < 1 or rank >= world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistEnv(rank, world, local)


def init(env: DistEnv, device: torch.device, timeout_s: float = 1800.0) -> None:
    """Join the default process group when ``env.distributed`` (``nccl`` on CUDA, ``gloo`` otherwise).

    For CUDA the current device is set to ``device`` first. ``MASTER_ADDR`` / ``MASTER_PORT`` come from the
    environment (torchrun sets them). Does nothing for a single process or an already initialised group.
    """
    if not env.distributed or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    log.info("process group: %s, rank %d of %d (local rank %d)", backend, env.rank, env.world_size, env.local_rank)


def cleanup() -> None:
    """Leave the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every process (no-op for a single process)."""
    if env.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place and return it (unchanged for a single process)."""
    if env.distributed and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
