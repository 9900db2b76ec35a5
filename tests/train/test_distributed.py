"""torchrun environment detection and a real two-process DDP run (gloo, CPU)."""

from __future__ import annotations

import csv
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from featherface.train import distributed
from featherface.train.distributed import DistEnv
from tests.train import SyntheticFaces, restore_threads, tiny_config  # noqa: F401 (autouse fixture)

TIMEOUT_S = 120


def test_detect_single_process_and_torchrun_env():
    assert distributed.detect({}) == DistEnv(0, 1, 0)
    env = distributed.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert env == DistEnv(3, 4, 1) and env.distributed and not env.is_main
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        distributed.detect({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        distributed.detect({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.detect({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})


def test_single_process_helpers_are_no_ops():
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t, DistEnv()) is t and t.tolist() == [1.0, 2.0]
    distributed.init(DistEnv(), torch.device("cpu"))  # does not start a group
    assert not torch.distributed.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    from featherface.train.engine import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    env = distributed.detect()
    distributed.init(env, torch.device("cpu"), timeout_s=60)
    try:
        losses: list[float] = []
        cfg = tiny_config(model="featherface_odconv", epochs=2, batch_size=2, momentum=0.9)
        trainer = Trainer(cfg, out, SyntheticFaces(8, 64), device="cpu", env=env,
                          on_step=lambda i: losses.append(i.loss))
        trainer.fit()
        state = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        torch.save({"losses": losses, "params": state}, f"{out}/rank{rank}.pt")
    finally:
        distributed.cleanup()


def test_two_process_gloo_training_keeps_ranks_identical(tmp_path):
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP run did not finish within {TIMEOUT_S} s (hang?)")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert len(r0["losses"]) == len(r1["losses"]) == 4  # 8 images / (2 ranks x batch 2) = 2 steps x 2 epochs
    assert r0["losses"] != r1["losses"]  # each rank saw its own shard
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["images"]) for r in rows] == [8, 8]  # summed over the ranks
    mean_loss = sum(r0["losses"][:2] + r1["losses"][:2]) / 4  # epoch 1: mean over steps and ranks
    assert float(rows[0]["loss"]) == pytest.approx(mean_loss, rel=1e-9)
    assert (tmp_path / "final.pt").is_file() and (tmp_path / "last.pt").is_file()
