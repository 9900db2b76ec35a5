# The FeatherFace ODConv pipeline: one rule per stage, each a thin call of the `featherface` CLI.
# Run:  snakemake --cores all            (the same stages as `dvc repro`, see dvc.yaml; a test keeps them equal)
# Parameters come from params.yaml (or the file named by $FEATHERFACE_PARAMS); a rule reruns when the parameter
# sections it reads, its inputs or its code change. Every rule writes its console output to logs/<rule>.log.
# Profiles: profiles/default (used by itself) and profiles/slurm (`snakemake --profile profiles/slurm`, needs
# the [cluster] extra); see the README, "Scaling up".

import os
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")

PARAMS_FILE = os.environ.get("FEATHERFACE_PARAMS", "params.yaml")


configfile: PARAMS_FILE


# The validated parameters with every default filled in (a section the file leaves out gets its defaults).
from featherface.config import PredictConfig, load_params, to_dict

config.update(to_dict(load_params(PARAMS_FILE)))

DATA = config["data"]["root"]


def py_files(*folders):
    """The Python sources of package folders: a rule reruns when its code changes."""
    return sorted(str(p) for folder in folders for p in Path(folder).glob("*.py"))


#: The built-in weights (package data), for train.init_weights / references weights `builtin`.
BUILTIN_WEIGHTS = sorted(str(p) for p in Path("featherface/weights").glob("*.pt"))


def produced_or_file(path):
    """A weights path as a rule input: the download stage's weights folder when the file is inside it (the
    folder is that rule's output), the built-in weights for `builtin`, else the file itself (e.g.
    results/train/final.pt, the train rule's output)."""
    if path == "builtin":
        return BUILTIN_WEIGHTS
    weights_dir = Path(DATA) / "weights"
    return str(weights_dir) if weights_dir in Path(path).parents else path


include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/study.smk"
include: "workflow/rules/builtin.smk"
include: "workflow/rules/deploy.smk"


rule all:
    input:
        "results/verify/report.json",
        "results/validate/report.json",
        "results/score/ap.json",
        "results/references/references.json",
        "results/train/final.pt",
        "results/export/summary.json",
        "results/benchmark/latency.json",
        "results/report",
