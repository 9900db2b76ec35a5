"""``python -m featherface.train ARGS`` is ``featherface train ARGS`` (also under ``torchrun``).

Examples::

    python -m featherface.train --params params.yaml
    python -m featherface.train --params params.yaml --set train.epochs=3 --set train.lr=0.002 --out runs/a
    python -m featherface.train --params params.yaml --resume            # continue from <out>/last.pt
    torchrun --nproc_per_node 4 -m featherface.train --params workflow/params-full.yaml

Only rank 0 logs at INFO level, draws the progress bar and writes files. The options are the train verb's
(:mod:`featherface.cli.parser`).
"""

from __future__ import annotations

import sys
from typing import Sequence

from featherface.cli import main as cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``featherface train`` with ``argv`` (default: ``sys.argv[1:]``); returns its exit status."""
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
