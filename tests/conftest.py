"""Shared fixtures: the read-only `../shared` folder (data, weights, golden files).

Tests that need it take the `shared_dir` fixture (or one of its children) and are skipped with a clear
reason when it is absent, so the suite also runs on a fresh clone without it. Set FEATHERFACE_SHARED to
point at another location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def find_shared() -> Path | None:
    """The shared folder: $FEATHERFACE_SHARED, else `../shared` beside the project root."""
    env = os.environ.get("FEATHERFACE_SHARED")
    candidate = Path(env) if env else PROJECT_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = find_shared()
    if path is None:
        pytest.skip("../shared (or $FEATHERFACE_SHARED) is absent: data, weights and golden files unavailable")
    return path


def _child(shared: Path, relative: str) -> Path:
    path = shared / relative
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def widerface_dir(shared_dir: Path) -> Path:
    """`shared/data/widerface` (233 val, 640 train images, official .mat ground truth)."""
    return _child(shared_dir, "data/widerface")


@pytest.fixture(scope="session")
def weights_dir(shared_dir: Path) -> Path:
    """`shared/weights` (ImageNet MobileNetV1-0.25, the two FeatherFace fork checkpoints, peers)."""
    return _child(shared_dir, "weights")


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    """`shared/golden` (ODConv vectors, V1 outputs, WIDER evaluation references)."""
    return _child(shared_dir, "golden")


@pytest.fixture(scope="session")
def v1_weights(weights_dir: Path) -> Path:
    """`shared/weights/featherface_v1_fork.pth`, the fork's V1 checkpoint."""
    return _child(weights_dir.parent, "weights/featherface_v1_fork.pth")
