# The FeatherFace ODConv pipeline: one rule per stage, each a thin call of the `featherface` CLI.
# Run:  snakemake --cores all            (the same stages as `dvc repro`, see dvc.yaml)
# Parameters come from params.yaml (or the file named by $FEATHERFACE_PARAMS); a rule reruns when the parameter
# sections it reads, its inputs or its code change.

import os
from pathlib import Path

PARAMS_FILE = os.environ.get("FEATHERFACE_PARAMS", "params.yaml")


configfile: PARAMS_FILE


DATA = config["data"]["root"]


include: "workflow/rules/data.smk"


rule all:
    input:
        "results/verify/report.json",
