"""featherface.cli.deploy: the benchmark tool, and the export and benchmark stages' option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featherface.cli import main


def test_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main([
        "benchmark", "--models", "featherface_none", "--no-retinaface", "--no-profile", "--smoke", "--json", str(out),
    ])
    assert code == 0
    result = json.loads(out.read_text())
    assert [m["name"] for m in result["models"]] == ["featherface_none"]
    assert "featherface_none" in capsys.readouterr().out


def test_export_and_benchmark_stages_take_their_settings_from_the_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("export:\n  opset: 19\n")
    assert main(["export", "--params", str(params), "--opset", "17"]) == 2
    assert "does not combine with --opset (override with --set export.KEY=VALUE)" in capsys.readouterr().err
    assert main(["benchmark", "--params", str(params), "--runs", "3", "--smoke"]) == 2
    assert "does not combine with --runs, --smoke" in capsys.readouterr().err
    assert main(["benchmark", "--set", "benchmark.runs=1"]) == 2
    assert "--set needs --params" in capsys.readouterr().err
    assert main(["export", "featherface_none"]) == 2
    assert "give --weights (or --params" in capsys.readouterr().err
    # the weights of the predict section must exist
    assert main(["export", "--params", str(params), "--set", "predict.weights=missing.pt"]) == 2
    assert "missing.pt" in capsys.readouterr().err
