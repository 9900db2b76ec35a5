"""The verify stage: check the downloaded data (structure, counts, checksums, image decoding, label parsing;
:func:`featherface.data.verify.verify`) and write ``results/verify/report.json`` with its ``provenance.json``.
Entry point: ``featherface verify --params params.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from featherface.config import Params, resolve_path, to_dict
from featherface.data.verify import VerifyReport, verify, write_report
from featherface.utils.io import ProgressCallback
from featherface.utils.provenance import write_record

__all__ = ["VERIFY_DIR", "REPORT_FILE", "run"]

#: The stage's output folder (relative to the project root) and its report inside it.
VERIFY_DIR = "results/verify"
REPORT_FILE = "report.json"


def run(params: Params, root: str | Path, out_dir: str | Path | None = None,
        progress: ProgressCallback | None = None) -> VerifyReport:
    """Verify ``<data.root>`` with the ``verify:`` settings and the ``data:`` subset sizes; write the report and
    ``provenance.json`` into ``out_dir`` (default ``<root>/results/verify``) and return the report (it never raises
    for data problems: ``report.ok`` says whether the data passed)."""
    root = Path(root)
    data_root = resolve_path(params.data.root, root)
    out_dir = Path(out_dir) if out_dir else root / VERIFY_DIR
    report = verify(
        data_root,
        params.verify,
        expected_train=params.data.train_images or None,
        expected_val=params.data.val_images or None,
        progress=progress,
    )
    write_report(report, out_dir / REPORT_FILE)
    write_record(
        out_dir,
        "verify",
        {"data": to_dict(params.data), "verify": to_dict(params.verify)},
        inputs=[data_root / "manifest.json"],
    )
    return report
