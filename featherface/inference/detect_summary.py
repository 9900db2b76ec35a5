"""What a ``featherface detect`` run did (:func:`featherface.inference.detect.run_detect`): counts, skipped
inputs, frames per second and files written, per video and for the whole run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_FPS", "VideoSummary", "DetectRunSummary"]

#: Frame rate assumed when a video does not report a usable one (frames per second).
DEFAULT_FPS: float = 25.0


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
