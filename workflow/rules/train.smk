# Training stage: one model with the recipe of params.yaml (train section). After an interruption, continue
# by hand with `featherface train --resume` (last.pt is written every epoch and is not a declared output, so
# Snakemake never deletes it).

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
        metrics="results/train/metrics.csv",
        provenance="results/train/provenance.json",
    params:
        train=config["train"],
    shell:
        "featherface train --params {PARAMS_FILE} --quiet"
