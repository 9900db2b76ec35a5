"""The pipeline report: one Markdown document with tables and plots of every stage, and where each number came from.

:func:`write_report` reads the stage outputs under ``results/`` (and the download stage's record under the data
folder), draws PNG plots (matplotlib, Agg canvas, no pyplot state) and writes ``<out>/report.md`` beside them,
plus the report stage's own ``provenance.json`` (the sha256 of every file it read). Sections, in order:

=============================  ==============================  =================================================
section                        stage folder (files read)       content
=============================  ==============================  =================================================
Data verification              ``verify/report.json``          counts, checksum status, problems and warnings
                               ``<data>/provenance.json``      (the download stage's record, when given)
Parameter budget               ``validate/report.json``        parameters and MACs per model, ODConv golden check
Training                       ``train/metrics.csv``           loss terms per epoch, attention entropies (plots)
Accuracy                       ``predict/summary.json``,       Easy / Medium / Hard AP, PR curves (the score
                               ``score/ap.json``,              stage's ``pr_curves.png``, copied), the reference
                               ``references/references.json``  detectors' AP on the same images
Export parity                  ``export/summary.json``         max |exported - eager| per output
Latency                        ``benchmark/latency.json``      the benchmark stage's latency table
ODConv attention analysis      ``attention/attention.json``    ``featherface attention``'s table and plots; the
                                                               section is left out when the file is absent
=============================  ==============================  =================================================

Every section ends with the provenance of the stages behind it (their ``provenance.json``). Entry points:
``featherface report`` (the CLI verb) and ``python -m featherface.report --results results --out results/report``.
Modules: :mod:`~featherface.report.inputs` (reading and checking the stage files),
:mod:`~featherface.report.plots` (the PNG plots), :mod:`~featherface.report.render` (the Markdown).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

from featherface.report.inputs import (
    STAGE_FILES,
    ReportError,
    Stage,
    load_results,
    load_stage,
    read_json,
    read_metrics_csv,
)
from featherface.report.plots import (
    PLOT_FILES,
    draw_plots,
    plot_attention_entropy,
    plot_training_curves,
)
from featherface.report.render import PARITY_TOLERANCE, REPORT_FILE, render_markdown, render_provenance
from featherface.utils.io import write_text_atomic
from featherface.utils.provenance import code_version, write_record

__all__ = [
    "PARITY_TOLERANCE",
    "PLOT_FILES",
    "REPORT_FILE",
    "STAGE_FILES",
    "ReportError",
    "Stage",
    "draw_plots",
    "load_results",
    "load_stage",
    "plot_attention_entropy",
    "plot_training_curves",
    "read_json",
    "read_metrics_csv",
    "render_markdown",
    "render_provenance",
    "write_report",
]

log = logging.getLogger(__name__)


def write_report(results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 data_dir: str | os.PathLike[str] | None = None, record: bool = True) -> Path:
    """Read the stage outputs, draw the plots and write ``<out_dir>/report.md``; return its path.

    Args:
        results_dir: the folder of the stage outputs (``results``); the project root is taken as its parent
            (recorded paths inside it are shown relative to it).
        out_dir: where the report and its PNGs go (``results/report``).
        data_dir: the data folder (``data``) holding the download stage's ``provenance.json`` (``None``: the
            download stage is left out).
        record: also write ``<out_dir>/provenance.json`` (stage ``report``, the sha256 of every file read).

    Raises:
        FileNotFoundError: ``results_dir`` is not a folder.
        ReportError: a malformed stage output (named).
    """
    results = Path(results_dir)
    out = Path(out_dir)
    stages = load_results(results, data_dir)
    plots = draw_plots(stages, out)
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    code = code_version()
    text = render_markdown(stages, plots, root=results.resolve().parent, generated=generated, code=code)
    path = out / REPORT_FILE
    write_text_atomic(path, text)
    if record:
        inputs = [p for stage in stages.values() for p in stage.read]
        write_record(out, "report", {"report": {"results": str(results), "data": None if data_dir is None
                                                else str(data_dir)}}, inputs=inputs,
                     extra={"stages_run": [name for name, s in stages.items() if s.ran]})
    log.info("report written to %s (%d plots)", path, len(plots))
    return path
