"""featherface.cli.parser: every verb has its help; a missing verb is a usage error."""

from __future__ import annotations

import pytest

from featherface.cli import build_parser, main

VERBS = (
    "download", "verify", "validate", "train", "predict", "score", "evaluate", "detect", "export", "benchmark", "info",
    "study-table", "report", "references", "transfer", "average", "pack", "attention",
)


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(verbs) == set(VERBS)
    for verb in (None, *VERBS):
        with pytest.raises(SystemExit) as info:
            main([verb, "--help"] if verb else ["--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: featherface" + (f" {verb}" if verb else ""))


def test_missing_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err
