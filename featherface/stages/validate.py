"""The validate stage: build every configured model, check its parameter budget and output shapes, and run
ODConv against the official module's golden vectors when they are available.

The report is plain data (`ValidateReport.to_dict()`); :func:`run` writes it into ``results/validate/report.json``
with its ``provenance.json``. Entry point: ``featherface validate --params params.yaml``.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featherface.config import ConfigError, Params, ValidateConfig, resolve_path, to_dict
from featherface.models.registry import create_model, list_models
from featherface.models.summary import count_macs
from featherface.nn.odconv import ODConv2d
from featherface.ops.priors import num_priors
from featherface.utils.io import write_json_atomic
from featherface.utils.provenance import write_record

__all__ = ["VALIDATE_DIR", "GoldenCheck", "ModelCheck", "ValidateReport", "check_model", "check_odconv_golden",
           "expected_priors", "run", "validate"]

log = logging.getLogger(__name__)

#: The stage's output folder, relative to the project root.
VALIDATE_DIR = "results/validate"


@dataclass
class ModelCheck:
    """One model: its size, its cost, and whether its outputs have the expected shapes."""

    name: str
    parameters: int
    within_budget: bool
    macs_640: int
    output_shapes: dict[str, dict[str, list[int]]]
    shapes_ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class GoldenCheck:
    """One ODConv golden file: the largest absolute difference of each compared output.

    ``error`` says why a file could not be compared (then ``max_abs_diff`` is empty and ``ok`` is False).
    """

    name: str
    max_abs_diff: dict[str, float]
    ok: bool
    error: str | None = None


@dataclass
class ValidateReport:
    models: list[ModelCheck]
    odconv_golden: list[GoldenCheck]
    golden_skipped: str | None
    param_budget: int

    @property
    def ok(self) -> bool:
        return all(m.within_budget and m.shapes_ok for m in self.models) and all(g.ok for g in self.odconv_golden)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "param_budget": self.param_budget,
            "models": [asdict(m) for m in self.models],
            "odconv_golden": [asdict(g) for g in self.odconv_golden],
            "golden_skipped": self.golden_skipped,
        }


def expected_priors(height: int, width: int) -> int:
    """``P = 2 * sum(ceil(H / s) * ceil(W / s))`` over the strides 8, 16, 32 (the default anchors' count)."""
    return num_priors(height, width)


def check_model(name: str, cfg: ValidateConfig) -> ModelCheck:
    """Build `name`, count its parameters and MACs at 640x640, run it at every configured input size.

    A forward pass that fails at an input size is recorded as a problem, not raised. The random initialisation
    is seeded (0) without touching the caller's global RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name).eval()
    parameters = sum(p.numel() for p in model.parameters())
    problems: list[str] = []
    shapes: dict[str, dict[str, list[int]]] = {}
    with torch.inference_mode():
        for height, width in cfg.input_sizes:
            try:
                loc, logits, landmarks = model(torch.zeros(1, 3, height, width))
            except (RuntimeError, ValueError) as err:
                problems.append(f"{height}x{width}: forward pass failed: {err}")
                continue
            p = expected_priors(height, width)
            got = {"loc": list(loc.shape), "logits": list(logits.shape), "landmarks": list(landmarks.shape)}
            shapes[f"{height}x{width}"] = got
            want = {"loc": [1, p, 4], "logits": [1, p, 2], "landmarks": [1, p, 10]}
            if got != want:
                problems.append(f"{height}x{width}: outputs {got}, expected {want}")
    if parameters > cfg.param_budget:
        problems.append(f"{parameters:,} parameters exceed the budget of {cfg.param_budget:,}")
    macs = int(count_macs(model, (640, 640))[0])
    return ModelCheck(name, parameters, parameters <= cfg.param_budget, macs, shapes, not problems, problems)


def _golden_outputs(npz: Any, config: dict[str, Any]) -> dict[str, float]:
    """Rebuild the official module's configuration, load its weights and compare every stored output."""
    state = {k: torch.from_numpy(npz[k]) for k in npz.files if k == "weight" or k.startswith("attention.")}

    def build(temperature: float) -> ODConv2d:
        module = ODConv2d(
            config["in_planes"], config["out_planes"], config["kernel_size"], stride=config["stride"],
            padding=config["padding"], dilation=config["dilation"], groups=config["groups"],
            reduction=config["reduction"], kernel_num=config["kernel_num"], min_channel=config["min_channel"],
        )
        module.load_state_dict(state, strict=False)
        module.set_temperature(temperature)
        return module

    diffs: dict[str, float] = {}
    cases = [
        ("eval_output", "input", 1.0, False),
        ("eval_T31_output", "input", 31.0, False),
        ("train_output", "input", 1.0, True),
        ("train_B2_output", "input_train_B2", 1.0, True),
        ("train_B2_T31_output", "input_train_B2", 31.0, True),
    ]
    for key, input_key, temperature, train in cases:
        if key not in npz.files:
            continue
        module = build(temperature).train(train)
        with torch.no_grad():
            out = module(torch.from_numpy(npz[input_key])).numpy()
        diffs[key] = float(np.abs(out - npz[key]).max())
    return diffs


def check_odconv_golden(golden_dir: Path, tolerance: float) -> list[GoldenCheck]:
    """Compare ODConv2d with every ``<golden_dir>/odconv/*.npz`` (eval and train mode, both temperatures)."""
    checks = []
    for npz_path in sorted((golden_dir / "odconv").glob("*.npz")):
        try:
            config = json.loads(npz_path.with_suffix(".json").read_text())["config"]
            with np.load(npz_path) as npz:
                diffs = _golden_outputs(npz, config)
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            error = f"{npz_path}: cannot be compared ({type(err).__name__}: {err})"
            log.warning("odconv golden %s", error)
            checks.append(GoldenCheck(npz_path.stem, {}, False, error))
            continue
        ok = bool(diffs) and max(diffs.values()) <= tolerance
        error = None if diffs else f"{npz_path}: holds none of the known output keys"
        checks.append(GoldenCheck(npz_path.stem, diffs, ok, error))
        log.info("odconv golden %s: %s", npz_path.stem, "ok" if ok else f"FAILED {diffs or error}")
    return checks


def validate(cfg: ValidateConfig, project_root: Path) -> ValidateReport:
    """Run every check of the stage; never raises for a failed check (the report says which failed).

    Raises:
        ConfigError: `cfg.models` names a model that is not registered (with a suggestion).
    """
    known = list_models()
    for name in cfg.models:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"validate.models: unknown model {name!r}{hint}; registered: {known}")
    models = [check_model(name, cfg) for name in cfg.models]
    golden_dir = resolve_path(cfg.golden_dir, project_root)
    skipped = None
    golden: list[GoldenCheck] = []
    if (golden_dir / "odconv").is_dir():
        golden = check_odconv_golden(golden_dir, cfg.tolerance)
        if not golden:
            skipped = f"no golden files in {golden_dir / 'odconv'}"
    else:
        skipped = f"{golden_dir / 'odconv'} is absent"
        log.warning("validate: ODConv golden check skipped: %s", skipped)
    return ValidateReport(models, golden, skipped, cfg.param_budget)


def run(params: Params, root: str | Path, out_dir: str | Path | None = None) -> ValidateReport:
    """Run :func:`validate` with the ``validate:`` section; write ``report.json`` and ``provenance.json`` into
    ``out_dir`` (default ``<root>/results/validate``) and return the report (``report.ok``: whether all passed).

    Raises:
        ConfigError: ``validate.models`` names a model that is not registered.
    """
    root = Path(root)
    out_dir = Path(out_dir) if out_dir else root / VALIDATE_DIR
    report = validate(params.validate, root)
    write_json_atomic(out_dir / "report.json", report.to_dict())
    write_record(out_dir, "validate", {"validate": to_dict(params.validate)}, extra={"ok": report.ok})
    return report
