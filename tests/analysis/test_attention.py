"""The 4-D attention analysis: statistics by hand, image selection, the capture hook, the CLI verb on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from featherface.analysis.attention import (
    capture_attentions,
    kernel_selection,
    select_images,
    summarize,
)
from featherface.analysis.render import criterion_text
from featherface.cli import main
from featherface.models.checkpoints import save_checkpoint
from featherface.models.registry import create_model
from featherface.nn.odconv import ODConv2d
from featherface.train.metrics import odconv_modules

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LN2 = math.log(2.0)


def _binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def write_images(folder: Path, sizes: tuple[tuple[int, int], ...] = ((48, 64), (64, 40), (56, 56), (40, 72))) -> Path:
    """Random-noise JPEGs in ``<folder>/<event>/<name>.jpg`` (two events, like the WIDER val folder)."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        path = folder / f"{i % 2}--Event" / f"image_{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def tiny_checkpoint(tmp_path: Path, name: str) -> Path:
    torch.manual_seed(0)
    model = create_model(name, width=16, bifpn_repeats=1)
    return save_checkpoint(tmp_path / f"{name}.pt", model, model_name=name)


# ------------------------------------------------------------------------------------------------ by hand
def test_statistics_of_crafted_attentions_by_hand() -> None:
    model = nn.Sequential(ODConv2d(4, 6, 3, padding=1, kernel_num=3))
    kernel = np.array([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]])
    channel = np.array([[0.5] * 4, [0.5] * 4, [0.9, 0.1, 0.5, 0.5], [0.1, 0.9, 0.5, 0.5]])
    values = {"0": {"channel": channel, "filter": np.full((4, 6), 0.25), "spatial": np.full((4, 9), 0.7),
                    "kernel": kernel}}
    summary = summarize(model, values, {"model": "crafted"})
    assert summary["model"] == "crafted" and summary["images"] == 4
    (module,) = summary["modules"]
    assert module["name"] == "0" and module["kernel_num"] == 3

    k = module["heads"]["kernel"]
    # argmax per image: 0, 1, 0 (a three-way tie goes to the first), 2
    assert k["argmax_counts"] == [2, 1, 1] and k["argmax_frequency"] == [0.5, 0.25, 0.25]
    image_entropies = [0.0, -(0.2 * math.log(0.2) + 0.5 * math.log(0.5) + 0.3 * math.log(0.3)), math.log(3), 0.0]
    assert k["entropy"] == pytest.approx(sum(image_entropies) / 4, abs=1e-6)  # 0.532
    assert k["entropy_max"] == pytest.approx(math.log(3), abs=1e-6)
    assert k["entropy_below_criterion"] is True and k["criterion_trivial"] is False
    assert k["mean"] == pytest.approx([(1 + 0.2 + 1 / 3) / 4, (0.5 + 1 / 3) / 4, (0.3 + 1 / 3 + 1) / 4], abs=1e-6)

    c = module["heads"]["channel"]
    # elements 0 and 1 take 0.5, 0.5, 0.9, 0.1 over the images: std sqrt(0.08); elements 2 and 3 never change
    assert c["std"] == pytest.approx([math.sqrt(0.08), math.sqrt(0.08), 0.0, 0.0], abs=1e-6)
    assert c["between_image_std"] == pytest.approx(math.sqrt(0.08) / 2, abs=1e-6)
    assert c["between_image_rel"] == pytest.approx(math.sqrt(0.08), abs=1e-6)  # relative to the mean 0.5
    assert c["entropy"] == pytest.approx((12 * LN2 + 4 * _binary_entropy(0.9)) / 16, abs=1e-6)
    assert c["entropy_max"] == pytest.approx(LN2, abs=1e-6)
    assert module["heads"]["filter"]["entropy"] == pytest.approx(_binary_entropy(0.25), abs=1e-6)
    assert module["heads"]["spatial"]["between_image_std"] == 0.0 and module["heads"]["spatial"]["min"] == 0.7


def test_kernel_selection_and_the_criterion_text() -> None:
    assert kernel_selection(np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])) == ([2, 1], [2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="images >= 1"):
        kernel_selection(np.zeros((0, 2)))
    two = {"entropy": 0.69, "entropy_max": math.log(2), "mean": [0.5, 0.5]}
    assert criterion_text(two) == "yes (trivially: max ln 2 = 0.693 < 1.0)"
    four = {"entropy": 1.2, "entropy_max": math.log(4), "mean": [0.25] * 4}
    assert criterion_text(four) == "no" and criterion_text({**four, "entropy": 0.9}) == "yes"
    assert criterion_text({"skipped": "kernel_num = 1"}) == "n/a (one kernel)"


def test_select_images_spreads_over_the_list() -> None:
    paths = [Path(f"{i}.jpg") for i in range(10)]
    assert select_images(paths, 4) == [paths[0], paths[2], paths[5], paths[7]]
    assert select_images(paths, None) == paths and select_images(paths, 50) == paths
    with pytest.raises(ValueError, match=">= 1"):
        select_images(paths, 0)


def test_capture_attentions_reads_every_odconv_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = create_model("featherface_odconv_ssh", width=16, bifpn_repeats=1).train()
    captured = capture_attentions(model, torch.randn(2, 3, 64, 48) * 50)
    assert model.training  # the mode is restored
    assert list(captured) == [name for name, _ in odconv_modules(model)] and len(captured) == 15
    first = captured["context.0.conv3x3.conv"]  # 16 -> 8 channels, 3x3, 2 kernels
    assert first["channel"].shape == (2, 16) and first["filter"].shape == (2, 8)
    assert first["spatial"].shape == (2, 9) and first["kernel"].shape == (2, 2)
    torch.testing.assert_close(first["kernel"].sum(dim=1), torch.ones(2))


# --------------------------------------------------------------------------------------------- the CLI verb
def test_attention_verb_on_a_tiny_odconv_ssh_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = write_images(tmp_path / "images")
    weights = tiny_checkpoint(tmp_path, "featherface_odconv_ssh")
    out = tmp_path / "attention"
    code = main(["attention", "--weights", str(weights), "--images", str(images), "--max-images", "3",
                 "--long-side", "96", "--out", str(out), "--threads", "1", "-q"])
    assert code == 0
    assert "15 ODConv2d modules over 3 images" in capsys.readouterr().out
    summary = json.loads((out / "attention.json").read_text())
    assert summary["model"] == "featherface_odconv_ssh" and summary["images"] == 3 and summary["long_side"] == 96
    assert summary["images_available"] == 4 and summary["image_files"] == [
        "0--Event/image_0.jpg", "0--Event/image_2.jpg", "1--Event/image_1.jpg"]  # sorted, evenly spaced
    model = create_model("featherface_odconv_ssh", width=16, bifpn_repeats=1)
    assert [m["name"] for m in summary["modules"]] == [name for name, _ in odconv_modules(model)]
    for m in summary["modules"]:
        for head, stats in m["heads"].items():
            assert 0.0 <= stats["min"] <= stats["overall_mean"] <= stats["max"] <= 1.0, (m["name"], head)
            assert 0.0 <= stats["entropy"] <= stats["entropy_max"] + 1e-9
        assert sum(m["heads"]["kernel"]["argmax_frequency"]) == pytest.approx(1.0)
        assert m["heads"]["kernel"]["entropy_max"] == pytest.approx(LN2) and m["heads"]["kernel"]["criterion_trivial"]
    with np.load(out / "attention.npz") as npz:
        assert len(npz.files) == 15 * 4 and npz["context.2.conv7x7.conv/spatial"].shape == (3, 9)
    table = (out / "attention.md").read_text()
    assert table.count("| `context.") == 15
    assert table.count("yes (trivially: max ln 2 = 0.693 < 1.0)") + table.count("no (trivially") == 15
    for name in ("attention_distributions.png", "kernel_selection.png", "spatial_maps.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"`{name}`" in table
    record = json.loads((out / "provenance.json").read_text())
    assert record["stage"] == "attention" and str(weights) in record["inputs_sha256"]


def test_attention_verb_on_a_tiny_odconv4_model(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    weights = tiny_checkpoint(tmp_path, "featherface_odconv4")
    out = tmp_path / "attention"
    assert main(["attention", "--weights", str(weights), "--images", str(images), "--long-side", "0",
                 "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "attention.json").read_text())
    assert summary["images"] == 4 and summary["long_side"] is None
    modules = {m["name"]: m for m in summary["modules"]}
    assert list(modules) == ["attention.c3.conv", "attention.c4.conv", "attention.p3.conv", "attention.p4.conv",
                             "attention.p5.conv"]
    assert "skipped" in modules["attention.c3.conv"]["heads"]["kernel"]  # one kernel
    assert "skipped" in modules["attention.p3.conv"]["heads"]["filter"]  # depthwise
    assert modules["attention.p3.conv"]["heads"]["kernel"]["entropy_max"] == pytest.approx(math.log(4))
    rows = {line.split(" | ")[0][2:]: line for line in (out / "attention.md").read_text().splitlines()
            if line.startswith("| `")}
    assert "| n/a (one kernel) |" in rows["`attention.c3.conv`"]
    assert "trivially" not in rows["`attention.p3.conv`"] and "(max 1.386," in rows["`attention.p3.conv`"]


def test_analysis_of_one_kernel_modules_draws_no_kernel_plot(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images", sizes=((40, 40),))
    weights = tiny_checkpoint(tmp_path, "featherface_odconv")
    out = tmp_path / "attention"
    out.mkdir()
    (out / "kernel_selection.png").write_bytes(PNG_MAGIC + b"stale")
    assert main(["attention", "--weights", str(weights), "--images", str(images), "--out", str(out), "-q"]) == 0
    assert not (out / "kernel_selection.png").exists() and (out / "spatial_maps.png").is_file()
    assert "No module has more than one kernel" in (out / "attention.md").read_text()


def test_attention_verb_needs_odconv_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = write_images(tmp_path / "images", sizes=((40, 40),))
    weights = tiny_checkpoint(tmp_path, "featherface_none")
    assert main(["attention", "--weights", str(weights), "--images", str(images), "--out", str(tmp_path / "o")]) == 2
    assert "no ODConv2d module" in capsys.readouterr().err
    assert main(["attention", "--weights", str(weights), "--images", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "o")]) == 2
