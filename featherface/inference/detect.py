"""The engine behind ``featherface detect``: images, folders and videos in; annotated images / videos and JSON out.

Inputs and output names (:mod:`featherface.inference.detect_inputs`): an image file -> ``<out>/<stem>.jpg`` and
``<stem>.json``; a folder -> every image under it (recursive), keeping the relative structure; a video file
(:data:`VIDEO_SUFFIXES`) -> ``<out>/<stem>.mp4`` (mp4v; ``.avi`` / MJPG when the mp4 writer cannot be opened), same
size and frame rate, and ``<out>/<stem>.jsonl``, one JSON object per frame. Output names never collide (``_1``,
``_2``, ... suffixes, reproducible). The run's counts and speeds: :mod:`featherface.inference.detect_summary`.

JSON layout (pixels of the original image, boxes not clipped to it)::

    {"image": "photos/a/b.png", "width": 640, "height": 480,
     "faces": [{"box": [x1, y1, x2, y2], "score": 0.98, "landmarks": [[x, y] * 5]}]}

    {"frame": 0, "time": 0.0, "faces": [...]}            # one line per video frame, time in seconds

Landmarks are in the order left eye, right eye, nose, left mouth corner, right mouth corner.

Errors: in a folder, an unreadable (missing, empty, corrupt) image is skipped with a warning and listed in the
summary; the run goes on. Videos inside a folder are not processed: each is named in a warning and in the summary's
``skipped``. A path that does not exist, or an image or video named directly that cannot be read, raises (unless
``keep_going``: then it is skipped and listed). A video whose decoding stops before the frame count its container
announces (a truncated file) gets a warning in the log and in the summary's ``warnings``. An output that cannot be
written raises :class:`OutputError` naming the file.

Every file is written to a temporary name in its destination folder and renamed into place, so an interrupted run
leaves no half-written output under a final name; the temporary files a killed run leaves are removed when a later
run writes the same outputs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from featherface.inference.detect_inputs import (
    VIDEO_CODECS,
    VIDEO_SUFFIXES,
    InputError,
    InputItem,
    collect_inputs,
    is_strictly_inside,
    path_key,
    plan_outputs,
    remove_leftover_temps,
)
from featherface.inference.detect_summary import DEFAULT_FPS, DetectRunSummary, VideoSummary
from featherface.inference.detector import FaceDetector
from featherface.inference.images import ImageError, read_image, to_bgr
from featherface.inference.postprocess import Detections
from featherface.inference.visualize import draw_detections
from featherface.utils.io import ProgressCallback, temp_beside, write_bytes_atomic, write_json_atomic

__all__ = [
    "VIDEO_SUFFIXES",
    "VIDEO_CODECS",
    "InputError",
    "VideoError",
    "OutputError",
    "InputItem",
    "VideoSummary",
    "DetectRunSummary",
    "collect_inputs",
    "plan_outputs",
    "faces_to_json",
    "run_detect",
]

log = logging.getLogger(__name__)

JPEG_QUALITY: int = 95


class VideoError(ValueError):
    """A video that cannot be opened or decoded, or an output video that cannot be written."""


class OutputError(OSError):
    """An output file that cannot be written (full disk, permissions): the message names the file and what to do."""

    def __init__(self, path: Path, error: BaseException) -> None:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        super().__init__(getattr(error, "errno", None) or 0,
                         f"cannot write {path}: {reason}. Check the free space and permissions of {path.parent}, "
                         "or choose another output folder (-o)")
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def faces_to_json(dets: Detections) -> list[dict[str, Any]]:
    """Detections as JSON-ready faces: ``{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] * 5]}``
    (pixels rounded to 0.01, scores to 1e-5), by decreasing score."""
    boxes = dets.boxes.detach().cpu().double().numpy()
    scores = dets.scores.detach().cpu().double().numpy()
    points = dets.landmarks.detach().cpu().double().numpy()
    return [
        {
            "box": [round(float(v), 2) for v in boxes[i]],
            "score": round(float(scores[i]), 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in points[i]],
        }
        for i in range(boxes.shape[0])
    ]


# --- writers: every file goes to a temporary name beside its destination (featherface.utils.io) -------------------


@contextlib.contextmanager
def _naming_failures(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` (full disk, permissions) raised while writing ``path`` into an :class:`OutputError`
    naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(path, err) from err


def _write_jpeg_atomic(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError(f"{path}: JPEG encoding failed for an image of shape {image.shape}")
    with _naming_failures(path):
        write_bytes_atomic(path, encoded.tobytes())


def _temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """:func:`featherface.utils.io.temp_beside`, raising :class:`OutputError` naming ``path``."""
    with _naming_failures(path):
        return temp_beside(path, suffix)


def _open_writer(stem: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path, Path]:
    """The first :data:`VIDEO_CODECS` writer that opens, on a temporary file beside its final name.

    Returns:
        ``(writer, temporary path, final path)``.
    """
    tried = []
    for fourcc, ext in VIDEO_CODECS:
        final = stem.parent / (stem.name + ext)
        tmp = _temp_beside(final, suffix=ext)  # OpenCV picks the container from the suffix
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, tmp, final
        writer.release()
        tmp.unlink(missing_ok=True)
        tried.append(f"{fourcc}{ext}")
        log.warning("cannot open a %s%s video writer for %s; trying the next codec", fourcc, ext, final)
    raise VideoError(f"{stem}: cannot open a video writer with any of {tried} (size {size}, {fps} fps)")


# --- the runner ----------------------------------------------------------------------------------------------------


def _detect_image(
    detector: FaceDetector, item: InputItem, stem: Path, summary: DetectRunSummary, *,
    save_images: bool, save_json: bool, keep_going: bool,
) -> None:
    try:
        image = read_image(item.path)
    except (ImageError, OSError) as err:
        if item.folder is None and not keep_going:
            raise
        log.warning("skipping %s: %s", item.path, err)
        summary.skipped[str(item.path)] = str(err)
        return
    large = detector.large_input_warning(image.shape[0], image.shape[1], str(item.path))
    if large:
        summary.notes.append(large)
    start = time.perf_counter()
    dets = detector(image)
    summary.image_detector_seconds += time.perf_counter() - start
    if save_images:
        path = stem.parent / (stem.name + ".jpg")
        _write_jpeg_atomic(path, draw_detections(image, dets))
        summary.outputs.append(str(path))
    if save_json:
        path = stem.parent / (stem.name + ".json")
        height, width = image.shape[:2]
        record = {"image": str(item.path), "width": width, "height": height, "faces": faces_to_json(dets)}
        with _naming_failures(path):
            write_json_atomic(path, record)
        summary.outputs.append(str(path))
    summary.images += 1
    summary.image_faces += len(dets)


def _video_fps(capture: cv2.VideoCapture, path: Path) -> float:
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        log.warning("%s reports no usable frame rate (%s); assuming %s fps", path, fps, DEFAULT_FPS)
        return DEFAULT_FPS
    return fps


def _detect_video(
    detector: FaceDetector, item: InputItem, stem: Path, *,
    save_images: bool, save_json: bool, progress: ProgressCallback | None, max_frames: int | None,
) -> VideoSummary:
    start = time.perf_counter()
    path = item.path
    capture = cv2.VideoCapture(str(path))
    temps: list[Path] = []
    writer: cv2.VideoWriter | None = None
    lines = None
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: cannot open the video (not a video, or an unsupported codec or container)")
        fps = _video_fps(capture, path)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        total: int | None = count if count > 0 else None
        if max_frames is not None:
            total = min(total, max_frames) if total is not None else max_frames
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoError(f"{path}: the video opened but no frame could be decoded")
        height, width = frame.shape[:2]
        result = VideoSummary(str(path), fps=fps, width=width, height=height, expected_frames=count or None)
        if save_images:
            writer, tmp_video, final_video = _open_writer(stem, fps, (width, height))
            temps.append(tmp_video)
        if save_json:
            final_json = stem.parent / (stem.name + ".jsonl")
            tmp_json = _temp_beside(final_json)
            temps.append(tmp_json)
            lines = tmp_json.open("w", encoding="utf-8")
        what = f"video {path.name}"
        while ok:
            index = result.frames
            frame = to_bgr(frame, "bgr", where=f"{path} frame {index}")
            tick = time.perf_counter()
            dets = detector(frame)
            result.detector_seconds += time.perf_counter() - tick
            if writer is not None:
                drawn = draw_detections(frame, dets)
                if drawn.shape[:2] != (height, width):
                    log.warning("%s frame %d is %dx%d, not %dx%d; resized in the output video",
                                path, index, drawn.shape[1], drawn.shape[0], width, height)
                    drawn = cv2.resize(drawn, (width, height), interpolation=cv2.INTER_AREA)
                writer.write(drawn)
            if lines is not None:
                record = {"frame": index, "time": round(index / fps, 6), "faces": faces_to_json(dets)}
                try:
                    lines.write(json.dumps(record) + "\n")
                except OSError as err:
                    raise OutputError(final_json, err) from err
            result.frames += 1
            result.faces += len(dets)
            if progress is not None:
                progress(result.frames, total, what)
            if max_frames is not None and result.frames >= max_frames:
                break
            ok, frame = capture.read()
        result.warning = _incomplete_video_warning(path, result.frames, count, max_frames)
        if writer is not None:
            writer.release()
            writer = None
            if tmp_video.stat().st_size == 0:
                raise OutputError(final_video, OSError("the video writer wrote nothing (disk full?)"))
            os.replace(tmp_video, final_video)
            result.video_out = str(final_video)
        if lines is not None:
            try:
                lines.close()
            except OSError as err:
                raise OutputError(final_json, err) from err
            finally:
                lines = None
            os.replace(tmp_json, final_json)
            result.json_out = str(final_json)
        temps.clear()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if lines is not None:
            lines.close()
        for tmp in temps:  # only left on failure
            tmp.unlink(missing_ok=True)
    result.total_seconds = time.perf_counter() - start
    log.info(
        "%s: %d frames, %d faces, detector %.1f fps, end to end %.1f fps",
        path, result.frames, result.faces, result.detector_fps, result.end_to_end_fps,
    )
    if result.warning:
        log.warning("%s", result.warning)
    return result


def _incomplete_video_warning(path: Path, frames: int, announced: int, max_frames: int | None) -> str | None:
    """A warning when decoding stopped before the frame count the container announces (a truncated or damaged
    file), unless ``max_frames`` stopped it; ``None`` otherwise."""
    if announced <= 0 or frames >= announced or (max_frames is not None and frames >= max_frames):
        return None
    return (f"{path}: decoding stopped after {frames} of the {announced} frames the file announces (truncated or "
            f"damaged?); the outputs cover those {frames} frames only")


def run_detect(
    detector: FaceDetector,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    save_images: bool = True,
    save_json: bool = True,
    progress: ProgressCallback | None = None,
    max_frames: int | None = None,
    keep_going: bool = False,
) -> DetectRunSummary:
    """Detect faces in images, folders of images and videos; write annotated copies and JSON.

    Args:
        detector: the detector (its settings decide threshold, NMS and input size).
        inputs: image files, folders (recursive) and video files (see :func:`collect_inputs`).
        out_dir: output folder (created); layout and names in the module docstring. Images found inside
            ``out_dir``, when ``out_dir`` lies strictly inside an input folder, are not taken as inputs (they would
            be the outputs of an earlier run).
        save_images: write annotated images (``.jpg``) and videos (``.mp4`` / ``.avi``).
        save_json: write ``.json`` per image and ``.jsonl`` per video.
        progress: ``progress(done, total, what)``: ``what`` is ``"images"`` (total: all images of the run) or
            ``"video <name>"`` (total: the frame count the container reports, capped by ``max_frames``; ``None``
            when unknown).
        max_frames: process at most this many frames per video (``None``: all).
        keep_going: also skip (instead of raising on) missing paths, and unreadable images and videos named
            directly; they are listed in the summary's ``skipped``.

    Returns:
        A :class:`DetectRunSummary` (counts, skipped inputs, frames per second, files written).

    Raises:
        FileNotFoundError / InputError: see :func:`collect_inputs`.
        ImageError: an image named directly cannot be read (unless ``keep_going``).
        VideoError: a video cannot be opened or decoded, or no video writer opens (unless ``keep_going``).
        OutputError: an output file cannot be written (naming it).
    """
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    summary = DetectRunSummary()
    items = collect_inputs(inputs, keep_going=keep_going, skipped=summary.skipped)
    out_key = path_key(out_dir) + os.sep
    inside = [  # images under an output folder that lies strictly inside the input folder (earlier outputs)
        it for it in items
        if it.folder is not None and path_key(it.path).startswith(out_key) and is_strictly_inside(out_key, it.folder)
    ]
    if inside:
        log.info("ignoring %d images found inside the output folder %s", len(inside), out_dir)
        items = [it for it in items if it not in inside]
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(out_dir, err) from err
    stems = plan_outputs(items, out_dir)
    n_images = sum(1 for it in items if it.kind == "image")
    done_images = 0
    for item, stem in zip(items, stems):
        remove_leftover_temps(stem, item.kind)
        if item.kind == "image":
            _detect_image(detector, item, stem, summary, save_images=save_images, save_json=save_json,
                          keep_going=keep_going)
            done_images += 1
            if progress is not None:
                progress(done_images, n_images, "images")
            continue
        try:
            video = _detect_video(detector, item, stem, save_images=save_images, save_json=save_json,
                                  progress=progress, max_frames=max_frames)
        except VideoError as err:
            if not keep_going:
                raise
            log.warning("skipping %s: %s", item.path, err)
            summary.skipped[str(item.path)] = str(err)
            continue
        summary.videos.append(video)
        summary.outputs.extend(p for p in (video.video_out, video.json_out) if p is not None)
    summary.seconds = time.perf_counter() - start
    log.info(
        "detect: %d images (%d skipped), %d video frames, %d faces; outputs in %s",
        summary.images, len(summary.skipped), summary.frames, summary.faces, out_dir,
    )
    return summary
