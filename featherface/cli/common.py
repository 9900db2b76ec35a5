"""What the command modules share: the progress bars, the parameter file of a stage verb and the AP line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from featherface.config import Params, load_params

if TYPE_CHECKING:  # only a type here: importing eval.widerface (scipy) takes a second that `detect` need not wait
    from featherface.eval.widerface import WiderResult

__all__ = ["TqdmProgress", "print_ap", "stage_params"]


class TqdmProgress:
    """A :data:`featherface.utils.io.ProgressCallback` (``progress(done, total, what)``) that draws one tqdm bar
    per ``what`` on stderr; ``enabled=False`` draws nothing (``--quiet``, or a rank other than 0). As a context
    manager it closes its bars on the way out, whatever happened."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bars: dict[str, tqdm] = {}

    def __call__(self, done: int, total: int | None, what: str) -> None:
        if not self.enabled:
            return
        bar = self._bars.get(what)
        if bar is None:
            bar = tqdm(total=total, desc=what, unit="it", leave=False, file=sys.stderr, dynamic_ncols=True)
            self._bars[what] = bar
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()
        if total is not None and done >= total:
            bar.close()
            self._bars.pop(what, None)

    def close(self) -> None:
        """Close every open bar."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stage_params(args: argparse.Namespace) -> tuple[Params, Path]:
    """The validated parameters of ``--params`` with the ``--set`` overrides, and the project root (the folder of
    the parameter file).

    Raises:
        FileNotFoundError: no such parameter file. ConfigError: an unknown key or a bad value (named).
    """
    path = Path(args.params).resolve()
    return load_params(path, args.set or ()), path.parent


def print_ap(result: WiderResult, label: str) -> None:
    """Print ``<label>: Easy .. Medium .. Hard ..`` (AP in percent) and how many val images took part."""
    ap = result.ap
    print(
        f"{label}: Easy {100 * ap['easy']:.2f}  Medium {100 * ap['medium']:.2f}  Hard {100 * ap['hard']:.2f}  "
        f"({result.num_images} of the {result.num_images_total} val images took part)"
    )
