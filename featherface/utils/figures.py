"""Matplotlib figures for every plot of the package (evaluation, attention analysis, report): an Agg canvas, no
pyplot global state, written as PNG files atomically.

matplotlib is imported when a figure is made, not with this module: the modules that draw plots are imported by
stages that may never draw one (``featherface.report`` without plots to draw, ``featherface.analysis.attention``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from featherface.utils.io import write_bytes_atomic

__all__ = ["new_figure", "save_png"]


def new_figure(width: float, height: float, dpi: int) -> Any:
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches at ``dpi`` dots per inch, on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: see the module docstring
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` as PNG and write it to ``path`` atomically (folders are created); returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_bytes_atomic(path, buffer.getvalue())
