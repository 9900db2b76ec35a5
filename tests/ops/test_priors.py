"""Priors: hand-computed values, order, counts, and the golden priors of the V1 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featherface.ops.priors import make_priors, num_priors

GOLDEN_TAGS = ("parade", "meeting_333x250", "random")


def test_square_32_by_hand() -> None:
    priors = make_priors(32, 32)
    # 4x4 cells at stride 8, 2x2 at 16, 1x1 at 32; two min sizes each.
    assert priors.shape == (2 * (16 + 4 + 1), 4)
    expected_first = torch.tensor(
        [
            [0.125, 0.125, 16 / 32, 16 / 32],  # cell (0, 0), min size 16
            [0.125, 0.125, 32 / 32, 32 / 32],  # cell (0, 0), min size 32
            [0.375, 0.125, 0.5, 0.5],  # cell (0, 1): the column moves first
            [0.375, 0.125, 1.0, 1.0],
        ]
    )
    torch.testing.assert_close(priors[:4], expected_first, rtol=0, atol=0)
    # Second row of stride 8 starts at index 2 * 4.
    torch.testing.assert_close(priors[8], torch.tensor([0.125, 0.375, 0.5, 0.5]), rtol=0, atol=0)
    # Stride 16 level starts after the 32 stride-8 priors: centre 8/32, sizes 64/32 and 128/32.
    torch.testing.assert_close(priors[32:34], torch.tensor([[0.25, 0.25, 2.0, 2.0], [0.25, 0.25, 4.0, 4.0]]))
    # Stride 32: one cell, centre 0.5, sizes 8 and 16 (no clipping).
    torch.testing.assert_close(priors[-2:], torch.tensor([[0.5, 0.5, 8.0, 8.0], [0.5, 0.5, 16.0, 16.0]]))


def test_non_square_and_non_divisible() -> None:
    height, width = 16, 40
    priors = make_priors(height, width, min_sizes=((16,),), steps=(8,))
    assert priors.shape == (2 * 5, 4)
    # Index 5 is row i=1, column j=0.
    torch.testing.assert_close(priors[5], torch.tensor([0.5 * 8 / 40, 1.5 * 8 / 16, 16 / 40, 16 / 16]))
    # ceil: 33 x 17 gives 5 x 3 cells at stride 8, last centre beyond the image side.
    priors = make_priors(33, 17, min_sizes=((16,),), steps=(8,))
    assert priors.shape == (15, 4)
    assert priors[-1, 0].item() == pytest.approx(2.5 * 8 / 17)
    assert priors[-1, 1].item() == pytest.approx(4.5 * 8 / 33)
    assert priors[-1, 0].item() > 1.0


@pytest.mark.parametrize(("height", "width"), [(640, 640), (678, 1024), (250, 333), (1, 1)])
def test_counts(height: int, width: int) -> None:
    expected = 2 * sum(math.ceil(height / s) * math.ceil(width / s) for s in (8, 16, 32))
    assert num_priors(height, width) == expected
    assert make_priors(height, width).shape == (expected, 4)
    if (height, width) == (640, 640):
        assert expected == 16800


def test_dtype_and_device() -> None:
    priors = make_priors(64, 48, dtype=torch.float64, device="cpu")
    assert priors.dtype == torch.float64 and priors.device.type == "cpu"
    torch.testing.assert_close(priors.float(), make_priors(64, 48), rtol=0, atol=0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="levels"):
        make_priors(64, 64, min_sizes=((16,), (32,)), steps=(8,))
    with pytest.raises(ValueError, match="positive"):
        make_priors(0, 64)
    with pytest.raises(ValueError, match="steps\\[0\\]"):
        make_priors(64, 64, min_sizes=((16,),), steps=(0,))


@pytest.mark.parametrize("tag", GOLDEN_TAGS)
def test_golden_priors(golden_dir, tag: str) -> None:
    with np.load(golden_dir / "featherface_v1" / "outputs.npz") as data:
        height, width = data[f"{tag}_input"].shape[2:]
        expected = torch.from_numpy(data[f"{tag}_priors"])
    priors = make_priors(int(height), int(width))
    assert priors.dtype == expected.dtype
    assert torch.equal(priors, expected)
