"""Prior (anchor) boxes of the RetinaFace / FeatherFace detection heads.

Convention: every prior is ``(cx, cy, w, h)`` **normalised** by the network input size, x and w divided by
the input width ``W``, y and h by the input height ``H``. Nothing is clipped to [0, 1] (the large 512-px
priors of small inputs extend past the image, as in RetinaFace).

Order (it must match the concatenated head outputs): level by level in ``steps`` order (P3, P4, P5), then
row-major over the feature map cells ``(i, j)`` (``i`` the row, ``j`` the column), then the level's min
sizes. Level ``k`` with stride ``s`` has a ``ceil(H / s) x ceil(W / s)`` feature map, so the number of priors
is ``P = sum_k len(min_sizes[k]) * ceil(H / s_k) * ceil(W / s_k)`` (16,800 at 640 x 640 with the defaults).

Reference: Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", CVPR 2020 (the
``PriorBox`` of its public implementation uses these sizes, steps and centres).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from featherface.inference.settings import DEFAULT_MIN_SIZES, DEFAULT_STEPS

__all__ = ["DEFAULT_MIN_SIZES", "DEFAULT_STEPS", "make_priors", "num_priors"]


def _check(height: int, width: int, min_sizes: Sequence[Sequence[float]], steps: Sequence[int]) -> None:
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"make_priors: image size must be positive integers, got height={height}, width={width}")
    if len(min_sizes) != len(steps):
        raise ValueError(
            f"make_priors: min_sizes has {len(min_sizes)} levels but steps has {len(steps)}: {min_sizes!r} vs {steps!r}"
        )
    if len(steps) == 0:
        raise ValueError("make_priors: at least one level is needed (steps is empty)")
    for level, (sizes, step) in enumerate(zip(min_sizes, steps)):
        if step <= 0:
            raise ValueError(f"make_priors: steps[{level}] must be positive, got {step}")
        if len(sizes) == 0 or any(m <= 0 for m in sizes):
            raise ValueError(
                f"make_priors: min_sizes[{level}] must be a non-empty list of positive sizes, got {sizes!r}"
            )


def num_priors(
    height: int,
    width: int,
    min_sizes: Sequence[Sequence[float]] = DEFAULT_MIN_SIZES,
    steps: Sequence[int] = DEFAULT_STEPS,
) -> int:
    """Number of priors ``P`` for an input of ``height x width`` pixels (no tensor is built)."""
    _check(height, width, min_sizes, steps)
    return sum(len(m) * math.ceil(height / s) * math.ceil(width / s) for m, s in zip(min_sizes, steps))


def make_priors(
    height: int,
    width: int,
    min_sizes: Sequence[Sequence[float]] = DEFAULT_MIN_SIZES,
    steps: Sequence[int] = DEFAULT_STEPS,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Priors for an input of ``height x width`` pixels.

    Args:
        height, width: network input size in pixels.
        min_sizes: per level, the prior sides in pixels (square priors).
        steps: per level, the stride in pixels of the feature map.
        device, dtype: of the returned tensor.

    Returns:
        ``(P, 4)`` tensor of ``(cx, cy, w, h)`` normalised by ``W`` (x, w) and ``H`` (y, h), with
        ``cx = (j + 0.5) * s / W``, ``cy = (i + 0.5) * s / H``, ``w = m / W``, ``h = m / H``; unclipped.
        Values are computed in float64 and rounded once to ``dtype``.
    """
    _check(height, width, min_sizes, steps)
    levels = []
    for sizes, step in zip(min_sizes, steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        # Computed on the CPU in float64 (some accelerators lack it), rounded once at the end.
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height  # (rows,)
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width  # (cols,)
        m = torch.tensor([float(v) for v in sizes], dtype=torch.float64)  # (K,)
        k = m.numel()
        level = torch.stack(
            (
                cx.view(1, cols, 1).expand(rows, cols, k),
                cy.view(rows, 1, 1).expand(rows, cols, k),
                (m / width).view(1, 1, k).expand(rows, cols, k),
                (m / height).view(1, 1, k).expand(rows, cols, k),
            ),
            dim=-1,
        )  # (rows, cols, K, 4), row-major then min sizes
        levels.append(level.reshape(-1, 4))
    return torch.cat(levels, dim=0).to(device=device, dtype=dtype)
