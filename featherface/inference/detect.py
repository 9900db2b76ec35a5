"""The engine behind ``featherface detect``: images, folders and videos in; annotated images / videos and JSON out.

Inputs (:func:`collect_inputs`):

- an image file (suffixes :data:`~featherface.inference.images.IMAGE_SUFFIXES`) -> ``<out>/<stem>.jpg`` and ``<stem>.json``;
- a folder -> every image under it (recursive), keeping the relative structure:
  ``photos/a/b.png`` -> ``<out>/a/b.jpg`` and ``<out>/a/b.json``;
- a video file (:data:`VIDEO_SUFFIXES`) -> ``<out>/<stem>.mp4`` (mp4v; ``.avi`` / MJPG when the mp4 writer cannot
  be opened), same size and frame rate, and ``<out>/<stem>.jsonl``, one JSON object per frame.

Output names never collide: a stem whose output files are already claimed in this run (``a.jpg`` and ``a.png`` in
one folder, two ``x.jpg`` from different folders) or would overwrite an input gets ``_1``, ``_2``, ... (inputs are
processed in a fixed order, so the names are reproducible).

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

import errno
import glob
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from featherface.inference.detector import FaceDetector
from featherface.inference.images import IMAGE_SUFFIXES, ImageError, list_images, read_image, to_bgr
from featherface.inference.postprocess import Detections
from featherface.inference.visualize import draw_detections

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

#: Suffixes read as videos (lower case).
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: Video writers tried in order: (fourcc, container suffix).
VIDEO_CODECS: tuple[tuple[str, str], ...] = (("mp4v", ".mp4"), ("MJPG", ".avi"))
#: Frame rate assumed when a video does not report a usable one (frames per second).
DEFAULT_FPS: float = 25.0
JPEG_QUALITY: int = 95

ProgressCallback = Callable[[int, "int | None", str], None]
InputKind = Literal["image", "video"]

_OUTPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".jpg", ".json"),
    "video": tuple(ext for _, ext in VIDEO_CODECS) + (".jsonl",),
}


class InputError(ValueError):
    """An input path of an unknown type, or no usable input at all."""


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


@dataclass(frozen=True)
class InputItem:
    """One image or video to process.

    Attributes:
        path: the file.
        kind: ``"image"`` or ``"video"``.
        relative: natural output stem relative to the output folder, without suffix (``a/b`` for
            ``photos/a/b.png`` found in the folder ``photos``; ``clip`` for ``clip.mp4``).
        folder: the folder the image was found in, ``None`` for a file named directly. Unreadable images from a
            folder are skipped; named files raise.
    """

    path: Path
    kind: InputKind
    relative: Path
    folder: Path | None = None


def _key(path: Path) -> str:
    """A comparison key for paths: absolute, normalised, case-folded (safe on case-insensitive file systems)."""
    return os.path.normcase(os.path.abspath(path)).casefold()


def _is_strictly_inside(key: str, folder: Path) -> bool:
    """Whether the path with comparison key ``key`` (ending in a separator) lies strictly inside ``folder``."""
    folder_key = _key(folder) + os.sep
    return key.startswith(folder_key) and key != folder_key


#: Why a video found inside a folder is not processed (folders are searched for images only).
VIDEO_IN_FOLDER = "a video inside a folder: folders are searched for images only; name the video itself to process it"


def list_videos(folder: str | os.PathLike[str]) -> list[Path]:
    """Video files under ``folder`` (recursive, by :data:`VIDEO_SUFFIXES`), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def collect_inputs(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    keep_going: bool = False,
    skipped: dict[str, str] | None = None,
) -> list[InputItem]:
    """Expand the user's paths into images and videos, in the order given (folder contents sorted).

    Args:
        paths: image files, video files and folders (searched recursively for images; videos inside folders
            are not picked up: they are logged with a warning and listed in ``skipped``).
        keep_going: skip (log and list in ``skipped``) a path that does not exist or has an unknown type instead
            of raising.
        skipped: filled with ``{path: reason}`` of what was left out.

    Returns:
        One :class:`InputItem` per distinct file (a file reached twice is kept once, at its first position).

    Raises:
        FileNotFoundError: a path does not exist (unless ``keep_going``).
        InputError: a file with a suffix that is neither an image nor a video one (unless ``keep_going``), or no
            image or video at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    skipped = skipped if skipped is not None else {}
    items: list[InputItem] = []
    seen: set[str] = set()

    def add(item: InputItem) -> None:
        key = _key(item.path)
        if key in seen:
            log.info("%s given more than once; processed once", item.path)
            return
        seen.add(key)
        items.append(item)

    def refuse(error: Exception, path: Path) -> None:
        if not keep_going:
            raise error
        log.warning("skipping %s: %s", path, error)
        skipped[str(path)] = str(error)

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            refuse(FileNotFoundError(f"input not found: {path}"), path)
        elif path.is_dir():
            images = list_images(path)
            if not images:
                log.warning("no images (%s) under folder %s", " ".join(IMAGE_SUFFIXES), path)
            for image in images:
                add(InputItem(image, "image", image.relative_to(path).with_suffix(""), path))
            for video in list_videos(path):
                log.warning("not processing %s: %s", video, VIDEO_IN_FOLDER)
                skipped[str(video)] = VIDEO_IN_FOLDER
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                add(InputItem(path, "image", Path(path.stem)))
            elif suffix in VIDEO_SUFFIXES:
                add(InputItem(path, "video", Path(path.stem)))
            else:
                refuse(InputError(
                    f"{path}: unknown input type {path.suffix or '(no suffix)'!r}; images: "
                    f"{' '.join(IMAGE_SUFFIXES)}; videos: {' '.join(VIDEO_SUFFIXES)}"
                ), path)
        else:
            refuse(InputError(f"{path}: not a regular file or a folder"), path)
    if not items:
        left_out = "; ".join(f"{p}: {why}" for p, why in list(skipped.items())[:5])
        raise InputError(f"no images or videos found in {[str(p) for p in paths]}"
                         + (f" (left out: {left_out})" if left_out else ""))
    return items


def plan_outputs(items: Sequence[InputItem], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Unique output stems (``out_dir / relative``, without suffix), one per item, in order.

    A stem whose output files (``.jpg`` ``.json`` for an image; ``.mp4`` ``.avi`` ``.jsonl`` for a video) are
    already claimed by an earlier item, or would overwrite one of the inputs, gets the first free ``_1``, ``_2``, ...
    suffix. An image and a video may share a stem (their files differ). Comparisons ignore case.
    """
    out_dir = Path(out_dir)
    taken = {_key(item.path) for item in items}
    stems: list[Path] = []
    for item in items:
        base = out_dir / item.relative
        candidate, n = base, 0
        while True:
            files = {_key(candidate.parent / (candidate.name + ext)) for ext in _OUTPUT_SUFFIXES[item.kind]}
            if not files & taken:
                break
            n += 1
            candidate = base.parent / f"{base.name}_{n}"
        if n:
            log.info("output name %s taken; %s is written as %s", base.name, item.path, candidate.name)
        taken |= files
        stems.append(candidate)
    return stems


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


@dataclass
class VideoSummary:
    """What was done with one video.

    Attributes:
        path: the input video.
        frames: frames processed.
        faces: detections over all frames.
        fps: the video's frame rate (``DEFAULT_FPS`` when it reports none).
        width, height: frame size in pixels.
        detector_seconds: wall time inside the detector (pre-processing, network, post-processing).
        total_seconds: wall time of the whole video (decode, detect, draw, encode, write).
        video_out, json_out: the files written (``None`` when not asked for).
        expected_frames: the frame count the container announces (``None`` when it gives none).
        warning: why the video may be incomplete (decoding stopped before ``expected_frames``), else ``None``.
    """

    path: str
    frames: int = 0
    faces: int = 0
    fps: float = DEFAULT_FPS
    width: int = 0
    height: int = 0
    detector_seconds: float = 0.0
    total_seconds: float = 0.0
    video_out: str | None = None
    json_out: str | None = None
    expected_frames: int | None = None
    warning: str | None = None

    @property
    def detector_fps(self) -> float:
        """Frames per second of the detector alone."""
        return self.frames / self.detector_seconds if self.detector_seconds > 0 else float("nan")

    @property
    def end_to_end_fps(self) -> float:
        """Frames per second end to end (decode to written file)."""
        return self.frames / self.total_seconds if self.total_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "frames": self.frames,
            "faces": self.faces,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "detector_seconds": round(self.detector_seconds, 4),
            "total_seconds": round(self.total_seconds, 4),
            "detector_fps": _round_or_none(self.detector_fps),
            "end_to_end_fps": _round_or_none(self.end_to_end_fps),
            "video_out": self.video_out,
            "json_out": self.json_out,
            "expected_frames": self.expected_frames,
            "warning": self.warning,
        }


def _round_or_none(value: float, digits: int = 2) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


@dataclass
class DetectRunSummary:
    """What a :func:`run_detect` call did.

    Attributes:
        images: images processed (outputs written).
        image_faces: detections in those images.
        skipped: ``{path: reason}`` of inputs that could not be read.
        videos: one :class:`VideoSummary` per video processed.
        outputs: every file written, in order.
        image_detector_seconds: wall time inside the detector for the images.
        seconds: wall time of the whole run.
        notes: warnings about images (the first image too large to run at its original size).
    """

    images: int = 0
    image_faces: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    videos: list[VideoSummary] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    image_detector_seconds: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Warnings for the user, one line each: :attr:`notes` (an image too large for its original size), then
        videos whose outputs may be incomplete (a truncated file)."""
        return [*self.notes, *(v.warning for v in self.videos if v.warning)]

    @property
    def frames(self) -> int:
        """Video frames processed, all videos together."""
        return sum(v.frames for v in self.videos)

    @property
    def faces(self) -> int:
        """Detections in images and video frames."""
        return self.image_faces + sum(v.faces for v in self.videos)

    @property
    def images_per_second(self) -> float:
        """Images per second of the detector alone."""
        return self.images / self.image_detector_seconds if self.image_detector_seconds > 0 else float("nan")

    @property
    def detector_fps(self) -> float:
        """Video frames per second of the detector alone, all videos together."""
        seconds = sum(v.detector_seconds for v in self.videos)
        return self.frames / seconds if seconds > 0 else float("nan")

    @property
    def end_to_end_fps(self) -> float:
        """Video frames per second end to end, all videos together."""
        seconds = sum(v.total_seconds for v in self.videos)
        return self.frames / seconds if seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "image_faces": self.image_faces,
            "skipped": dict(self.skipped),
            "warnings": self.warnings,
            "videos": [v.to_dict() for v in self.videos],
            "frames": self.frames,
            "faces": self.faces,
            "images_per_second": _round_or_none(self.images_per_second),
            "detector_fps": _round_or_none(self.detector_fps),
            "end_to_end_fps": _round_or_none(self.end_to_end_fps),
            "image_detector_seconds": round(self.image_detector_seconds, 4),
            "seconds": round(self.seconds, 4),
            "outputs": list(self.outputs),
        }


# --- atomic writers ------------------------------------------------------------------------------------------------


def _temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty temporary file in the folder of ``path`` (created with its parents).

    Raises:
        OutputError: the folder or the file cannot be created (naming ``path``).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:
        raise OutputError(path, err) from err
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions once renamed
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError(path, err) from err
        raise


def _leftover_temps(path: Path) -> list[Path]:
    """Temporary files of an earlier run that was killed while writing ``path`` (``.<name>.<8 chars><suffix>``,
    as :func:`_temp_beside` names them)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}(\.tmp|{re.escape(path.suffix)})$")
    if not path.parent.is_dir():
        return []
    return [p for p in path.parent.glob(f".{glob.escape(path.name)}.*") if pattern.match(p.name) and p.is_file()]


def remove_leftover_temps(stem: Path, kind: InputKind) -> list[Path]:
    """Delete the temporary files a killed run left beside the outputs of ``stem``; returns them."""
    removed = []
    for ext in _OUTPUT_SUFFIXES[kind]:
        for tmp in _leftover_temps(stem.parent / (stem.name + ext)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(str(p) for p in removed))
    return removed


def _write_json_atomic(path: Path, obj: Any) -> None:
    _write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _write_jpeg_atomic(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ImageError(f"{path}: JPEG encoding failed for an image of shape {image.shape}")
    _write_bytes_atomic(path, encoded.tobytes())


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
        _write_json_atomic(path, record)
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
    out_key = _key(out_dir) + os.sep
    inside = [  # images under an output folder that lies strictly inside the input folder (earlier outputs)
        it for it in items
        if it.folder is not None and _key(it.path).startswith(out_key) and _is_strictly_inside(out_key, it.folder)
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
