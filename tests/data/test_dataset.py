"""The training dataset, collate and loader: a hand-written label file with images drawn by cv2, per-sample
seeding, errors naming the file, and the real train images."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from featherface.data.dataset import (
    EpochShuffleSampler,
    ImageReadError,
    WiderTrainDataset,
    collate,
    make_loader,
    read_image,
    set_loader_epoch,
)
from featherface.data.transforms import TrainTransform

LABELS = """\
# ev/a.png
10 12 30 40 15.5 20.5 1.0 30.5 20.5 1.0 22.5 30.5 1.0 17.5 40.5 1.0 28.5 40.5 1.0 0.5
50 60 20 20 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
5 5 0 9 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1
# ev/b.png
4 4 3 3
20 30 60 50
# ev/grey.png
8 8 40 40
"""

SIZE = 64


def write_images(root: Path, names: dict[str, tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    for name, (h, w) in names.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("ev/grey"):
            image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        else:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert cv2.imwrite(str(path), image)


@pytest.fixture()
def tiny_root(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    write_images(root, {"ev/a.png": (90, 120), "ev/b.png": (100, 100), "ev/grey.png": (60, 80)})
    (root / "label.txt").write_text(LABELS)
    return root


def tiny_dataset(root: Path, **kwargs) -> WiderTrainDataset:
    return WiderTrainDataset(root, transform=TrainTransform(image_size=SIZE), **kwargs)


def test_samples_shapes_dtypes_and_ranges(tiny_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="featherface.data.dataset"):
        ds = tiny_dataset(tiny_root)
    assert "dropped 1 faces with a zero or negative width or height" in caplog.text
    assert len(ds) == 3 and [item.num_faces for item in ds.items] == [2, 2, 1]
    assert ds.image_path(0) == tiny_root / "images" / "ev" / "a.png"
    for index in range(len(ds)):
        image, target = ds[index]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert image.min() >= -123 and image.max() <= 151
        n = target["boxes"].shape[0]
        assert 1 <= n <= ds.items[index].num_faces
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert target["landmarks"].dtype == torch.float32 and target["landmarks"].shape == (n, 10)
        assert target["has_landmarks"].dtype == torch.bool and target["has_landmarks"].shape == (n,)
        boxes = target["boxes"]
        assert torch.all((boxes >= 0) & (boxes <= 1)) and torch.all(boxes[:, 2:] > boxes[:, :2])
        lms, has = target["landmarks"], target["has_landmarks"]
        assert torch.all((lms[has] >= 0) & (lms[has] <= 1)) and torch.all(lms[~has] == -1)
    # boxes-only images never get landmarks
    for seed_epoch in range(3):
        ds.set_epoch(seed_epoch)
        assert not ds[1][1]["has_landmarks"].any() and not ds[2][1]["has_landmarks"].any()


def test_landmarked_face_keeps_its_flag(tiny_root: Path) -> None:
    # Full-height crops of a.png (90x120) keep the 20x20 face (no landmarks) whole, so it stays square;
    # the 30x40 face (landmarks) is kept whole or clipped in x, so it stays at least 4:3 tall.
    transform = TrainTransform(image_size=SIZE, scales=(1.0,))
    ds = WiderTrainDataset(tiny_root, transform=transform)
    flags = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        _, target = ds[0]
        boxes, has, lms = target["boxes"], target["has_landmarks"], target["landmarks"]
        for box, flag, lm in zip(boxes, has, lms):
            ratio = float((box[3] - box[1]) / (box[2] - box[0]))
            if flag:
                assert ratio >= 4 / 3 - 1e-4 and torch.all((lm >= 0) & (lm <= 1))
            else:
                assert ratio == pytest.approx(1.0, abs=1e-4) and torch.all(lm == -1)
            flags.append(bool(flag))
    assert set(flags) == {True, False}


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_root: Path) -> None:
    ds = tiny_dataset(tiny_root, seed=3)
    other = tiny_dataset(tiny_root, seed=3)
    a0, t0 = ds[0]
    b0, u0 = other[0]
    assert torch.equal(a0, b0) and all(torch.equal(t0[k], u0[k]) for k in t0)
    # independent of what was loaded before
    other[2], other[1]
    c0, _ = other[0]
    assert torch.equal(a0, c0)
    ds.set_epoch(1)
    d0, _ = ds[0]
    assert not torch.equal(a0, d0)
    ds.set_epoch(0)
    assert torch.equal(ds[0][0], a0)
    assert not torch.equal(tiny_dataset(tiny_root, seed=4)[0][0], a0)
    # the generator is SeedSequence([seed, epoch, index])
    expected = np.random.default_rng(np.random.SeedSequence([3, 5, 2])).random(4)
    np.testing.assert_array_equal(ds.rng(2, epoch=5).random(4), expected)
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]


def test_min_face_px_drops_small_faces(tiny_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="featherface.data.dataset"):
        ds = tiny_dataset(tiny_root, min_face_px=21)
    assert "dropped 2 faces smaller than 21 px" in caplog.text  # the 20x20 and the 3x3 faces
    assert [item.num_faces for item in ds.items] == [1, 1, 1]
    np.testing.assert_array_equal(ds.items[1].boxes, [[20, 30, 60, 50]])


def test_corrupt_and_missing_images_name_the_file(tiny_root: Path) -> None:
    ds = tiny_dataset(tiny_root)
    bad = tiny_root / "images" / "ev" / "b.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match=r"ev/b\.png"):
        ds[1]
    bad.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"ev/b\.png.*0 bytes"):
        ds[1]
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=r"ev/b\.png"):
        ds[1]
    with pytest.raises(FileNotFoundError, match="label file"):
        WiderTrainDataset(tiny_root, label_file=tiny_root / "missing.txt")


def test_read_image_expands_grey(tiny_root: Path) -> None:
    image = read_image(tiny_root / "images" / "ev" / "grey.png")
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 2])


def test_collate_stacks_images_and_lists_targets(tiny_root: Path) -> None:
    ds = tiny_dataset(tiny_root)
    batch = [ds[i] for i in range(3)]
    images, targets = collate(batch)
    assert images.shape == (3, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert len(targets) == 3 and all(targets[i] is batch[i][1] for i in range(3))
    assert torch.equal(images[1], batch[1][0])
    with pytest.raises(ValueError, match="different shapes"):
        collate([batch[0], (torch.zeros(3, 32, 32), batch[1][1])])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_epoch_shuffle_sampler_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochShuffleSampler(50, seed=7), EpochShuffleSampler(50, seed=7)
    first = list(a)
    assert sorted(first) == list(range(50)) and len(a) == 50
    list(b), list(b)  # iterating more does not change an epoch's order
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(EpochShuffleSampler(50, seed=8)) != first
    assert list(EpochShuffleSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_loader_batches_do_not_depend_on_worker_count(tiny_root: Path) -> None:
    ds = tiny_dataset(tiny_root)
    runs = []
    for workers in (0, 2):
        loader = make_loader(ds, batch_size=2, num_workers=workers, seed=1, epoch=3, drop_last=False)
        assert not loader.pin_memory or torch.cuda.is_available()
        assert ds.epoch == 3 and loader.sampler.epoch == 3
        runs.append(list(loader))
    assert [len(run) for run in runs] == [2, 2]
    for (x0, t0), (x1, t1) in zip(*runs):
        assert torch.equal(x0, x1)
        assert all(torch.equal(a[k], b[k]) for a, b in zip(t0, t1) for k in a)
    loader = make_loader(ds, batch_size=2, num_workers=0, seed=1, epoch=3, drop_last=True)
    assert len(list(loader)) == 1
    set_loader_epoch(loader, 4)
    assert ds.epoch == 4 and loader.sampler.epoch == 4
    epoch4 = next(iter(loader))[0]
    assert not torch.equal(epoch4, runs[0][0][0])
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, batch_size=0)


def test_real_train_images(widerface_dir: Path) -> None:
    ds = WiderTrainDataset(widerface_dir / "train", seed=0)
    assert len(ds) == 640 and sum(item.num_faces for item in ds.items) == 20517
    images, targets = collate([ds[i] for i in (0, 100, 639)])
    assert images.shape == (3, 3, 640, 640) and images.dtype == torch.float32
    for target in targets:
        assert target["boxes"].shape[0] >= 1
        assert torch.all((target["boxes"] >= 0) & (target["boxes"] <= 1))
        assert target["landmarks"].shape == (target["boxes"].shape[0], 10)
