"""Run ``featherface`` in a child process with one injected fault (used by ``test_faults.py``).

    python -m tests.train.fault_driver FAULT STEP [READY_FILE] -- train --params ... --out ...

FAULT happens right after optimiser step STEP (0-based, over the run):

* ``kill``: SIGKILL (nothing can be cleaned up);
* ``ctrl-c``: ``KeyboardInterrupt``, as Ctrl-C raises it;
* ``kill-in-save``: the next checkpoint write stops half-way with SIGKILL (a partial temporary file stays);
* ``disk-full``: a 50 kB file size limit (``ulimit -f``), so the next checkpoint cannot be written;
* ``hold``: write READY_FILE, then sleep (the test kills the process): a run that holds the folder's lock.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time

import torch

from featherface.cli import main
from featherface.train import engine


def _half_a_checkpoint(obj, f, *args, **kwargs):
    f.write(b"half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def inject(fault: str, ready: str | None) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "ctrl-c":
        raise KeyboardInterrupt
    elif fault == "kill-in-save":
        torch.save = _half_a_checkpoint
    elif fault == "disk-full":
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    elif fault == "hold":
        assert ready is not None
        with open(ready, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(120)
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def run(argv: list[str]) -> int:
    split = argv.index("--")
    fault, step, *rest = argv[:split]
    ready = rest[0] if rest else None
    report = engine.Trainer._report_step

    def report_then_fault(self, info, steps_per_epoch):
        report(self, info, steps_per_epoch)
        if info.global_step == int(step):
            inject(fault, ready)

    engine.Trainer._report_step = report_then_fault
    return main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
