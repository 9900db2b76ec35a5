"""``python -m featherface.train``: the train stage as a stand-alone command (also under ``torchrun``).

Examples::

    python -m featherface.train --params params.yaml
    python -m featherface.train --params params.yaml --set train.epochs=3 --set train.lr=0.002 --out runs/a
    python -m featherface.train --params params.yaml --resume            # continue from <out>/last.pt
    torchrun --nproc_per_node 4 -m featherface.train --params workflow/params-full.yaml

Only rank 0 logs at INFO level, draws the progress bar and writes files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from featherface.config import ConfigError
from featherface.train import distributed
from featherface.stages.train import run_training
from featherface.train.faults import NonFiniteLossError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m featherface.train",
        description="Train a FeatherFace model as the train: section of the parameter file says; writes "
        "<out>/last.pt (every train.checkpoint_every epochs), <out>/metrics.csv, <out>/final.pt and "
        "<out>/provenance.json. Runs under torchrun for multi-GPU (DDP) training.",
    )
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. train.epochs=3 (validated like the file); repeatable")
    parser.add_argument("--out", help="output folder (default: results/train beside the parameter file)")
    parser.add_argument("--resume", nargs="?", const="strict", default=None, choices=("strict", "auto"),
                   help="continue from <out>/last.pt when it exists (strict: refuse one written with other settings); "
                   "auto: continue a compatible one, else keep it as last.stale-<time>.pt and start afresh")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --out folder that holds a run (its files are kept as "
                        "<name>.stale-<time>.<ext>; without it such a folder is refused)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = distributed.detect()
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level if env.is_main else logging.WARNING,
                        format=f"%(asctime)s [rank {env.rank}] %(levelname)s %(name)s: %(message)s"
                        if env.distributed else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    from featherface.cli import TqdmProgress

    progress = TqdmProgress(enabled=not args.quiet and env.is_main)
    try:
        final = run_training(args.params, args.set or (), args.out, args.resume or False, progress,
                             overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError, NonFiniteLossError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except (OSError, ValueError, RuntimeError) as err:  # e.g. a checkpoint that cannot be written (full disk)
        print(f"train: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # TrainingInterrupted says what last.pt holds
        progress.close()
        print(f"train: {err or 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        progress.close()
    if env.is_main:
        print(f"train: final model {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
