"""The ``featherface`` command line: one verb per pipeline stage, plus tools for users.

Only this package prints and draws progress bars; the library logs through ``logging``. Each stage verb reads
``params.yaml`` (or ``--params FILE``), applies ``--set section.key=value`` overrides (validated like the file) and
runs its stage (:mod:`featherface.stages`), which writes the outputs with a ``provenance.json`` record.

Modules: :mod:`~featherface.cli.parser` (the one argument parser), :mod:`~featherface.cli.pipeline` (the stage
verbs), :mod:`~featherface.cli.deploy` (export and benchmark: tools and stages), :mod:`~featherface.cli.tools`
(detect, evaluate, attention, transfer, pack, info) and :mod:`~featherface.cli.common` (progress bars, the
parameter file, the AP line).

Start-up time: the command modules import torch and the library at their top, and :func:`main` imports the one
module of the verb given, after parsing (:func:`_command`). ``featherface --help``, ``featherface VERB --help`` and
usage errors therefore import neither torch nor the library (about 0.2 s instead of several seconds); this is
the package's only lazy import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from featherface.cli.parser import build_parser
from featherface.config import ConfigError

__all__ = ["build_parser", "main"]


def _command(spec: str) -> Callable[[argparse.Namespace], object]:
    """The function ``"<module>:<name>"`` of a module of this package, imported now (module docstring)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the verb's command and return the exit status: the
    command's (0, or 1 for a failed check), 2 for a bad parameter, a missing file or another error the command
    reports (printed as ``featherface VERB: error: ...``, no traceback) and 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    if getattr(args, "logging", None):
        _command(args.logging)(args)
    else:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        func = _command(args.func)
        return func(args)
    except KeyboardInterrupt:
        print(f"featherface {args.verb}: interrupted", file=sys.stderr)
        return 130
    except KeyError as err:
        print(f"featherface {args.verb}: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except (ConfigError, OSError, ValueError, RuntimeError) as err:
        print(f"featherface {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
