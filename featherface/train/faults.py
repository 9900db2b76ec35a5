"""What a stopped training run tells its user: where it can be continued from, and what went wrong in words
rather than a library's internals (Ctrl-C, a failed data loader worker, a non-finite loss)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from featherface.train.run_folder import existing_run_files

__all__ = ["LoaderWorkerError", "NonFiniteLossError", "TrainingInterrupted", "loader_worker_error",
           "non_finite_loss_error", "resume_advice"]

#: How torch re-raises an exception of a DataLoader worker in the main process.
_WORKER_MARKER = "in DataLoader worker process"
#: Worker failures caused by the shared memory that carries batches to the main process.
_SHARED_MEMORY_SIGNS = ("File too large", "No space left", "unable to resize file", "unable to write to file",
                        "shared memory", "/torch_")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; the message says what ``last.pt`` holds and how to continue."""


class LoaderWorkerError(RuntimeError):
    """A data loader worker process failed; the message gives its error in one line and what to do."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite. Attributes: ``epoch`` and ``step`` (1-based), ``terms`` (name -> value)."""

    def __init__(self, message: str, epoch: int, step: int, terms: Mapping[str, float]) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.terms = dict(terms)


def resume_advice(last_path: Path, saved_epoch: int) -> str:
    """What a stopped run left to continue from: ``last.pt`` with ``saved_epoch`` finished epochs (0: none saved by
    this run)."""
    if saved_epoch > 0:
        return (f"{last_path} holds {saved_epoch} finished epoch(s): continue with --resume (same settings and "
                f"--out {last_path.parent})")
    found = existing_run_files(last_path.parent)
    if found:
        return (f"no checkpoint of this run was saved, so there is nothing to continue; {last_path.parent} holds "
                f"{', '.join(found)}: start afresh with --overwrite (they are kept as <name>.stale-<time>.<ext>)")
    return (f"no checkpoint of this run was saved ({last_path.name} is written after each epoch), so there is "
            "nothing to continue: run the same command again to start afresh")


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def loader_worker_error(error: BaseException, where: str) -> LoaderWorkerError | None:
    """A :class:`LoaderWorkerError` for torch's re-raised worker exception (whose message is the worker's whole
    traceback), or ``None`` when ``error`` did not come from a worker.

    Args:
        error: the exception the loader raised in the main process.
        where: what the run was doing, e.g. ``"in epoch 2/10"``.
    """
    message = str(error)
    if _WORKER_MARKER not in message:
        return None
    reason = _last_line(message)
    if any(sign in reason for sign in _SHARED_MEMORY_SIGNS):
        advice = ("the workers hand batches over through shared memory (/dev/shm), which is full or limited (a "
                  "file size limit, see ulimit -f): free space there, or set train.num_workers: 0 to load data in "
                  "the main process")
    else:
        advice = "set train.num_workers: 0 to load data in the main process and see where it fails"
    return LoaderWorkerError(f"a data loader worker failed {where}: {reason}; {advice}")


def non_finite_loss_error(values: Sequence[float], epoch: int, step: int, steps_per_epoch: int, global_step: int,
                          epochs: int, rank: int, last_path: Path) -> NonFiniteLossError:
    """The error for a step whose loss is not finite.

    Args:
        values: the step's ``(total, loc, cls, landm)`` loss values.
        epoch, step, global_step: 0-based: the epoch, the step within it, the step over the run.
        steps_per_epoch, epochs: the run's length.
        rank: the process's rank.
        last_path: the run's ``last.pt``.
    """
    names = ("total", "loc", "cls", "landm")
    terms = dict(zip(names, values[:4]))
    bad = [n for n in names[1:] if not math.isfinite(terms[n])] or ["total"]
    shown = ", ".join(f"{n}={v:.6g}" for n, v in terms.items())
    return NonFiniteLossError(
        f"non-finite loss at epoch {epoch + 1}/{epochs}, step {step + 1}/{steps_per_epoch} "
        f"(global step {global_step + 1}, rank {rank}): {shown}; non-finite term(s): {', '.join(bad)}. "
        f"Training stopped; {last_path.name} holds the last finished checkpoint. Try a lower train.lr, "
        "train.grad_clip > 0, or check this batch's labels.",
        epoch + 1, step + 1, terms,
    )
