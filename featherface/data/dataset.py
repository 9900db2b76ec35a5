"""WIDER FACE training dataset, collate function and data loader.

Reproducibility: the augmentation of sample ``i`` in epoch ``e`` draws from
``numpy.random.default_rng(SeedSequence([seed, e, i]))``, so it does not depend on which worker loads
it, on the number of workers, or on what was loaded before: a run resumed at epoch ``e`` sees the same
samples as an uninterrupted one. The shuffle order of epoch ``e`` is a function of ``(seed, e)`` only
(:class:`EpochShuffleSampler`, or ``DistributedSampler`` with its ``set_epoch`` for DDP). Call
:func:`set_loader_epoch` (or ``dataset.set_epoch`` and ``sampler.set_epoch``) before each epoch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from featherface.data.labels import ImageLabels, drop_degenerate_boxes, read_label_file
from featherface.data.transforms import Target, TrainTransform, target_from_labels

__all__ = [
    "ImageReadError",
    "read_image",
    "WiderTrainDataset",
    "collate",
    "EpochShuffleSampler",
    "make_loader",
    "set_loader_epoch",
]

logger = logging.getLogger(__name__)

#: A transform: (HxWx3 uint8 BGR image, pixel target, rng) -> ((3, S, S) float32, normalised target).
Transform = Callable[[np.ndarray, Target, np.random.Generator], tuple[np.ndarray, Target]]
#: One sample: (3, S, S) float32 image and {"boxes": (N, 4), "landmarks": (N, 10), "has_landmarks": (N,)}.
Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


class ImageReadError(OSError):
    """An image file that cannot be decoded; the message names the path."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 BGR (grey images are expanded to 3 channels).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file exists but OpenCV cannot decode it (empty, truncated header, not an image).
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except OSError as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode image {path} ({data.size} bytes): corrupt or not an image")
    return image


def _sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class WiderTrainDataset(Dataset):
    """WIDER FACE train images with their RetinaFace labels, augmented by `transform`.

    Args:
        root: the ``widerface/train`` folder (images under ``root / "images"``).
        label_file: the RetinaFace ``label.txt``; default ``root / "label.txt"``.
        transform: default ``TrainTransform()`` (640 px).
        min_face_px: faces whose box is smaller than this (``min(w, h) < min_face_px``, pixels of the
            original image) are removed when the labels are loaded (0 keeps all, RetinaFace's choice).
        seed: base seed of the per-sample augmentation RNG.

    Faces with ``w <= 0`` or ``h <= 0`` are removed at load (their number is logged). Images left
    without faces are kept: they are all-negative samples, and their targets have N = 0.

    ``dataset[i]`` is ``(image (3, S, S) float32, {"boxes": (N, 4) float32 x1 y1 x2 y2 in [0, 1],
    "landmarks": (N, 10) float32 (x0, y0, ..., x4, y4) in [0, 1], -1 for faces without landmarks,
    "has_landmarks": (N,) bool})``.
    """

    def __init__(
        self,
        root: str | Path,
        label_file: str | Path | None = None,
        transform: Transform | None = None,
        min_face_px: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.label_file = Path(label_file) if label_file is not None else self.root / "label.txt"
        self.transform: Transform = transform if transform is not None else TrainTransform()
        if min_face_px < 0:
            raise ValueError(f"WiderTrainDataset: min_face_px must be >= 0, got {min_face_px}")
        if seed < 0:
            raise ValueError(f"WiderTrainDataset: seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.epoch = 0
        images, dropped = drop_degenerate_boxes(read_label_file(self.label_file))
        if dropped:
            logger.info("%s: dropped %d faces with a zero or negative width or height", self.label_file, dropped)
        if min_face_px > 0:
            small = 0
            kept: list[ImageLabels] = []
            for item in images:
                big = np.minimum(item.boxes[:, 2], item.boxes[:, 3]) >= min_face_px
                small += int((~big).sum())
                kept.append(item if bool(big.all()) else item.select(big))
            images = kept
            logger.info("%s: dropped %d faces smaller than %g px", self.label_file, small, min_face_px)
        self.items: list[ImageLabels] = images
        faces = sum(item.num_faces for item in images)
        logger.info("%s: %d images, %d faces", self.label_file, len(images), faces)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of `epoch` (call before creating the epoch's iterator)."""
        if epoch < 0:
            raise ValueError(f"set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def image_path(self, index: int) -> Path:
        """The file of sample `index`."""
        return self.root / "images" / self.items[index].path

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The augmentation generator of sample `index` in `epoch` (default: the current epoch)."""
        return _sample_rng(self.seed, self.epoch if epoch is None else epoch, index)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self.items):
            raise IndexError(f"WiderTrainDataset: index {index} out of range [0, {len(self.items)})")
        path = self.image_path(index)
        image = read_image(path)
        target = target_from_labels(self.items[index])
        try:
            array, out = self.transform(image, target, self.rng(index))
        except Exception as err:  # name the sample; keep the original error as the cause
            raise RuntimeError(f"transform failed on {path} (sample {index}, epoch {self.epoch}): {err}") from err
        return torch.from_numpy(array), {
            "boxes": torch.from_numpy(out.boxes),
            "landmarks": torch.from_numpy(out.landmarks.reshape(-1, 10)),
            "has_landmarks": torch.from_numpy(out.has_landmarks),
        }


def collate(batch: Sequence[Sample]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack the images to (B, 3, S, S); the targets (N differs per image) stay a list of B dicts."""
    if not batch:
        raise ValueError("collate: empty batch")
    shapes = {tuple(image.shape) for image, _ in batch}
    if len(shapes) != 1:
        raise ValueError(f"collate: images of different shapes in one batch: {sorted(shapes)}")
    images = [image for image, _ in batch]
    out = None
    if torch.utils.data.get_worker_info() is not None:
        # In a loader worker, stack straight into shared memory (as torch's default_collate does), which
        # saves the copy the worker would otherwise make to send the batch to the main process.
        numel = sum(image.numel() for image in images)
        storage = images[0].untyped_storage()._new_shared(numel * images[0].element_size(), device="cpu")
        out = images[0].new(storage).resize_(len(images), *images[0].shape)
    return torch.stack(images, out=out), [target for _, target in batch]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that is a function of ``(seed, epoch)`` only.

    Unlike a ``RandomSampler`` with a generator, the order does not depend on how many epochs were
    iterated before, so a resumed run shuffles like an uninterrupted one. ``shuffle=False`` gives
    ``0..n-1``.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        if n < 0:
            raise ValueError(f"EpochShuffleSampler: n must be >= 0, got {n}")
        self.n = n
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        generator = torch.Generator()
        generator.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0] >> 1))
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(
    dataset: WiderTrainDataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = True,
    distributed: bool = False,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader whose order and augmentation are functions of ``(seed, epoch)``.

    Args:
        dataset: the samples (its ``set_epoch`` is called with `epoch`).
        batch_size: images per batch (per process when `distributed`).
        shuffle: shuffle the order each epoch.
        num_workers: loader processes; default ``min(2, os.cpu_count())``. Workers are not persistent,
            so each epoch's workers see the dataset's current epoch. (Do not call ``cv2.setNumThreads``
            inside forked workers after the parent used OpenCV: it deadlocks on the inherited thread pool.)
        seed: shuffle seed (the augmentation seed is the dataset's own).
        epoch: the first epoch; later ones via :func:`set_loader_epoch`.
        drop_last: drop the last incomplete batch.
        distributed: use a ``DistributedSampler`` (needs an initialised process group); its
            ``set_epoch`` is called by :func:`set_loader_epoch`.
        pin_memory: default: True only when CUDA is available.

    Returns:
        A loader yielding ``collate`` batches: ((B, 3, S, S) float32, list of B target dicts).
    """
    if batch_size < 1:
        raise ValueError(f"make_loader: batch_size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    if num_workers < 0:
        raise ValueError(f"make_loader: num_workers must be >= 0, got {num_workers}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    sampler: Sampler[int]
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = EpochShuffleSampler(len(dataset), seed=seed, shuffle=shuffle)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=False,
        # Worker base seeds come from this generator, not from torch's global one, so creating
        # iterators does not shift the model's random stream (augmentation does not use these seeds).
        generator=torch.Generator().manual_seed(int(seed)),
    )
    set_loader_epoch(loader, epoch)
    return loader


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Point the loader's sampler and dataset at `epoch` (call before iterating it)."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
