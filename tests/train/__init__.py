"""Tests of the trainer; :class:`SyntheticFaces` is their tiny, deterministic training set, :func:`write_widerface`
a tiny WIDER-layout folder for the train stage (the ``project`` fixture: that folder and a ``params.yaml``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Dataset


class SyntheticFaces(Dataset):
    """``n`` images of ``size`` px with 1-3 bright square "faces" (two dark eyes) on noise.

    Sample ``i`` is a function of ``(seed, i)``; in epoch ``e`` it is mirrored when a draw from
    ``(seed, e, i)`` says so (a stand-in for the epoch-seeded augmentation of the real dataset).
    Images are float32 (3, size, size), like BGR minus the mean; targets as the real dataset's.
    """

    def __init__(self, n: int = 8, size: int = 64, seed: int = 0, flip: bool = True) -> None:
        self.n, self.size, self.seed, self.flip = n, size, seed, flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        s = self.size
        rng = np.random.default_rng([self.seed, index])
        image = rng.normal(0.0, 20.0, (3, s, s)).astype(np.float32)
        boxes, landmarks = [], []
        for _ in range(int(rng.integers(1, 4))):
            side = int(rng.integers(s // 8, s // 3))
            x0, y0 = (int(v) for v in rng.integers(0, s - side, 2))
            image[:, y0:y0 + side, x0:x0 + side] += 100.0
            ey = y0 + side // 3
            for ex in (x0 + side // 4, x0 + 3 * side // 4):
                image[:, ey - 1:ey + 2, ex - 1:ex + 2] -= 150.0
            boxes.append([x0, y0, x0 + side, y0 + side])
            points = [(x0 + side / 4, ey), (x0 + 3 * side / 4, ey), (x0 + side / 2, y0 + side / 2),
                      (x0 + side / 3, y0 + 0.8 * side), (x0 + 2 * side / 3, y0 + 0.8 * side)]
            landmarks.append([c for p in points for c in p])
        box = np.asarray(boxes, np.float32) / s
        lm = np.asarray(landmarks, np.float32) / s
        if self.flip and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            image = image[:, :, ::-1].copy()
            box = np.stack([1 - box[:, 2], box[:, 1], 1 - box[:, 0], box[:, 3]], axis=1)
            pts = lm.reshape(-1, 5, 2)[:, [1, 0, 2, 4, 3]].copy()
            pts[..., 0] = 1 - pts[..., 0]
            lm = pts.reshape(-1, 10)
        return torch.from_numpy(image), {
            "boxes": torch.from_numpy(np.ascontiguousarray(box, dtype=np.float32)),
            "landmarks": torch.from_numpy(np.ascontiguousarray(lm, dtype=np.float32)),
            "has_landmarks": torch.ones(len(boxes), dtype=torch.bool),
        }


def tiny_config(**overrides):
    """A TrainConfig for a tiny CPU run: featherface_none at width 16, one BiFPN cell, 64 px, no workers."""
    from featherface.train.config import TrainConfig

    # threads=1: small tensors gain nothing from two threads, and tests stay fast on a shared 2-core machine
    base = dict(model="featherface_none", width=16, bifpn_repeats=1, init="none", image_size=64, epochs=2,
                batch_size=4, num_workers=0, lr=0.01, warmup_epochs=0.0, optimizer="sgd", log_every=0,
                threads=1, probe_images=4, amp=False)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def restore_threads():
    """Put torch's intra-op thread count back after a test (TrainConfig.threads sets it process-wide)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


#: A tiny ``train:`` section for the train stage (2 epochs of 2 steps on 4 images of 64 px).
TRAIN_PARAMS = {"model": "featherface_none", "width": 16, "bifpn_repeats": 1, "init": "none", "image_size": 64,
                "epochs": 2, "batch_size": 2, "num_workers": 0, "max_train_images": 4, "threads": 1,
                "log_every": 1, "warmup_epochs": 0.0}


def write_widerface(root: Path, n: int = 5) -> None:
    """<root>/widerface/train/{images/ev/i.png, label.txt}: grey rectangles on noise, one face line each."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        x, y, w, h = 20 + 10 * i, 30, 40, 50
        image[y:y + h, x:x + w] = 200
        path = root / "widerface" / "train" / "images" / "ev" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
        points = " ".join(f"{x + 10 + 5 * k}.0 {y + 20}.0 1.0" for k in range(5))
        lines += [f"# ev/{i}.png", f"{x} {y} {w} {h} {points} 0.5"]
    (root / "widerface" / "train" / "label.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """``tmp_path`` with ``data/widerface/train`` (5 images) and a ``params.yaml`` of :data:`TRAIN_PARAMS`."""
    write_widerface(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"root": "data"}, "train": TRAIN_PARAMS}))
    return tmp_path
