"""``python -m featherface.report [--results DIR] [--out DIR] [--data DIR]``: write the pipeline report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from featherface.report import write_report

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m featherface.report",
        description="Write results/report/report.md (tables, plots and the provenance of every stage) from the "
        "stage outputs.",
    )
    parser.add_argument("--results", default="results", help="folder of the stage outputs (default: results)")
    parser.add_argument("--out", help="output folder (default: <results>/report)")
    parser.add_argument("--data", help="data folder holding the download stage's provenance.json (default: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), write the report and return the exit status (2 on an error:
    a missing results folder, a malformed stage output, an unknown stage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = Path(args.out) if args.out else Path(args.results) / "report"
        path = write_report(args.results, out, data_dir=args.data)
    except (OSError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"featherface report: error: {message}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
