"""Benchmark: frames per second of the ``featherface detect`` video path, PyTorch and ONNX Runtime, 1 and 2 threads.

A short test video is built at run time in a temporary folder (never in the repository): one WIDER FACE val image
(``--image``, default the first image of ``11--Meeting``, else the first val image) panned and zoomed over the frames
so that faces move and change size; or, with ``--synthetic``, a procedurally drawn frame (cartoon faces on a
gradient) so the script also runs on a fresh clone without the shared folder. Written with OpenCV's ``mp4v``
writer (``MJPG``/``.avi`` when that cannot be opened), ``--size`` W H, ``--frames`` frames at ``--fps``.

Each detector runs :func:`featherface.inference.detect.run_detect`, the engine of ``featherface detect``, on that video:

* ``pytorch``: :class:`featherface.inference.detector.FaceDetector` on the CPU, ``torch.set_num_threads(threads)``;
* ``onnxruntime``: the same model exported with :func:`featherface.deploy.export.export_onnx` (dynamic H, W) and run by
  the torch-free :class:`featherface.inference.onnx.OnnxFaceDetector` (``threads`` intra-op threads). ``run_detect`` only
  calls the detector and its drawing reads torch tensors, so the runtime's numpy detections are wrapped as
  :class:`featherface.inference.postprocess.Detections` (``torch.from_numpy``, no copy) to go through the same path.

OpenCV (decode, resize, draw, encode) gets ``cv2.setNumThreads(threads)`` for each row.

Per backend and thread count: frames, detector fps (pre-processing + network + post-processing, ``VideoSummary.
detector_fps``), end-to-end fps (``VideoSummary.end_to_end_fps``: decode + detect, plus draw + encode of the
annotated video with ``--write-video``; no JSON lines are written in either case) and mean faces per frame. Each
figure is the median over ``--runs`` passes over the whole video, the rows timed interleaved (round-robin, one pass
each per round, after ``--warmup`` untimed frames) so drift in the machine's load hits all rows alike. The output
records the CPU, core count, library versions and the load average at start and end: compare rows of one run.

Detector settings are those of ``featherface detect``: score threshold ``--threshold`` (0.5), NMS IoU 0.4, original
frame size.

Usage::

    python benchmarks/bench_video.py --weights featherface_v1=../shared/weights/featherface_v1_fork.pth
    python benchmarks/bench_video.py --weights featherface_v1=v1.pth --write-video --json results/bench_video.json
    python benchmarks/bench_video.py --synthetic              # no shared folder needed
    python benchmarks/bench_video.py --smoke --synthetic      # a few seconds (tests)

Without ``--weights``: the built-in weights (``featherface/weights/featherface_odconv_ssh.pt``) when present, else a
randomly initialised ``featherface_odconv`` (speed only; its face counts mean nothing). ``--weights PATH`` without
``NAME=`` loads a checkpoint of ours, which records its architecture.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featherface.inference.detector import FaceDetector  # noqa: E402
from featherface.inference.detect import VIDEO_CODECS, run_detect  # noqa: E402
from featherface.deploy.export import export_onnx  # noqa: E402
from featherface.inference.images import list_images, read_image  # noqa: E402
from featherface.inference.postprocess import Detections  # noqa: E402

#: Default source image, relative to the val images folder (a meeting: a few medium-size faces).
DEFAULT_EVENT = "11--Meeting"
SMOKE = {"size": (160, 120), "frames": 4, "runs": 1, "warmup": 1}


# ------------------------------------------------------------------------------------------------ test video
def shared_images_dir() -> Path:
    """``$FEATHERFACE_SHARED/data/widerface/val/images``, else ``../shared/...`` beside the repository (as
    ``tests/conftest.py`` finds the shared folder)."""
    env = os.environ.get("FEATHERFACE_SHARED")
    shared = Path(env) if env else REPO.parent / "shared"
    return shared / "data/widerface/val/images"


def pick_source_image(images_dir: Path, name: str | None) -> Path:
    """The WIDER image to pan over: ``images_dir / name``, else the first image of :data:`DEFAULT_EVENT`, else the
    first image of the folder (sorted)."""
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"WIDER val images not found: {images_dir} (pass --images-dir, set FEATHERFACE_SHARED, or use --synthetic)"
        )
    if name is not None:
        path = images_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"--image {name}: no such file under {images_dir}")
        return path
    for folder in (images_dir / DEFAULT_EVENT, images_dir):
        if folder.is_dir():
            images = list_images(folder)
            if images:
                return images[0]
    raise FileNotFoundError(f"no images under {images_dir}")


def synthetic_frame(seed: int = 0, size: tuple[int, int] = (1024, 768)) -> np.ndarray:
    """A seeded ``(H, W, 3)`` uint8 BGR picture (``size`` = W, H): a colour gradient, a few boxes and eight cartoon
    faces (skin-tone ellipses with eyes, nose and mouth) of 50 to 180 px. Not a photograph: trained detectors may
    or may not fire on it; it exercises the same decode / detect / draw / encode path."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    canvas = np.stack([90 + 80 * xx / width, 120 + 60 * yy / height, 150 - 50 * xx / width], axis=-1)
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        w, h = int(rng.integers(40, 220)), int(rng.integers(40, 220))
        color = tuple(int(c) for c in rng.integers(30, 230, 3))
        cv2.rectangle(image, (x, y), (min(width - 1, x + w), min(height - 1, y + h)), color, -1)
    for _ in range(8):
        r = int(rng.integers(25, 90))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        skin = (int(rng.integers(90, 160)), int(rng.integers(140, 190)), int(rng.integers(190, 235)))
        cv2.ellipse(image, (cx, cy), (int(r * 0.8), r), 0, 0, 360, skin, -1, cv2.LINE_AA)
        eye = max(2, r // 8)
        for dx in (-0.35, 0.35):
            cv2.circle(image, (int(cx + dx * r), int(cy - 0.2 * r)), eye, (40, 30, 30), -1, cv2.LINE_AA)
        cv2.line(image, (cx, int(cy - 0.05 * r)), (cx, int(cy + 0.2 * r)), (70, 90, 140), max(1, r // 20))
        cv2.ellipse(image, (cx, int(cy + 0.45 * r)), (int(0.3 * r), max(2, r // 10)), 0, 0, 360, (60, 60, 160), -1)
    return image


def pan_zoom_frame(source: np.ndarray, u: float, size: tuple[int, int]) -> np.ndarray:
    """Frame at time ``u`` in [0, 1] of a pan/zoom over ``source`` (``(H, W, 3)`` uint8), ``size`` = (W, H) output.

    The crop window keeps the output's aspect ratio; its size goes from 95 % of the largest such window to 65 % at
    ``u = 0.5`` and back (zoom in, zoom out), its centre moves left to right across the room that leaves and bobs
    up and down once. Sub-pixel motion (``cv2.warpAffine``, bilinear), so faces move smoothly.
    """
    out_w, out_h = size
    src_h, src_w = source.shape[:2]
    aspect = out_w / out_h
    full_w = min(src_w, src_h * aspect)
    crop_w = full_w * (0.95 - 0.30 * math.sin(math.pi * u))
    crop_h = crop_w / aspect
    cx = crop_w / 2 + (src_w - crop_w) * u
    cy = src_h / 2 + 0.5 * (src_h - crop_h) / 2 * math.sin(2 * math.pi * u)
    s = out_w / crop_w
    matrix = np.array([[s, 0.0, out_w / 2 - s * cx], [0.0, s, out_h / 2 - s * cy]], dtype=np.float64)
    return cv2.warpAffine(source, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_test_video(source: np.ndarray, folder: Path, frames: int, size: tuple[int, int], fps: float) -> Path:
    """Write the pan/zoom video of ``source`` to ``folder/test_video.mp4`` (or ``.avi``); returns its path.

    Raises:
        RuntimeError: no OpenCV video writer opens, or the file does not read back with ``frames`` frames.
    """
    for fourcc, ext in VIDEO_CODECS:
        path = folder / f"test_video{ext}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            break
        writer.release()
    else:
        raise RuntimeError(f"no OpenCV video writer opens for {size[0]}x{size[1]} ({[c for c, _ in VIDEO_CODECS]})")
    try:
        for i in range(frames):
            writer.write(pan_zoom_frame(source, i / max(1, frames - 1), size))
    finally:
        writer.release()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    if count != frames:
        raise RuntimeError(f"{path}: wrote {frames} frames, read back {count}")
    return path


# ------------------------------------------------------------------------------------------------ detectors
class RuntimeAsTorch:
    """An :class:`featherface.inference.onnx.OnnxFaceDetector` whose detections come out as torch
    :class:`~featherface.inference.postprocess.Detections` (zero-copy), which ``run_detect``'s drawing expects."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def __call__(self, image: np.ndarray) -> Detections:
        dets = self.detector(image)
        return Detections(torch.from_numpy(dets.boxes), torch.from_numpy(dets.scores),
                          torch.from_numpy(dets.landmarks))


@dataclass
class Row:
    """One backend at one thread count: per-pass figures and their medians."""

    model: str
    backend: str
    threads: int
    frames: int = 0
    faces_per_frame: float = 0.0
    detector_fps: float = 0.0
    end_to_end_fps: float = 0.0
    passes: list[dict[str, float]] = field(default_factory=list)

    def finish(self) -> None:
        self.detector_fps = round(statistics.median(p["detector_fps"] for p in self.passes), 2)
        self.end_to_end_fps = round(statistics.median(p["end_to_end_fps"] for p in self.passes), 2)


@dataclass
class _Entry:
    row: Row
    detector: Callable[[np.ndarray], Any]
    set_threads: Callable[[], None]


def parse_weights(pairs: Sequence[str]) -> list[tuple[str | None, Path]]:
    """``NAME=PATH`` (a registered model and its weights) or ``PATH`` (a checkpoint of ours) -> (name, path)."""
    parsed = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        model, file = (name, Path(path)) if sep else (None, Path(pair))
        if not file.is_file():
            raise FileNotFoundError(f"--weights {pair}: weights file not found: {file}")
        parsed.append((model or None, file))
    return parsed


def build_models(weights: Sequence[str], notes: list[str]) -> list[tuple[str, torch.nn.Module]]:
    """The models to benchmark: ``--weights`` pairs, else the built-in weights, else a random featherface_odconv."""
    from featherface.models.loading import build_model_from_checkpoint, load_weights
    from featherface.models.registry import create_model

    models = []
    for name, path in parse_weights(weights):
        if name is None:
            models.append((path.stem, build_model_from_checkpoint(path)))
        else:
            net = create_model(name)
            load_weights(net, path)
            models.append((name, net))
    if models:
        return models
    try:
        from featherface.weights import builtin_weights

        path = builtin_weights()
        notes.append(f"model: the built-in weights {path.name}")
        return [("builtin", build_model_from_checkpoint(path))]
    except FileNotFoundError:
        torch.manual_seed(0)
        notes.append("no --weights and no built-in weights: randomly initialised featherface_odconv "
                     "(speed only; its faces per frame mean nothing)")
        return [("featherface_odconv (random)", create_model("featherface_odconv"))]


def _torch_threads(n: int) -> Callable[[], None]:
    def apply() -> None:
        torch.set_num_threads(n)
        cv2.setNumThreads(n)
    return apply


def _cv2_threads(n: int) -> Callable[[], None]:
    def apply() -> None:
        cv2.setNumThreads(n)
    return apply


def make_entries(models: Sequence[tuple[str, torch.nn.Module]], threads: Sequence[int], work: Path, *,
                 onnx: bool, check_export: bool, threshold: float) -> list[_Entry]:
    """One entry per (model, backend, threads), detectors built once."""
    from featherface.inference.onnx import OnnxFaceDetector

    entries = []
    for i, (name, net) in enumerate(models):
        detector = FaceDetector(net, device="cpu", score_threshold=threshold, nms_iou=0.4)
        for n in threads:
            entries.append(_Entry(Row(name, "pytorch", n), detector, _torch_threads(n)))
        if onnx:
            path = export_onnx(net, work / f"model_{i}.onnx", check=check_export)
            for n in threads:
                runtime = OnnxFaceDetector(path, threads=n, score_threshold=threshold, nms_iou=0.4)
                entries.append(_Entry(Row(name, "onnxruntime", n), RuntimeAsTorch(runtime), _cv2_threads(n)))
    return entries


def one_pass(entry: _Entry, video: Path, out: Path, *, write_video: bool, warmup: int) -> dict[str, float]:
    """Warm up on ``warmup`` frames, then one timed pass of ``run_detect`` over the whole video."""
    entry.set_threads()
    detector: Any = entry.detector  # run_detect only calls it (typed FaceDetector)
    if warmup:
        run_detect(detector, [video], out, save_images=False, save_json=False, max_frames=warmup)
    summary = run_detect(detector, [video], out, save_images=write_video, save_json=False)
    v = summary.videos[0]
    return {"frames": v.frames, "faces": v.faces, "detector_seconds": round(v.detector_seconds, 4),
            "total_seconds": round(v.total_seconds, 4), "detector_fps": round(v.detector_fps, 3),
            "end_to_end_fps": round(v.end_to_end_fps, 3)}


# ------------------------------------------------------------------------------------------------ report
def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import onnxruntime

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def format_markdown(result: dict[str, Any]) -> str:
    """The rows as a Markdown table, followed by the video, the machine and the notes."""
    v, m = result["video"], result["machine"]
    e2e = "decode + detect + draw + encode" if result["config"]["write_video"] else "decode + detect"
    lines = [
        f"| model | backend | threads | frames | detector fps | end-to-end fps ({e2e}) | faces / frame |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['backend']} | {r['threads']} | {r['frames']} | {r['detector_fps']:.1f} "
                     f"| {r['end_to_end_fps']:.1f} | {r['faces_per_frame']:.2f} |")
    lines += [
        "",
        f"Video: {v['source']}, {v['width']}x{v['height']}, {v['frames']} frames at {v['fps']:g} fps "
        f"({v['container']}); median of {result['config']['runs']} passes, rows interleaved.",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, OpenCV {m['opencv']}; load average (1, 5, 15 min) "
        f"{result['load_average_start']} at start, {result['load_average_end']} at end.",
    ]
    lines += [f"Note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH",
                        help="models to run, e.g. featherface_v1=v1_fork.pth (PATH alone: a checkpoint of ours)")
    parser.add_argument("--images-dir", type=Path, default=None,
                        help="WIDER val images (default: $FEATHERFACE_SHARED or ../shared, data/widerface/val/images)")
    parser.add_argument("--image", default=None, help=f"source image under --images-dir (default: first of "
                        f"{DEFAULT_EVENT})")
    parser.add_argument("--synthetic", action="store_true", help="procedurally drawn source frame (no shared folder)")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate written into the test video")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3, help="timed passes over the video per row (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames before each pass")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold (featherface detect: 0.5)")
    parser.add_argument("--write-video", action="store_true", help="also draw and encode the annotated video")
    parser.add_argument("--no-onnx", action="store_true", help="PyTorch rows only")
    parser.add_argument("--smoke", action="store_true", help="160x120, 4 frames, 1 pass, no export check (seconds)")
    parser.add_argument("--note", action="append", default=[], help="free text added to the output")
    parser.add_argument("--json", type=Path, default=None, help="write the full result here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.frames, args.runs, args.warmup = SMOKE["size"], SMOKE["frames"], SMOKE["runs"], SMOKE["warmup"]
    if args.frames < 2 or args.runs < 1 or args.warmup < 0 or min(args.threads) < 1 or min(args.size) < 32:
        parser.error("need --frames >= 2, --runs >= 1, --warmup >= 0, --threads >= 1 and --size >= 32")

    load_start = _load_average()
    notes = list(args.note)
    old_torch, old_cv2 = torch.get_num_threads(), cv2.getNumThreads()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
            work = Path(tmp)
            if args.synthetic:
                source, source_name = synthetic_frame(), "synthetic frame (seed 0)"
            else:
                images_dir = args.images_dir or shared_images_dir()
                path = pick_source_image(images_dir, args.image)
                source, source_name = read_image(path), f"WIDER val {path.relative_to(images_dir)}"
            size = (int(args.size[0]), int(args.size[1]))
            video = write_test_video(source, work, args.frames, size, args.fps)
            models = build_models(args.weights, notes)
            entries = make_entries(models, args.threads, work, onnx=not args.no_onnx, check_export=not args.smoke,
                                   threshold=args.threshold)
            for _ in range(args.runs):  # round-robin: one pass of every row per round
                for k, entry in enumerate(entries):
                    entry.row.passes.append(one_pass(entry, video, work / f"out_{k}", write_video=args.write_video,
                                                     warmup=args.warmup))
            for entry in entries:
                row = entry.row
                row.frames = int(row.passes[0]["frames"])
                row.faces_per_frame = round(sum(p["faces"] for p in row.passes)
                                            / sum(p["frames"] for p in row.passes), 3)
                row.finish()
            video_info = {"source": source_name, "width": size[0], "height": size[1], "frames": args.frames,
                          "fps": args.fps, "container": video.suffix.lstrip(".")}
    finally:
        torch.set_num_threads(old_torch)
        cv2.setNumThreads(old_cv2)
    load_end = _load_average()
    cores = os.cpu_count() or 1
    if load_start and load_start[0] > 0.5 * cores:
        notes.append(f"1-min load average {load_start[0]} on {cores} cores at start: other processes share the CPU; "
                     "absolute fps are pessimistic, compare rows of this run")
    result = {
        "config": {"size": list(size), "frames": args.frames, "fps": args.fps, "threads": list(args.threads),
                   "runs": args.runs, "warmup": args.warmup, "threshold": args.threshold, "nms_iou": 0.4,
                   "write_video": args.write_video, "onnx": not args.no_onnx, "smoke": args.smoke,
                   "weights": list(args.weights), "synthetic": args.synthetic},
        "video": video_info,
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "rows": [asdict(e.row) for e in entries],
        "notes": notes,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    sys.stdout.write(format_markdown(result) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
