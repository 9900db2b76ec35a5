"""featherface.models.averaging: the weighted mean of checkpoints, its checks, the written file, the CLI verb."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from featherface.cli import main
from featherface.models.averaging import average_checkpoints
from featherface.models.checkpoints import CheckpointError, save_checkpoint, write_checkpoint_file
from featherface.models.loading import build_model_from_checkpoint
from featherface.models.registry import create_model


def _tiny(seed: int, name: str = "featherface_odconv_ssh", width: int = 16):
    torch.manual_seed(seed)
    return create_model(name, width=width, bifpn_repeats=1)


@pytest.fixture()
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = save_checkpoint(tmp_path / "a.pt", _tiny(0), model_name="featherface_odconv_ssh", optimizer={"lr": 1.0})
    b = save_checkpoint(tmp_path / "b.pt", _tiny(1), model_name="featherface_odconv_ssh", optimizer={"lr": 2.0})
    return a, b


def test_uniform_and_weighted_means(two_runs: tuple[Path, Path]) -> None:
    a, b = (torch.load(p, weights_only=True)["model"] for p in two_runs)
    uniform = average_checkpoints(two_runs)
    weighted = average_checkpoints(two_runs, weights=[3, 1])
    floats = [k for k, v in a.items() if v.is_floating_point() and not torch.equal(v, b[k])]
    assert len(floats) > 50  # the two seeds differ in most tensors
    for key in floats:
        torch.testing.assert_close(uniform["model"][key], (a[key] + b[key]) / 2)
        torch.testing.assert_close(weighted["model"][key], 0.75 * a[key] + 0.25 * b[key])
    ints = [k for k, v in a.items() if not v.is_floating_point()]
    assert ints and all(torch.equal(uniform["model"][k], a[k]) for k in ints)  # num_batches_tracked: the first's
    assert [s["weight"] for s in weighted["averaged_from"]] == [0.75, 0.25]
    assert "optimizer" not in uniform and uniform["model_name"] == "featherface_odconv_ssh"


def test_the_written_average_loads_as_a_model(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = write_checkpoint_file(tmp_path / "soup" / "soup.pt", average_checkpoints(two_runs))
    model = build_model_from_checkpoint(out)
    models = [build_model_from_checkpoint(p) for p in two_runs]
    for (name, p), p0, p1 in zip(model.named_parameters(), models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, (p0 + p1) / 2, msg=name)


def test_refuses_other_architectures_and_bad_weights(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    wider = save_checkpoint(tmp_path / "w.pt", _tiny(0, width=24))
    with pytest.raises(CheckpointError, match=r"w.pt: its model config differs from .*a.pt"):
        average_checkpoints([two_runs[0], wider])
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints(two_runs[:1])
    with pytest.raises(ValueError, match="2 weights for 3 checkpoints"):
        average_checkpoints([*two_runs, two_runs[0]], weights=[1, 1])
    with pytest.raises(ValueError, match="not all 0"):
        average_checkpoints(two_runs, weights=[0, 0])
    with pytest.raises(FileNotFoundError):
        average_checkpoints([two_runs[0], tmp_path / "missing.pt"])


def test_average_verb(two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soup.pt"
    assert main(["average", "--weights", *map(str, two_runs), "--mix", "1", "3", "--out", str(out)]) == 0
    assert f"{out}: the mean of 2 checkpoints ({two_runs[0]} x0.25, {two_runs[1]} x0.75)" in capsys.readouterr().out
    assert build_model_from_checkpoint(out) is not None


def test_files_without_a_config_are_compared_by_keys_and_shapes(tmp_path: Path) -> None:
    small = save_checkpoint(tmp_path / "s.pt", torch.nn.Linear(3, 2))
    large = save_checkpoint(tmp_path / "l.pt", torch.nn.Linear(4, 2))
    other = save_checkpoint(tmp_path / "o.pt", torch.nn.Sequential(torch.nn.Linear(3, 2)))
    with pytest.raises(CheckpointError, match=r"l.pt: tensor shapes differ from .*s.pt's at \['weight'\]"):
        average_checkpoints([small, large])
    with pytest.raises(CheckpointError, match=r"o.pt: state-dict keys differ .*missing \['bias', 'weight'\]"):
        average_checkpoints([small, other])
