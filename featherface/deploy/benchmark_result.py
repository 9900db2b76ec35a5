"""The benchmark's figures (:class:`BenchmarkResult`: sizes, latencies, ratios against their goals, operator
profiles, AP) and their Markdown (:func:`format_markdown`). Measured by
:func:`featherface.deploy.benchmark.run_benchmark`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from featherface.deploy.accuracy import ModelAccuracy
from featherface.deploy.profile import OpProfileRow

__all__ = [
    "BACKENDS",
    "BACKEND_LABELS",
    "CLOCK_LABELS",
    "BenchmarkResult",
    "LatencyRow",
    "ModelInfo",
    "Ratio",
    "format_markdown",
    "ratio_label",
]

RETINAFACE = "retinaface_mnet025"
YUNET = "yunet_n"
#: Suffix of the entries exported without the deployment rewrites (``compare_unfused``).
UNFUSED = " (unfused)"
#: Goals of the deployment issue: no slower than RetinaFace; end-to-end within 1.1x the bare network; the exact
#: export rewrites at least 15% faster than the export before them.
GOAL_VS_RETINAFACE = 1.0
GOAL_E2E_OVER_BARE = 1.1
GOAL_FUSED_OVER_UNFUSED = 0.85
#: Bare-network runtimes and their labels.
BACKEND_LABELS: dict[str, str] = {"ort": "ONNX Runtime", "openvino": "OpenVINO"}
#: Clocks of the interleaved ratios: wall time, or (one thread only) the CPU time of the calling thread.
CLOCK_LABELS: dict[str, str] = {"wall": "wall clock", "cpu": "CPU time"}
#: Latency rows, in table order.
BACKENDS: tuple[str, ...] = ("torch", "ort", "openvino", "e2e", "e2e_original")


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
        backend: ``"torch"`` (eager, bare), ``"ort"`` (ONNX Runtime fp32, bare), ``"openvino"`` (OpenVINO fp32,
            bare), ``"e2e"`` (detector at ``size``, ONNX Runtime), ``"e2e_original"`` (detector at each image's
            own size; median over images of per-image medians).
        threads: intra-op threads.
        size: ``"HxW"`` or ``"original"``.
        median_ms, min_ms, max_ms: over the timed runs.
        runs: timed runs (per image for ``e2e_original``).
        detections: faces returned by the last end-to-end call (``None`` for bare rows).
        cpu_median_ms: interleaved bare rows at one thread: median CPU time of the calling thread (the runtime's
            compute time without waits for a core; ``None`` elsewhere).
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
    cpu_median_ms: float | None = None


@dataclass(frozen=True)
class Ratio:
    """A latency ratio (``numerator / denominator``) with the goal it is compared to (``value <= goal``).

    For interleaved bare-network rows the value is the median of the per-round ratios, otherwise the ratio of
    the two medians.
    """

    name: str
    numerator: str
    denominator: str
    value: float
    goal: float

    @property
    def met(self) -> bool:
        return self.value <= self.goal


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
    accuracy: list[ModelAccuracy] = field(default_factory=list)

    def latency(self, model: str, backend: str, threads: int) -> LatencyRow | None:
        """The row of ``model`` / ``backend`` / ``threads`` (``None`` when not measured)."""
        for row in self.latencies:
            if (row.model, row.backend, row.threads) == (model, backend, threads):
                return row
        return None

    def ratio(self, numerator: str, denominator: str) -> Ratio | None:
        """The ratio between two measurements, named ``"<model> <backend> <threads>t"``."""
        return next((r for r in self.ratios if (r.numerator, r.denominator) == (numerator, denominator)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "environment": self.environment,
            "models": [asdict(m) for m in self.models],
            "latencies": [asdict(r) for r in self.latencies],
            "ratios": [{**asdict(r), "met": r.met} for r in self.ratios],
            "profile": [asdict(p) for p in self.profile],
            "accuracy": [asdict(a) for a in self.accuracy],
            "notes": list(self.notes),
        }


def ratio_label(model: str, backend: str, threads: int) -> str:
    """How a measurement is named in :class:`Ratio` (``numerator`` / ``denominator``)."""
    return f"{model} {backend} {threads}t"


def _fmt_int(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _speed_accuracy_table(result: BenchmarkResult) -> list[str]:
    """One row per detector at the first thread count: bare latency and ratio against RetinaFace in each runtime,
    then the AP (when measured)."""
    measured = [r.threads for r in result.latencies if r.backend in BACKEND_LABELS]
    threads = result.config.get("threads", sorted(measured))[0]
    backends = [b for b in BACKEND_LABELS if any(r.backend == b for r in result.latencies)]
    accuracy = {a.model: a for a in result.accuracy}
    cpu = result.config.get("clock") == "cpu" and threads == 1
    header = ["model"]
    for b in backends:
        header += [f"{BACKEND_LABELS[b]} {threads}t ({'CPU ' if cpu else ''}ms)", f"x {RETINAFACE}"]
    if accuracy:
        header += ["AP easy", "AP medium", "AP hard"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for info in result.models:
        cells = [info.name]
        for b in backends:
            row = result.latency(info.name, b, threads)
            ratio = result.ratio(ratio_label(info.name, b, threads), ratio_label(RETINAFACE, b, threads))
            ms = None if row is None else row.cpu_median_ms if cpu else row.median_ms
            cells += ["-" if ms is None else f"{ms:.2f}",
                      "1" if info.name == RETINAFACE and row else "-" if ratio is None else f"{ratio.value:.2f}"]
        if accuracy:
            a = accuracy.get(info.name)
            cells += ["-"] * 3 if a is None else [f"{100 * v:.2f}" for v in (a.easy, a.medium, a.hard)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _profile_table(profile: Sequence[OpProfileRow]) -> list[str]:
    """Op types as rows, profiled exports as columns: ``ms (share %)``."""
    models = list(dict.fromkeys(p.model for p in profile))
    ops = list(dict.fromkeys(p.op_type for p in sorted(profile, key=lambda p: -p.total_ms)))
    cell = {(p.model, p.op_type): p for p in profile}
    lines = ["| op type | " + " | ".join(m or "model" for m in models) + " |", "|" + "---|" * (len(models) + 1)]
    for op in ops:
        cells = ["-" if (m, op) not in cell else f"{cell[m, op].total_ms:.2f} ({100 * cell[m, op].share:.0f} %)"
                 for m in models]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return lines


def format_markdown(result: BenchmarkResult) -> str:
    """The result as Markdown: speed and accuracy, sizes and all latencies, ratios, ORT profiles, notes."""
    order = {b: i for i, b in enumerate(BACKENDS)}
    columns = sorted(dict.fromkeys((r.backend, r.threads) for r in result.latencies),
                     key=lambda c: (order.get(c[0], len(order)), c[1]))
    header = ["model", "params", "MACs (G)", "ONNX (KB)"] + [f"{b} {t}t (ms)" for b, t in columns] + ["e2e dets"]
    lines = [f"Input {result.config['input_size'][0]}x{result.config['input_size'][1]}, batch 1, "
             f"median of {result.config['runs']} runs after {result.config['warmup']} warm-up.", ""]
    if any(r.backend in BACKEND_LABELS for r in result.latencies):
        clock = CLOCK_LABELS[result.config.get("clock", "wall")]
        lines += [f"Speed (bare network, fp32, interleaved; ratio = median of per-round {clock} ratios against "
                  f"{RETINAFACE} in the same runtime) and accuracy:", ""] + _speed_accuracy_table(result) + [""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
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
    if result.accuracy:
        n = result.accuracy[0]
        lines += ["", f"AP: WIDER FACE protocol, {n.images} of the {n.num_images_total} val images of the ground "
                  "truth, the deployed ONNX file in ONNX Runtime (seconds: " +
                  ", ".join(f"{a.model} {a.seconds:.0f}" for a in result.accuracy) + ")."]
    if result.profile:
        lines += ["", "ORT per-operator profile (1 thread, ms per inference, share of the node time):", ""]
        lines += _profile_table(result.profile)
    if result.notes:
        lines += [""] + [f"- {note}" for note in result.notes]
    env = result.environment
    versions = f"torch {env['torch']}, onnxruntime {env['onnxruntime']}"
    if "openvino" in env:
        versions += f", openvino {env['openvino']}"
    lines += ["", f"{versions}, {env['cpu_count']} CPUs, load {env.get('load_average_before')} -> "
              f"{env.get('load_average_after')}, {env['seconds']} s"]
    return "\n".join(lines) + "\n"
