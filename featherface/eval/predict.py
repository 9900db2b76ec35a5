"""Run a detector over a WIDER-style image folder and write the official prediction files.

``images/<event>/<name>.jpg`` -> ``<out>/<event>/<name>.txt``. The folder is built beside its destination and
renamed into place at the end, so an interrupted run never leaves a half-written prediction set. A corrupt or
unreadable image is skipped with a warning (and listed in the summary) and the run goes on, or, with
``skip_unreadable=False`` (what ``featherface evaluate`` does unless ``--skip-unreadable``), stops the run with an
error naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from featherface.eval.prediction_files import write_prediction_file
from featherface.inference.detector import to_wider_rows
from featherface.inference.images import ImageError, list_images
from featherface.utils.io import ProgressCallback, replace_dir

log = logging.getLogger(__name__)


class UnreadableImageError(ValueError):
    """An image that cannot be read while unreadable images are not to be skipped (``skip_unreadable=False``).

    Attributes:
        path: the image; reason: why it cannot be read. The message says that leaving it out changes the AP.
    """

    def __init__(self, path: Path, reason: str, hint: str = "pass skip_unreadable=True to leave it out") -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot read the image {path} ({reason}); leaving it out would change the AP "
                         f"(its faces would not count): fix or remove it, or {hint}")

    def with_hint(self, hint: str) -> UnreadableImageError:
        """The same error with another last piece of advice (e.g. a command-line flag)."""
        return UnreadableImageError(self.path, self.reason, hint)


@dataclass
class PredictSummary:
    """What a prediction run did.

    Attributes:
        images: images with a prediction file written.
        skipped: ``{relative path: reason}`` of images that could not be read.
        detections: detections written in total.
        seconds: wall time of the detector calls (decode, preprocess, network, post-processing).
        seconds_per_image: ``seconds / images``.
    """

    images: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    detections: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images if self.images else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "skipped": self.skipped,
            "detections": self.detections,
            "seconds": round(self.seconds, 3),
            "seconds_per_image": round(self.seconds_per_image, 4) if self.images else None,
        }


def _check_replaceable(out_dir: Path, images_dir: Path) -> None:
    """Refuse an `out_dir` whose replacement would delete something other than an older prediction set.

    Raises:
        ValueError: `out_dir` is `images_dir` or holds it, is a file, or holds anything but ``<event>/*.txt`` files.
    """
    out_abs, images_abs = out_dir.resolve(), images_dir.resolve()
    if out_abs == images_abs or out_abs in images_abs.parents:
        raise ValueError(f"prediction folder {out_dir} would replace the image folder {images_dir}; choose another")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"prediction folder {out_dir} exists and is not a folder")
    for entry in out_dir.iterdir():
        inner = list(entry.iterdir()) if entry.is_dir() and not entry.is_symlink() else [entry]
        foreign = [f for f in inner if not (f.is_file() and f.suffix == ".txt" and entry.is_dir())]
        if foreign:
            raise ValueError(
                f"refusing to replace {out_dir}: it holds {foreign[0]}, which is not a prediction file "
                "(<event>/<name>.txt); choose an empty or new folder"
            )


def predict_folder(
    detector: Callable[[Path], Any],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    skip_unreadable: bool = True,
) -> PredictSummary:
    """Detect faces in every image under `images_dir` and write one prediction file per image into `out_dir`.

    Args:
        detector: a :class:`~featherface.inference.detector.FaceDetector`, a torch-free
            :class:`~featherface.inference.onnx.OnnxFaceDetector` or a peer (:mod:`featherface.inference.peers`): any callable
            from an image path to detections (its settings decide threshold, NMS and input size).
        images_dir: ``<event>/<name>.jpg`` images (any depth works; the file keeps the relative folder).
        out_dir: the prediction folder to (re)create. An existing one is replaced only once the new set is
            complete, and only when it holds nothing but prediction files (``<event>/*.txt``).
        progress: ``progress(done, total, what)``, called after every image (skipped ones included).
        skip_unreadable: skip an image that cannot be read (with a warning; listed in the summary). When False,
            raise :class:`UnreadableImageError` instead (an evaluation should not silently lose images).

    Raises:
        FileNotFoundError: `images_dir` does not exist or holds no images.
        ValueError: `out_dir` is (or holds) `images_dir`, or holds files other than prediction files.
        UnreadableImageError: an image cannot be read and ``skip_unreadable`` is False (nothing is written).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    paths = list_images(images_dir)
    if not paths:
        raise FileNotFoundError(f"no images under {images_dir}")
    _check_replaceable(out_dir, images_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    summary = PredictSummary()
    written: dict[Path, Path] = {}
    try:
        for index, path in enumerate(paths, start=1):
            rel = path.relative_to(images_dir)
            target = rel.with_suffix(".txt")
            if target in written:  # a.jpg and a.png would share a.txt
                reason = f"its prediction file {target} is already written for {written[target]}"
                log.warning("skipping %s: %s", path, reason)
                summary.skipped[str(rel)] = reason
            else:
                start = time.perf_counter()
                try:
                    dets = detector(path)
                except (ImageError, OSError) as err:
                    if not skip_unreadable:
                        raise UnreadableImageError(path, str(err)) from err
                    log.warning("skipping %s: %s", path, err)
                    summary.skipped[str(rel)] = str(err)
                else:
                    summary.seconds += time.perf_counter() - start
                    rows = dets.to_wider_rows() if hasattr(dets, "to_wider_rows") else to_wider_rows(dets)
                    write_prediction_file(staging / target, rows)
                    written[target] = rel
                    summary.images += 1
                    summary.detections += int(len(rows))
            if progress:
                progress(index, len(paths), "predict")
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "predicted %d images (%d skipped), %.3f s/image", summary.images, len(summary.skipped),
        summary.seconds_per_image if summary.images else float("nan"),
    )
    return summary

