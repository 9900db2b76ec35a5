# The study: several models trained with one recipe (the train: section), each predicted and scored on the val
# images, then one table. The runs are the `study: runs:` list of the parameter file (MODEL:INIT pairs), each
# repeated once per seed of `study: seeds:` when it lists any; see params-study.yaml, params-ablation.yaml and the
# README. Run it with
#   FEATHERFACE_PARAMS=params-study.yaml snakemake --cores 1 study
# Training is resumable: an interrupted run continues from <study dir>/<run>/last.pt on the next call
# (a changed train: section makes the resume refuse with a message; delete the run's folder to start over).
# Code changes do not retrain a run (the runs take hours); force one with `snakemake -R study_train`. Every
# output folder holds a provenance.json with the git commit and the parameters it was made with.

from featherface.config import StudyConfig, from_dict
from featherface.stages.study import has_attention

STUDY = from_dict(StudyConfig, config.get("study", {}), "study")
STUDY_RUNS = STUDY.study_runs()
STUDY_DIR = STUDY.dir
STUDY_LOGS = Path(STUDY_DIR).name  # logs/<it>/<run>/*.log
# a training run's CPU threads: train.threads (0: PyTorch's default, then the rule asks for 8); the evaluation
# of a run asks for as many, at most 4 (train.threads: 1 runs as many runs and evaluations at once as --cores)
STUDY_TRAIN_THREADS = config["train"].get("threads") or 8
STUDY_EVAL_THREADS = min(4, STUDY_TRAIN_THREADS)


def study_overrides(wildcards):
    """The `--set` options of one run: its model, init, seed and (warm starts) epochs."""
    run = STUDY_RUNS[wildcards.run]
    sets = [f"--set train.model={run.model}", f"--set train.init={run.init}"]
    if run.seed is not None:
        sets.append(f"--set train.seed={run.seed}")
    if STUDY.epochs_override(run.init):
        sets.append(f"--set train.epochs={STUDY.epochs_override(run.init)}")
    return " ".join(sets)


wildcard_constraints:
    run="|".join(STUDY_RUNS) or "no-study-runs",


def bypass_scores(wildcards=None):
    """The `<run>/bypass/ap.json` files the table reads: runs whose model has attention, when study.bypass."""
    runs = [name for name, run in STUDY_RUNS.items() if STUDY.bypass and has_attention(run.model)]
    return expand(f"{STUDY_DIR}/{{run}}/bypass/ap.json", run=runs)


rule study:
    input:
        f"{STUDY_DIR}/table.md",


rule study_train:
    input:  # ancient: a newer copy of the data does not retrain hours of runs
        widerface=ancient(f"{DATA}/widerface"),
        weights=ancient(f"{DATA}/weights"),
    output:
        final=f"{STUDY_DIR}/{{run}}/final.pt",
    params:
        train=config["train"],
        overrides=study_overrides,
    log:
        f"logs/{STUDY_LOGS}/{{run}}/train.log",
    threads: STUDY_TRAIN_THREADS
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "featherface train --params {PARAMS_FILE} {params.overrides} --out {STUDY_DIR}/{wildcards.run} --resume "
        "--quiet > {log} 2>&1"


rule study_predict:  # priority: score a finished run before the next one trains
    priority: 10
    input:
        final=f"{STUDY_DIR}/{{run}}/final.pt",
        widerface=f"{DATA}/widerface",
    output:
        predictions=directory(f"{STUDY_DIR}/{{run}}/predict/predictions"),
        summary=f"{STUDY_DIR}/{{run}}/predict/summary.json",
    params:
        predict=config["predict"],
    log:
        f"logs/{STUDY_LOGS}/{{run}}/predict.log",
    threads: STUDY_EVAL_THREADS
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "featherface predict --params {PARAMS_FILE} --set \"predict.model=''\" "  # the architecture final.pt records
        "--set predict.weights={input.final} --out {STUDY_DIR}/{wildcards.run}/predict --quiet > {log} 2>&1"


rule study_score:
    priority: 10
    input:
        predictions=f"{STUDY_DIR}/{{run}}/predict/predictions",
        widerface=f"{DATA}/widerface",
    output:
        ap=f"{STUDY_DIR}/{{run}}/score/ap.json",
    params:
        score=config["score"],
        model=lambda w: STUDY_RUNS[w.run].model,
    log:
        f"logs/{STUDY_LOGS}/{{run}}/score.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface score --params {PARAMS_FILE} --set predict.model={params.model} "
        "--predictions {input.predictions} --out {STUDY_DIR}/{wildcards.run}/score > {log} 2>&1"


rule study_bypass:  # the same protocol with the attention bypassed (study.bypass; featherface.analysis.bypass)
    priority: 10
    input:
        final=f"{STUDY_DIR}/{{run}}/final.pt",
        widerface=f"{DATA}/widerface",
    output:
        ap=f"{STUDY_DIR}/{{run}}/bypass/ap.json",
    log:
        f"logs/{STUDY_LOGS}/{{run}}/bypass.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "featherface evaluate --weights {input.final} --images {input.widerface}/val/images --gt {input.widerface}/val "
        "--bypass-attention --out {STUDY_DIR}/{wildcards.run}/bypass --quiet > {log} 2>&1"


rule study_table:
    input:
        ap=expand(f"{STUDY_DIR}/{{run}}/score/ap.json", run=STUDY_RUNS),
        bypass=bypass_scores(),
    output:
        table=f"{STUDY_DIR}/table.md",
        json=f"{STUDY_DIR}/table.json",
    params:
        study=config.get("study", {}),
    log:
        f"logs/{STUDY_LOGS}/table.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "featherface study-table --params {PARAMS_FILE} > {log} 2>&1"
