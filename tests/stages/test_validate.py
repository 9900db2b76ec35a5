"""The validate stage: parameter budget, output shapes, ODConv golden vectors, and how each failure is reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from featherface.config import ConfigError, ValidateConfig
from featherface.stages.validate import ValidateReport, check_model, expected_priors, validate

MODELS = ("featherface_none", "featherface_cbam", "featherface_odconv")


def _config(golden: Path | str, **changes: object) -> ValidateConfig:
    """The stage's defaults with one small input size (61x97: odd, not a multiple of any stride)."""
    fields: dict[str, object] = {"models": MODELS, "input_sizes": ((61, 97),), "golden_dir": str(golden)}
    fields.update(changes)
    return ValidateConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def report(golden_dir: Path) -> ValidateReport:
    return validate(_config(golden_dir), Path("."))


def test_expected_priors_by_hand() -> None:
    assert expected_priors(640, 640) == 2 * (80 * 80 + 40 * 40 + 20 * 20) == 16_800
    # ceil(61/8)=8, ceil(97/8)=13; ceil(61/16)=4, ceil(97/16)=7; ceil(61/32)=2, ceil(97/32)=4
    assert expected_priors(61, 97) == 2 * (8 * 13 + 4 * 7 + 2 * 4) == 280


def test_report_with_the_golden_vectors(report: ValidateReport) -> None:
    assert report.ok
    assert [m.name for m in report.models] == list(MODELS)
    params = {m.name: m.parameters for m in report.models}
    assert params["featherface_none"] == 475_735
    assert params["featherface_cbam"] == 488_664
    assert params["featherface_odconv"] < 490_000
    for m in report.models:
        assert m.within_budget and m.shapes_ok and m.problems == []
        assert m.output_shapes == {"61x97": {"loc": [1, 280, 4], "logits": [1, 280, 2], "landmarks": [1, 280, 10]}}
        assert m.macs_640 > 0
    assert report.golden_skipped is None
    assert len(report.odconv_golden) == 12
    assert all(g.ok and g.error is None for g in report.odconv_golden)
    assert max(max(g.max_abs_diff.values()) for g in report.odconv_golden) <= 1e-5
    # The eval and train outputs of every file, and both temperatures of the e_temp31 pair.
    assert all({"eval_output"} <= set(g.max_abs_diff) for g in report.odconv_golden)
    assert {"eval_T31_output", "train_B2_T31_output"} <= set(
        next(g for g in report.odconv_golden if g.name == "e_temp31").max_abs_diff
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["param_budget"] == 490_000 and len(data["odconv_golden"]) == 12


def test_budget_below_a_model_fails_that_model() -> None:
    cfg = _config("unused", param_budget=480_000)
    cbam = check_model("featherface_cbam", cfg)
    assert not cbam.within_budget and not cbam.shapes_ok
    assert cbam.problems == ["488,664 parameters exceed the budget of 480,000"]
    none = check_model("featherface_none", cfg)
    assert none.within_budget and none.shapes_ok
    eca_sam = check_model("featherface_eca_sam", cfg)
    assert eca_sam.parameters == 476_345 and eca_sam.within_budget and eca_sam.shapes_ok
    report = ValidateReport([none, cbam], [], "skipped", 480_000)
    assert not report.ok


def test_missing_golden_dir_is_skipped_with_a_reason(tmp_path: Path) -> None:
    report = validate(_config("no_such_golden", models=("featherface_none",)), tmp_path)
    assert report.ok
    assert report.odconv_golden == []
    assert report.golden_skipped == f"{tmp_path / 'no_such_golden' / 'odconv'} is absent"
    (tmp_path / "no_such_golden" / "odconv").mkdir(parents=True)
    report = validate(_config("no_such_golden", models=("featherface_none",)), tmp_path)
    assert report.golden_skipped is not None and "no golden files" in report.golden_skipped


def test_unreadable_golden_file_fails_its_check(tmp_path: Path, golden_dir: Path) -> None:
    odconv = tmp_path / "golden" / "odconv"
    odconv.mkdir(parents=True)
    shutil.copyfile(golden_dir / "odconv" / "a_k3_kn4.npz", odconv / "a_k3_kn4.npz")  # its .json is missing
    (odconv / "broken.npz").write_bytes(b"not an npz")
    (odconv / "broken.json").write_text('{"config": {}}')
    report = validate(_config(tmp_path / "golden", models=("featherface_none",)), tmp_path)
    assert not report.ok
    assert [g.name for g in report.odconv_golden] == ["a_k3_kn4", "broken"]
    for check in report.odconv_golden:
        assert not check.ok and check.max_abs_diff == {}
        assert check.error is not None and f"{check.name}.npz: cannot be compared" in check.error
    assert "FileNotFoundError" in report.odconv_golden[0].error  # type: ignore[operator]


def test_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="validate.models: unknown model 'featherface_cbma' .*'featherface_cbam'"):
        validate(_config("none", models=("featherface_none", "featherface_cbma")), tmp_path)


def test_check_model_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    check_model("featherface_none", _config("unused", input_sizes=((32, 32),)))
    assert torch.equal(torch.rand(3), want)


def test_failing_forward_pass_is_a_problem_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that raises at one input size: that size is reported, the other sizes are still checked."""
    import featherface.models.registry as registry
    import featherface.stages.validate as stage

    real = registry.create_model

    class RefusesOddWidths(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = real("featherface_none", width=16, bifpn_repeats=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if x.shape[-1] % 2:
                raise ValueError(f"odd width {x.shape[-1]}")
            return self.inner(x)

    monkeypatch.setattr(stage, "create_model", lambda name: RefusesOddWidths())
    check = check_model("featherface_none", _config("unused", input_sizes=((32, 32), (61, 97))))
    assert not check.shapes_ok
    assert check.problems == ["61x97: forward pass failed: odd width 97"]
    assert list(check.output_shapes) == ["32x32"]
