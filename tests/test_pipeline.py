"""The pipeline runs the same stages under Snakemake and DVC, does nothing when run again, reruns only what
depends on a changed parameter, tracks experiments with DVC (metrics, plots, `dvc exp run -S`), and dry-runs on
SLURM through the profile.

Each test copies the workflow files (and the package sources DVC hashes as code dependencies) into a
temporary project whose params.yaml selects a tiny subset of `../shared/data/widerface`, then runs the real
tools there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "workflow", "dvc.yaml", ".dvcignore", ".gitignore", "profiles", "featherface"]
#: A git identity for the commits of the temporary projects (CI machines may have none).
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
                "GIT_COMMITTER_EMAIL": "test@example.com"}


def _run(cmd: list[str], cwd: Path) -> str:
    # One thread per process: the stages are tiny here, and PyTorch's thread pool thrashes on a busy 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", **GIT_IDENTITY}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-4000:]}"
    return output


def _set_param(project: Path, section: str, key: str, value: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path, shared_dir: Path) -> Path:
    """A throw-away copy of the pipeline with a 4 + 4 image subset of the shared data."""
    root = tmp_path / "project"
    root.mkdir()
    for name in WORKFLOW_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"].update(
        local_widerface=str(shared_dir / "data" / "widerface"),
        local_weights=str(shared_dir / "weights"),
        train_images=4,
        val_images=4,
    )
    params["validate"]["golden_dir"] = str(shared_dir / "golden")
    params["train"].update(image_size=128, batch_size=2, epochs=1, warmup_epochs=0, num_workers=0, probe_images=2)
    params["export"].update(input_size=[160, 160])
    params["benchmark"].update(input_size=[160, 160], threads=[1], runs=1, warmup=0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _dvc_init(project: Path) -> None:
    _run(["git", "init", "-q"], project)
    _run([sys.executable, "-m", "dvc", "init", "-q"], project)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], project)


def _dvc(project: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], project)


def _commit(project: Path, message: str) -> None:
    _run(["git", "add", "-A"], project)
    _run(["git", "commit", "-q", "-m", message], project)


def _snakemake(project: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "snakemake", "--cores", "1", *args], project)


def _snakemake_ran(output: str) -> set[str]:
    return set(re.findall(r"^\s*(?:local)?rule (\w+):", output, flags=re.M)) - {"all"}


def _dvc_ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_snakemake_and_dvc_define_the_same_stages(project: Path) -> None:
    _dvc_init(project)
    summary = _snakemake(project, "--summary")
    snake_outputs: dict[str, set[str]] = {}
    for line in summary.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 3 and not line.startswith("output_file"):
            snake_outputs.setdefault(fields[2], set()).add(fields[0])
    code = (
        "import json, sys\nfrom dvc.repo import Repo\n"
        "repo = Repo('.')\n"
        "print(json.dumps({s.name: sorted(str(o) for o in s.outs) for s in repo.index.stages}))"
    )
    dvc_outputs = json.loads(_run([sys.executable, "-c", code], project).strip().splitlines()[-1])
    assert set(snake_outputs) == set(dvc_outputs), "the two DAGs list different stages"
    for stage, outs in dvc_outputs.items():
        assert snake_outputs[stage] == set(outs), f"stage {stage}: outputs differ"
    # every rule that runs a command logs it, and states its threads and resources (target rules run nothing)
    rules = _rule_sources()
    assert set(dvc_outputs) <= set(rules)
    for rule, text in rules.items():
        if "\n    shell:" not in text:
            continue
        for key in ("log:", "threads:", "resources:"):
            assert f"\n    {key}" in text, f"rule {rule}: no {key}"
    assert "gpu=" in rules["train"]


def _rule_sources() -> dict[str, str]:
    """``{rule: its source}`` of every rule of the Snakefile and workflow/rules/*.smk."""
    rules = {}
    for path in [PROJECT_ROOT / "Snakefile", *sorted((PROJECT_ROOT / "workflow" / "rules").glob("*.smk"))]:
        for match in re.finditer(r"^rule (\w+):.*?(?=^rule |\Z)", path.read_text(), flags=re.M | re.S):
            rules[match.group(1)] = match.group(0)
    return rules


ALL_STAGES = {"download", "verify", "validate", "predict", "score", "references", "train", "export", "benchmark",
              "report"}
#: What a new trained model reruns: everything that evaluates, exports or times it.
AFTER_TRAIN = {"train", "predict", "score", "export", "benchmark", "report"}


def _check_results(project: Path, val_images: int) -> None:
    assert yaml.safe_load((project / "results" / "verify" / "report.json").read_text())["ok"] is True
    assert yaml.safe_load((project / "results" / "validate" / "report.json").read_text())["ok"] is True
    ap = yaml.safe_load((project / "results" / "score" / "ap.json").read_text())
    assert ap["num_images"] == val_images and ap["num_images_total"] == 3226
    assert all(0.0 <= ap["ap"][s] <= 1.0 for s in ("easy", "medium", "hard"))
    assert (project / "results" / "score" / "pr_curves.png").stat().st_size > 0
    params = yaml.safe_load((project / "params.yaml").read_text())
    metrics = (project / "results" / "train" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + params["train"]["epochs"] and "loss" in metrics[0]
    # the chain is honest: predict, export and benchmark used the checkpoint the train stage wrote
    model = params["train"]["model"]
    final = project / "results" / "train" / "final.pt"
    predict = yaml.safe_load((project / "results" / "predict" / "provenance.json").read_text())
    assert predict["params"]["predict"]["model"] == model
    assert list(predict["inputs_sha256"]) == [str(final)]
    export = yaml.safe_load((project / "results" / "export" / "provenance.json").read_text())
    assert export["params"]["export"]["model"] == model and list(export["inputs_sha256"]) == [str(final)]
    latency = yaml.safe_load((project / "results" / "benchmark" / "latency_ms.json").read_text())
    assert latency["model"] == model and latency["median_ms"]["ort_1t"] > 0
    for setting in ("easy", "medium", "hard"):
        assert (project / "results" / "score" / "pr" / f"{setting}.csv").read_text().startswith("threshold,recall,")
    references = yaml.safe_load((project / "results" / "references" / "references.json").read_text())
    assert [r["name"] for r in references["detectors"]] == ["builtin", "featherface_v1", "retinaface_mnet025",
                                                             "yunet_n"]
    assert all(r["num_images"] == val_images for r in references["detectors"])
    report = (project / "results" / "report" / "report.md").read_text()
    assert f"| `{model}` (this pipeline's model) |" in report and "| `yunet_n` |" in report


@pytest.mark.slow  # 200 s on 2 idle cores: a whole tiny run, then six partial ones
def test_snakemake_reruns_only_what_a_parameter_touches(project: Path) -> None:
    assert _snakemake_ran(_snakemake(project)) == ALL_STAGES
    _check_results(project, 4)
    assert {p.stem for p in (project / "logs").glob("*.log")} == ALL_STAGES
    assert "predict:" in (project / "logs" / "predict.log").read_text()
    again = _snakemake(project)
    assert _snakemake_ran(again) == set(), "a second run must do nothing"
    assert "Nothing to be done" in again

    _set_param(project, "verify", "decode_images", False)
    assert _snakemake_ran(_snakemake(project)) == {"verify", "report"}

    _set_param(project, "validate", "input_sizes", [[64, 64]])
    assert _snakemake_ran(_snakemake(project)) == {"validate", "report"}

    _set_param(project, "score", "iou_threshold", 0.6)
    assert _snakemake_ran(_snakemake(project)) == {"score", "references", "report"}

    _set_param(project, "benchmark", "runs", 2)
    assert _snakemake_ran(_snakemake(project)) == {"benchmark", "report"}

    _set_param(project, "train", "lr", 2e-3)
    assert _snakemake_ran(_snakemake(project)) == AFTER_TRAIN

    _set_param(project, "data", "val_images", 3)
    assert _snakemake_ran(_snakemake(project)) == ALL_STAGES - {"validate"}
    _check_results(project, 3)


@pytest.mark.slow  # 180 s on 2 idle cores: a whole tiny run, an experiment, three partial runs
def test_dvc_reruns_only_what_changed_and_tracks_experiments(project: Path) -> None:
    """`dvc repro` reruns what a change touches; the README's experiment workflow (a baseline commit,
    `dvc exp run -S`, then `dvc exp show`, `dvc metrics diff`, `dvc plots diff`) compares two trained models."""
    _dvc_init(project)
    assert _dvc_ran(_dvc(project, "repro")) == ALL_STAGES
    _check_results(project, 4)
    assert _dvc_ran(_dvc(project, "repro")) == set(), "a second run must do nothing"
    _commit(project, "baseline")
    tracked = set(_run(["git", "ls-files", "results"], project).split())
    assert tracked == {"results/score/ap.json", "results/benchmark/latency_ms.json", "results/train/metrics.csv",
                       *(f"results/score/pr/{s}.csv" for s in ("easy", "medium", "hard"))}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    cache = project / ".dvc" / "cache" / "files" / "md5"
    cached = {o["path"] for stage in lock.values() for o in stage.get("outs", [])
              if "md5" in o and (cache / o["md5"][:2] / o["md5"][2:]).is_file()}
    model = yaml.safe_load((project / "params.yaml").read_text())["train"]["model"]
    assert {"results/train/final.pt", f"results/export/{model}.onnx"} <= cached, "models are cached outputs"

    assert _dvc_ran(_dvc(project, "exp", "run", "-S", "train.epochs=2", "-n", "two-epochs")) == AFTER_TRAIN
    rows = json.loads(_dvc(project, "exp", "show", "--json"))
    baseline = next(row for row in rows if row["rev"] != "workspace")
    runs = [exp["revs"][0] for exp in baseline["experiments"] or []]
    assert [run["name"] for run in runs] == ["two-epochs"]
    for row, epochs in ((baseline, 1), (runs[0], 2)):
        data = row["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == epochs
        ap = data["metrics"]["results/score/ap.json"]["data"]["ap"]
        assert set(ap) == {"easy", "medium", "hard"} and all(0.0 <= v <= 1.0 for v in ap.values() if v is not None)
        assert data["metrics"]["results/benchmark/latency_ms.json"]["data"]["model"] == model
    # HEAD (the baseline) against the workspace (the experiment): another model, other predictions
    diff = json.loads(_dvc(project, "metrics", "diff", "--json", "--all"))
    changed = {key for key, value in diff["results/score/ap.json"].items() if value.get("diff")}
    assert changed & {"ap.easy", "ap.medium", "ap.hard", "num_predictions"}, diff["results/score/ap.json"]
    params_diff = json.loads(_dvc(project, "params", "diff", "--json"))["params.yaml"]
    assert (params_diff["train.epochs"]["old"], params_diff["train.epochs"]["new"]) == (1, 2)
    plots = json.loads(_dvc(project, "plots", "diff", "--json", "HEAD"))["data"]
    for name in ("loss", "attention_entropy", "precision_recall"):
        revisions = {rev for plot in plots[name] for rev in plot.get("revisions", [])}
        assert revisions == {"HEAD", "workspace"}, (name, revisions)  # the baseline's curves and the experiment's

    _set_param(project, "verify", "decode_images", False)
    assert _dvc_ran(_dvc(project, "repro")) == {"verify", "report"}

    _set_param(project, "validate", "input_sizes", [[64, 64]])
    assert _dvc_ran(_dvc(project, "repro")) == {"validate", "report"}

    _set_param(project, "data", "val_images", 3)
    ran = _dvc_ran(_dvc(project, "repro"))
    # DVC compares content: the train stage reruns (its data folder changed) but, with the same train images and
    # seed, may write a bit-identical model, which export and benchmark then need not see again
    assert ALL_STAGES - {"validate", "export", "benchmark"} <= ran <= ALL_STAGES - {"validate"}
    _check_results(project, 3)
    provenance = yaml.safe_load((project / "results" / "verify" / "provenance.json").read_text())
    assert provenance["params"]["data"]["val_images"] == 3
    assert provenance["code"]["package"]


def test_slurm_profile_dry_runs(project: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="the SLURM executor plugin is not installed (pip install -e '.[cluster]')")
    output = _run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"], project)
    assert "This was a dry-run" in output
    train = output[output.index("rule train:"):]
    train = train[:train.index("\n\n")]
    assert "gpu=1" in train and "slurm_partition=gpu" in train, train



@pytest.mark.parametrize("params_file, target, jobs", [
    ("params-ablation.yaml", "study", {"study_train": 12, "study_predict": 12, "study_score": 12, "study_bypass": 9}),
    ("params-study.yaml", "study", {"study_train": 8, "study_predict": 8, "study_score": 8}),
    ("params-builtin.yaml", "builtin", {"builtin_continue": 27, "builtin_soup": 3, "builtin_predict": 32,
                                       "builtin_score": 32}),
])
def test_study_and_builtin_targets_plan_every_run(project: Path, params_file: str, target: str,
                                                   jobs: dict[str, int]) -> None:
    """A dry run of each multi-run target with the repository's own parameter files plans every run they list
    (the ablation: 4 models x 3 seeds, and the bypassed scores of the 3 models with attention)."""
    for path in [PROJECT_ROOT / "params-ablation.yaml", PROJECT_ROOT / "params-study.yaml",
                 *PROJECT_ROOT.glob("params-builtin*.yaml")]:
        shutil.copy2(path, project / path.name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEATHERFACE_PARAMS": params_file}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-n", target], cwd=project,
                            capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    planned = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M)}
    for rule, count in jobs.items():
        assert planned.get(rule) == count, f"{rule}: planned {planned.get(rule)}, expected {count}\n{output[-3000:]}"
