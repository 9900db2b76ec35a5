"""The parameter file schema: loading, validation messages, overrides, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from featherface.config import (
    ConfigError,
    DataConfig,
    Params,
    StudyRun,
    apply_overrides,
    from_dict,
    load_params,
    resolve_path,
    to_dict,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_project_params_files_load() -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.data.source == "local"
    full = load_params(PROJECT_ROOT / "workflow" / "params-full.yaml")
    assert full.data.source == "gdown" and full.data.train_images == 0


def test_defaults_fill_missing_sections(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, "data:\n  train_images: 8\n"))
    assert params.data.train_images == 8
    assert params.verify == Params().verify


def test_unknown_key_names_key_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'data.train_image'.*did you mean 'train_images'"):
        load_params(write(tmp_path, "data:\n  train_image: 8\n"))


def test_unknown_section_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'verfy'.*did you mean 'verify'"):
        load_params(write(tmp_path, "verfy:\n  decode_images: true\n"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  train_images: many\n", r"data.train_images: expected an integer"),
        ("data:\n  train_images: -1\n", r"data.train_images: must be >= 0"),
        ("data:\n  source: ftp\n", r"data.source: 'ftp' is not one of \['local', 'gdown'\]"),
        ("verify:\n  decode_images: 1\n", r"verify.decode_images: expected true or false"),
        ("data: 3\n", r"data: expected a mapping"),
        ("- a\n- b\n", r"expected a mapping of sections"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(write(tmp_path, text))


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="parameter file not found"):
        load_params(tmp_path / "nope.yaml")


def test_overrides_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  train_images: 8\n")
    assert load_params(path, ["data.train_images=16"]).data.train_images == 16
    with pytest.raises(ConfigError, match="unknown key 'data.nope'"):
        load_params(path, ["data.nope=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["data.train_images"])


def test_round_trip_and_frozen() -> None:
    params = Params()
    assert from_dict(Params, to_dict(params)) == params
    with pytest.raises(Exception):
        params.data.train_images = 3  # type: ignore[misc]


def test_tuple_fields_convert_lists() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Sizes:
        sizes: tuple[tuple[int, int], ...] = ()
        scale: float = 1.0

    built = from_dict(Sizes, {"sizes": [[640, 640], [250, 333]], "scale": 2})
    assert built.sizes == ((640, 640), (250, 333)) and built.scale == 2.0
    with pytest.raises(ConfigError, match=r"sizes\[1\]: expected 2 items"):
        from_dict(Sizes, {"sizes": [[1, 2], [3]]})


def test_resolve_path(tmp_path: Path) -> None:
    assert resolve_path("data", tmp_path) == tmp_path / "data"
    assert resolve_path("/abs/x", tmp_path) == Path("/abs/x")
    assert DataConfig().root == "data"


def test_study_runs_are_validated(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, "study:\n  runs: [featherface_none:imagenet, featherface_cbam:fork_trunk]\n"
                                         "  fine_tune_epochs: 3\n"))
    assert params.study.study_runs() == {
        "featherface_none-imagenet": StudyRun("featherface_none", "imagenet"),
        "featherface_cbam-fork_trunk": StudyRun("featherface_cbam", "fork_trunk"),
    }
    assert params.study.epochs_override("fork_trunk") == 3
    assert params.study.epochs_override("imagenet") == 0
    assert params.study.dir == "results/study"
    for bad, message in (("runs: [featherface_none]", "MODEL:INIT"),
                         ("runs: [featherface_none:scratch]", "INIT must be one of"),
                         ("runs: [a:none, a:none]", "listed twice"),
                         ("seeds: [0, 1, 0]", "seed is listed twice"),
                         ("seeds: [-1]", "seeds must be >= 0"),
                         ("seeds: [zero]", "study.seeds"),
                         ("dir: ' '", "study.dir")):
        with pytest.raises(ConfigError, match=message):
            load_params(write(tmp_path, f"study:\n  {bad}\n"))


def test_study_seeds_repeat_every_run(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, "study:\n  runs: [featherface_none:fork_trunk, featherface_cbam:fork_trunk]\n"
                                         "  seeds: [0, 7]\n  dir: results/ablation\n"))
    runs = params.study.study_runs()
    assert list(runs) == ["featherface_none-fork_trunk-seed0", "featherface_none-fork_trunk-seed7",
                          "featherface_cbam-fork_trunk-seed0", "featherface_cbam-fork_trunk-seed7"]
    assert runs["featherface_cbam-fork_trunk-seed7"] == StudyRun("featherface_cbam", "fork_trunk", 7)
    assert runs["featherface_cbam-fork_trunk-seed7"].group == "featherface_cbam-fork_trunk"


def test_study_params_file_loads() -> None:
    params = load_params(PROJECT_ROOT / "params-study.yaml")
    assert len(params.study.runs) == 8
    assert {run.init for run in params.study.study_runs().values()} == {"imagenet", "fork_trunk"}


def test_ablation_params_file_loads() -> None:
    params = load_params(PROJECT_ROOT / "params-ablation.yaml")
    runs = params.study.study_runs()
    assert len(runs) == 12 and {run.seed for run in runs.values()} == {0, 1, 2}
    assert {run.model for run in runs.values()} == {"featherface_odconv", "featherface_odconv4", "featherface_cbam",
                                                    "featherface_none"}
    assert params.study.dir == "results/ablation" and params.train.teacher_model == "featherface_v1"


def test_export_benchmark_and_references_sections_are_validated(tmp_path: Path) -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.export.opset >= 19 and params.benchmark.threads == (1, 2)
    assert [d.name for d in params.references.detectors] == ["builtin", "featherface_v1", "retinaface_mnet025",
                                                             "yunet_n"]
    for text, message in (
        ("export:\n  opset: 17\n", r"export.opset: must be >= 19"),
        ("export:\n  input_size: [640]\n", r"export.input_size: expected 2 items"),
        ("benchmark:\n  threads: []\n", r"benchmark.threads: give thread counts >= 1"),
        ("benchmark:\n  runs: 0\n", r"benchmark.runs: must be >= 1"),
        ("benchmark:\n  profile: true\n", r"unknown key 'benchmark.profile'"),
        ("references:\n  detectors:\n    - {name: a, peer: yunet}\n",
         r"references.detectors\[0\].weights: a: peer 'yunet' needs weights"),
        ("references:\n  detectors:\n    - {name: a, model: featherface_v1}\n",
         r"references.detectors\[0\].weights: a: model 'featherface_v1' needs weights"),
        ("references:\n  detectors:\n    - {name: a, peer: blazeface, weights: x}\n",
         r"references.detectors\[0\].peer: a: 'blazeface' is not one of"),
        ("references:\n  detectors:\n    - {name: a, model: m, peer: yunet, weights: x}\n",
         r"references.detectors\[0\].model: a: give either model"),
        ("references:\n  detectors:\n    - {name: a/b, peer: retinaface_mnet025}\n",
         r"references.detectors\[0\].name: 'a/b' must be a folder name"),
        ("references:\n  detectors:\n    - {name: a, peer: retinaface_mnet025}\n    - {name: a, peer: retinaface_mnet025}\n",
         r"references.detectors: a name is listed twice"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_params(write(tmp_path, text))


def test_reference_peers_are_known_detectors() -> None:
    from featherface.config import REFERENCE_PEERS
    from featherface.inference.peers import PEERS

    assert set(REFERENCE_PEERS) <= set(PEERS)


def test_predict_on_the_train_checkpoint_must_name_the_trained_model(tmp_path: Path) -> None:
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.predict.weights == "results/train/final.pt" and params.predict.model == params.train.model
    text = "train:\n  model: featherface_odconv\npredict:\n  model: featherface_v1\n  weights: results/train/final.pt\n"
    with pytest.raises(ConfigError, match=r"predict.model: 'featherface_v1', but predict.weights is the train stage"):
        load_params(write(tmp_path, text))
    other = "train:\n  model: featherface_odconv\npredict:\n  model: featherface_v1\n  weights: data/weights/v1.pth\n"
    assert load_params(write(tmp_path, other)).predict.model == "featherface_v1"


def test_extra_weights_may_name_a_sub_folder_but_not_leave_it(tmp_path: Path) -> None:
    assert load_params(write(tmp_path, "data:\n  extra_weights: [peers/y.onnx]\n")).data.extra_weights == ("peers/y.onnx",)
    for bad in ("../y.onnx", "/abs/y.onnx", "''", "peers/../../y"):
        with pytest.raises(ConfigError, match="data.extra_weights"):
            load_params(write(tmp_path, f"data:\n  extra_weights: [{bad}]\n"))


def test_dvc_references_stage_reads_exactly_the_protocol_keys() -> None:
    """The references stage depends on the predict section's protocol, not on which model the pipeline trains."""
    import yaml

    from featherface.config import PredictConfig

    stage = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["references"]
    predict_keys = {p.split(".", 1)[1] for p in stage["params"] if isinstance(p, str) and p.startswith("predict.")}
    assert predict_keys == set(PredictConfig.PROTOCOL_KEYS)


def test_default_train_stage_fine_tunes_the_built_in_model() -> None:
    """params.yaml trains the built-in model's architecture from its weights: when the built-in weights change
    to another model, train.model (and predict.model) must follow."""
    import torch

    from featherface.weights import builtin_weights

    params = load_params(PROJECT_ROOT / "params.yaml")
    assert (params.train.init, params.train.init_weights) == ("checkpoint", "builtin")
    checkpoint = torch.load(builtin_weights(), map_location="cpu", weights_only=False)
    assert params.train.model == checkpoint["model_name"] == params.predict.model
    builtin = [d for d in params.references.detectors if d.weights == "builtin"]
    assert [d.model for d in builtin] == [checkpoint["model_name"]]  # the reference row "before fine-tuning"


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.5\npredict:\n  long_side: 640\n")
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(info.value) == (f"{path}:4: key 'train.lr' is given twice (lines 2 and 4); YAML would silently keep "
                               "the last value: keep one of them")
    section_twice = write(tmp_path, "score:\n  iou_threshold: 0.5\nscore:\n  iou_threshold: 0.7\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:3: key 'score' is given twice \(lines 1 and 3\)"):
        load_params(section_twice)
    # the same key in different sections is fine
    assert load_params(write(tmp_path, "predict:\n  nms_iou: 0.3\ntrain:\n  lr: 0.2\n")).predict.nms_iou == 0.3


def test_dvc_entropy_plot_names_the_trained_model_s_columns() -> None:
    """dvc.yaml's attention-entropy plot lists metrics.csv columns by name: they must be train.model's."""
    import yaml

    from featherface.models.registry import create_model
    from featherface.train.metrics import entropy_columns

    plots = {name: spec for entry in yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["plots"]
             for name, spec in entry.items()}
    listed = plots["attention_entropy"]["y"]["results/train/metrics.csv"]
    model = load_params(PROJECT_ROOT / "params.yaml").train.model
    assert listed and set(listed) <= set(entropy_columns(create_model(model)))
