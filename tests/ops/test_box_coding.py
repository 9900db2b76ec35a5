"""Box and landmark coding: hand-computed offsets, round trips over batch dimensions, dtypes, errors."""

from __future__ import annotations

import math

import pytest
import torch

from featherface.ops.box_coding import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks

PRIOR = torch.tensor([0.5, 0.5, 0.2, 0.4])


def test_encode_boxes_by_hand() -> None:
    boxes = torch.tensor(
        [
            [0.4, 0.3, 0.6, 0.7],  # the prior itself
            [0.42, 0.3, 0.62, 0.7],  # centre + 0.02 in x = 1 * v0 * w
            [0.3, 0.3, 0.7, 0.7],  # twice as wide
            [0.4, 0.2, 0.6, 0.6],  # centre - 0.1 in y = -2.5 * v0 * h
        ]
    )
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, math.log(2) / 0.2, 0.0],
            [0.0, -2.5, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(encode_boxes(boxes, PRIOR.expand(4, 4)), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(decode_boxes(expected, PRIOR), boxes, rtol=0, atol=1e-6)


def test_landmarks_by_hand() -> None:
    points = torch.tensor([0.5, 0.5, 0.52, 0.5, 0.5, 0.54, 0.48, 0.46, 0.6, 0.9])
    expected = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, -1.0, -1.0, 5.0, 10.0])
    torch.testing.assert_close(encode_landmarks(points, PRIOR), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(decode_landmarks(expected, PRIOR), points, rtol=0, atol=1e-6)


def _random_priors_and_boxes(generator: torch.Generator, batch: int, p: int, dtype: torch.dtype):
    priors = torch.cat((torch.rand(p, 2, generator=generator), 0.05 + torch.rand(p, 2, generator=generator)), 1)
    centre = torch.rand(batch, p, 2, generator=generator)
    size = 0.01 + torch.rand(batch, p, 2, generator=generator)
    boxes = torch.cat((centre - size / 2, centre + size / 2), -1)
    return priors.to(dtype), boxes.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trips_with_batch_dims(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    priors, boxes = _random_priors_and_boxes(generator, 3, 50, dtype)
    offsets = encode_boxes(boxes, priors)
    assert offsets.shape == (3, 50, 4) and offsets.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(decode_boxes(offsets, priors), boxes, rtol=0, atol=tol)

    points = torch.rand(3, 50, 10, generator=generator).to(dtype)
    offsets = encode_landmarks(points, priors)
    assert offsets.shape == (3, 50, 10) and offsets.dtype == dtype
    torch.testing.assert_close(decode_landmarks(offsets, priors), points, rtol=0, atol=tol)
    # Per-sample priors (B, P, 4) broadcast the same way.
    full = priors.expand(3, 50, 4)
    torch.testing.assert_close(decode_landmarks(offsets, full), points, rtol=0, atol=tol)


def test_decode_matches_reference_formula() -> None:
    """Same float32 operation order as RetinaFace's decode: centre, size, then x1 = c - s/2, x2 = x1 + s."""
    generator = torch.Generator().manual_seed(1)
    priors, _ = _random_priors_and_boxes(generator, 1, 200, torch.float32)
    loc = torch.randn(200, 4, generator=generator)
    ref = torch.cat((priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:], priors[:, 2:] * torch.exp(loc[:, 2:] * 0.2)), 1)
    ref[:, :2] -= ref[:, 2:] / 2
    ref[:, 2:] += ref[:, :2]
    assert torch.equal(decode_boxes(loc, priors), ref)


def test_custom_variances() -> None:
    offsets = encode_boxes(torch.tensor([0.42, 0.3, 0.62, 0.7]), PRIOR, variances=(0.2, 0.5))
    torch.testing.assert_close(offsets, torch.tensor([0.5, 0.0, 0.0, 0.0]), rtol=0, atol=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"boxes must have shape \(\.\.\., 4\)"):
        encode_boxes(torch.zeros(3, 5), PRIOR)
    with pytest.raises(ValueError, match=r"offsets must have shape \(\.\.\., 10\)"):
        decode_landmarks(torch.zeros(3, 4), PRIOR)
    with pytest.raises(ValueError, match="variances"):
        decode_boxes(torch.zeros(4), PRIOR, variances=(0.1,))
    with pytest.raises(TypeError, match="torch.Tensor"):
        decode_boxes([0.0] * 4, PRIOR)  # type: ignore[arg-type]
