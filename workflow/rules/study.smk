# The study: several models trained with one recipe (the train: section), each predicted and scored on the val
# images, then one table. The runs are the `study: runs:` list of the parameter file (MODEL:INIT pairs); see
# params-study.yaml and the README. Run it with
#   FEATHERFACE_PARAMS=params-study.yaml snakemake --cores 1 study
# Training is resumable: an interrupted run continues from results/study/<run>/last.pt on the next call
# (a changed train: section makes the resume refuse with a message; delete the run's folder to start over).
# Code changes do not retrain a run (the runs take hours); force one with `snakemake -R study_train`. Every
# output folder holds a provenance.json with the git commit and the parameters it was made with.

STUDY_RUNS = {
    f"{model}-{init}": (model, init)
    for model, init in (run.split(":", 1) for run in config.get("study", {}).get("runs", []))
}
STUDY_DIR = "results/study"
FINE_TUNE_EPOCHS = config.get("study", {}).get("fine_tune_epochs", 0)


def study_epochs(wildcards):
    """`--set train.epochs=N` for the warm-started runs when study.fine_tune_epochs is set."""
    init = STUDY_RUNS[wildcards.run][1]
    return f"--set train.epochs={FINE_TUNE_EPOCHS}" if init == "fork_trunk" and FINE_TUNE_EPOCHS else ""


wildcard_constraints:
    run="|".join(STUDY_RUNS) or "no-study-runs",


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
        model=lambda w: STUDY_RUNS[w.run][0],
        init=lambda w: STUDY_RUNS[w.run][1],
        epochs=study_epochs,
        fine_tune_epochs=FINE_TUNE_EPOCHS,
    log:
        f"logs/study/{{run}}/train.log",
    threads: 8
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "featherface train --params {PARAMS_FILE} --set train.model={params.model} --set train.init={params.init} "
        "{params.epochs} --out {STUDY_DIR}/{wildcards.run} --resume --quiet > {log} 2>&1"


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
        model=lambda w: STUDY_RUNS[w.run][0],
    log:
        f"logs/study/{{run}}/predict.log",
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "featherface predict --params {PARAMS_FILE} --set predict.model={params.model} "
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
        model=lambda w: STUDY_RUNS[w.run][0],
    log:
        f"logs/study/{{run}}/score.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface score --params {PARAMS_FILE} --set predict.model={params.model} "
        "--predictions {input.predictions} --out {STUDY_DIR}/{wildcards.run}/score > {log} 2>&1"


rule study_table:
    input:
        ap=expand(f"{STUDY_DIR}/{{run}}/score/ap.json", run=STUDY_RUNS),
    output:
        table=f"{STUDY_DIR}/table.md",
        json=f"{STUDY_DIR}/table.json",
    params:
        study=config.get("study", {}),
    log:
        "logs/study/table.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "featherface study-table --params {PARAMS_FILE} --out {STUDY_DIR} > {log} 2>&1"
