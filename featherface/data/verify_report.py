"""The findings of the verify stage (:mod:`featherface.data.verify`): problems, the report and its JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featherface.utils.io import write_text_atomic

__all__ = ["MESSAGE_PROBLEMS", "Problem", "VerifyError", "VerifyReport", "write_report"]

#: How many problems the `VerifyError` message names.
MESSAGE_PROBLEMS = 5


@dataclass(frozen=True)
class Problem:
    """One finding.

    Also readable like the report's JSON dicts: ``problem["path"]``, ``problem.get("line")``.

    Attributes:
        kind: a short category (``missing``, ``count``, ``checksum``, ``corrupt-image``, ``label``,
            ``missing-image``, ``unlabelled-image``, ``mat``, ``val-not-in-gt``, ``manifest``...).
        path: the file concerned, relative to the data root when inside it.
        message: what is wrong.
        line: the 1-based line number for problems inside a text file.
    """

    kind: str
    path: str
    message: str
    line: int | None = None

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``problem["path"]``), as in the JSON report; a missing line is a KeyError."""
        value = self.to_dict()
        return value[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style ``get``, as in the JSON report (``line`` is absent when None)."""
        return self.to_dict().get(key, default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        if self.line is not None:
            out["line"] = self.line
        out["message"] = self.message
        return out

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message} [{self.kind}]"


@dataclass
class VerifyReport:
    """The outcome of `verify`.

    Attributes:
        data_root: the folder verified (absolute).
        problems: findings that fail the stage.
        warnings: findings worth knowing that do not fail it.
        counts: ``train_images``, ``train_label_images``, ``train_faces``, ``train_landmarked_faces``,
            ``train_degenerate_boxes``, ``val_images``, ``val_gt_images`` (val images found in the ground
            truth), ``val_faces`` (their faces in ``wider_face_val.mat``), ``val_faces_{easy,medium,hard}``.
        checksums: ``{"manifest": {...}, "official": {path: "ok" | "mismatch" | "absent"}}``.
        skipped: checks not run, and why.
        elapsed_s: wall time of the verification, seconds.
    """

    data_root: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "data_root": self.data_root,
            "counts": self.counts,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [p.to_dict() for p in self.warnings],
            "checksums": self.checksums,
            "skipped": self.skipped,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def to_json(self) -> str:
        """The report as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def raise_for_problems(self) -> None:
        """Raise `VerifyError` when the report has problems."""
        if self.problems:
            raise VerifyError(self)


class VerifyError(RuntimeError):
    """The data failed verification; `report` holds every finding, the message names the first few."""

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        shown = "; ".join(str(p) for p in report.problems[:MESSAGE_PROBLEMS])
        more = len(report.problems) - MESSAGE_PROBLEMS
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(
            f"data verification of {report.data_root} failed with {len(report.problems)} problem(s): {shown}{suffix}"
        )


def write_report(report: VerifyReport, path: str | Path) -> None:
    """Write the report as JSON, atomically (temporary file + rename)."""
    write_text_atomic(path, report.to_json())
