# Training stage: one model with the recipe of params.yaml (train section). `--resume auto`: after an
# interruption, running the pipeline again continues from last.pt (written every epoch); after a change of the
# train section, the old last.pt, metrics.csv (and final.pt, provenance.json when present) are kept aside as
# *.stale-<time>.* and training starts afresh. The folder is locked while a run writes to it.
# last.pt and metrics.csv are not declared outputs, so Snakemake never deletes them before a rerun (the metrics of
# the epochs before an interruption stay); final.pt marks the stage as done.

TRAIN_CODE = py_files(
    "featherface/train", "featherface/nn", "featherface/models", "featherface/data", "featherface/ops"
) + ["featherface/loss.py"]


rule train:
    input:
        code=TRAIN_CODE,
        widerface=f"{DATA}/widerface",
        weights=f"{DATA}/weights",
    output:
        final="results/train/final.pt",
        provenance="results/train/provenance.json",
    params:
        train=config["train"],
    shell:
        "featherface train --params {PARAMS_FILE} --resume auto --quiet"
