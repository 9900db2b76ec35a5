"""``python -m featherface.report ARGS`` is ``featherface report ARGS``: write the pipeline report.

Options (the report verb's, :mod:`featherface.cli.parser`): ``--results DIR`` (the stage outputs), ``--out DIR``
(default ``<results>/report``), ``--data DIR`` (the download stage's record), ``--params FILE`` and ``--set``.
"""

from __future__ import annotations

import sys
from typing import Sequence

from featherface.cli import main as cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``featherface report`` with ``argv`` (default: ``sys.argv[1:]``); returns its exit status (2 on an error:
    a missing results folder, a malformed stage output)."""
    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
