# Training stage: one model with the recipe of params.yaml (train section). `--resume auto`: after an
# interruption, running the pipeline again continues from last.pt (written every epoch); after a change of the
# train section, the old last.pt, metrics.csv (and final.pt, provenance.json when present) are kept aside as
# *.stale-<time>.* and training starts afresh. The folder is locked while a run writes to it.
# last.pt and metrics.csv are not declared outputs, so Snakemake never deletes them before a rerun (the metrics of
# the epochs before an interruption stay); final.pt marks the stage as done.
# Resources: one GPU (`gpu=1`: the SLURM profile turns it into --gpus=1; a local run ignores it and trains on
# what train.device finds), all the cores the run allows. On a CPU-only cluster: --set-resources train:gpu=0.
# Several GPUs on one node: the launcher is the config key train_command (default `featherface train`), e.g.
#   snakemake --cores all --config train_command="torchrun --nproc_per_node 4 -m featherface.train" \
#             --set-resources train:gpu=4
# (python -m featherface.train takes the same arguments; see the README, "Scaling up").

TRAIN_CODE = py_files(
    "featherface/train", "featherface/nn", "featherface/models", "featherface/data", "featherface/ops"
) + ["featherface/stages/train.py"]
TRAIN_COMMAND = config.get("train_command", "featherface train")


rule train:
    input:
        code=TRAIN_CODE,
        widerface=f"{DATA}/widerface",
        weights=f"{DATA}/weights",
        builtin=BUILTIN_WEIGHTS,  # train.init_weights: builtin
    output:
        final="results/train/final.pt",
        provenance="results/train/provenance.json",
    params:
        train=config["train"],
    log:
        "logs/train.log",
    threads: 8
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "{TRAIN_COMMAND} --params {PARAMS_FILE} --resume auto --quiet > {log} 2>&1"
