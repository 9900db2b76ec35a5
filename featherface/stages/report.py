"""The report stage: one Markdown document (``results/report/report.md``, PNG plots beside it) of every stage's
outputs with their provenance (:func:`featherface.report.write_report`). Entry points: ``featherface report
--params params.yaml`` and ``python -m featherface.report``.
"""

from __future__ import annotations

from pathlib import Path

from featherface.config import Params, resolve_path
from featherface.report import write_report

__all__ = ["REPORT_DIR", "run"]

#: The stage's output folder, relative to the project root.
REPORT_DIR = "results/report"


def run(params: Params | None, root: str | Path, results: str | Path | None = None, out_dir: str | Path | None = None,
        data_dir: str | Path | None = None) -> Path:
    """Write the report and return the path of ``report.md``.

    Args:
        params: the validated parameters; ``None`` without a parameter file (then the download stage, whose record
            lies in ``<data.root>``, is left out unless ``data_dir`` names its folder).
        root: the project root (the folder of the parameter file).
        results: the folder of the stage outputs (default ``<root>/results``).
        out_dir: where the report goes (default ``<results>/report``).
        data_dir: the folder holding the download stage's ``provenance.json`` (default ``<data.root>``).

    Raises:
        FileNotFoundError: the results folder is missing. ReportError: a malformed stage output (named).
    """
    root = Path(root)
    results = Path(results) if results else root / "results"
    out_dir = Path(out_dir) if out_dir else results / "report"
    if data_dir is None and params is not None:
        data_dir = resolve_path(params.data.root, root)
    return write_report(results, out_dir, data_dir=data_dir)
