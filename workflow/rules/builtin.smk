# The built-in detector (issue 11): featherface_odconv_ssh taught by the fork's V1, in a chain of training phases, each
# predicted and scored on the val images, with the student's starting point (step 0: V1's weights transferred,
# deformable offsets dropped) scored too, so the README shows where accuracy is lost and regained. Run with
#   FEATHERFACE_PARAMS=params-builtin.yaml snakemake --cores 1 builtin
# Phase 1 reads params-builtin.yaml (the PARAMS_FILE); each later phase continues from the one before with its own
# parameter file (BUILTIN_PHASES): phase 1b (params-builtin-mimic2.yaml: the SSH again, on crops near the original
# scale, with the ground truth), phase 2 (params-builtin-finetune.yaml: the whole model, one epoch), phase 3
# (params-builtin-long.yaml: seven more epochs), phases 4 and 5 (params-builtin-long2.yaml, -long3.yaml: seven more
# each), and two twins of six more epochs from phase 5: phase 6 (params-builtin-long4.yaml, the same crops) and
# "zoom" (params-builtin-zoom.yaml, crops that also zoom out); phase 7, "zoom2" (params-builtin-zoom2.yaml), the
# zoom-out crops for six more epochs from phase 6; "zoom3" (params-builtin-zoom3.yaml), five more from "zoom" with the
# crops moved further out (the built-in weights of session 6); "zoom4" (params-builtin-zoom4.yaml), six more from it;
# "kd" and "kd6" (params-builtin-kd.yaml, -kd6.yaml), zoom4's recipe with the teacher's classification term weighted
# x3 and x6 (its box term x2); "kd2" (params-builtin-kd2.yaml), six more from "kd" at x6; "kdbox"
# (params-builtin-kdbox.yaml), six more from "kd" with the teacher's box term x5 on more priors; "kd3"
# (params-builtin-kd3.yaml), six more from "kd2" (the built-in weights of session 7) at x6, and its twin "kd3s1"
# (params-builtin-kd3s1.yaml) with another seed; "soup3", their weights averaged (featherface average, BUILTIN_SOUPS);
# "kd4" (params-builtin-kd4.yaml), six more from kd3 at x6, and its twin "kd4z" (params-builtin-kd4z.yaml) with crops
# that zoom out up to 3x (the built-in weights of session 8); "kd5z" (params-builtin-kd5z.yaml), six more from kd4z.
# "kd4zs1" and "kd4zs2" (params-builtin-kd4zs1.yaml, -kd4zs2.yaml): kd4z again with seeds 1 and 2; "kd5zs1"
# (params-builtin-kd5zs1.yaml): kd5z's recipe from kd4zs1 with seed 1; "kd4ze" (params-builtin-kd4ze.yaml): kd4z with
# a moving average of the weights (train.ema_decay) as its final.pt; "kd6zs1" (params-builtin-kd6zs1.yaml): six more
# epochs of kd5zs1's recipe from it, "kd6zs1s2" the same with seed 2, "kd7zs1" six more from kd6zs1 (the built-in
# weights); "kd6z4" (params-builtin-kd6z4.yaml): kd6zs1 with crops zoomed out up to 4x; "soup4" and "soup4z", the
# means of kd4 and kd4z, and of kd4z and kd4zs1.
# Training resumes from results/builtin/<phase>/last.pt after an interruption.

BUILTIN_DIR = "results/builtin"
# phase: (its parameter file, the phase whose final.pt it starts from)
BUILTIN_PHASES = {
    "mimic2": ("params-builtin-mimic2.yaml", "mimic"),
    "finetune": ("params-builtin-finetune.yaml", "mimic2"),
    "long": ("params-builtin-long.yaml", "finetune"),
    "long2": ("params-builtin-long2.yaml", "long"),
    "long3": ("params-builtin-long3.yaml", "long2"),
    "long4": ("params-builtin-long4.yaml", "long3"),
    "zoom": ("params-builtin-zoom.yaml", "long3"),
    "zoom2": ("params-builtin-zoom2.yaml", "long4"),
    "zoom3": ("params-builtin-zoom3.yaml", "zoom"),
    "zoom4": ("params-builtin-zoom4.yaml", "zoom3"),
    "kd": ("params-builtin-kd.yaml", "zoom3"),
    "kd6": ("params-builtin-kd6.yaml", "zoom3"),
    "kd2": ("params-builtin-kd2.yaml", "kd"),
    "kdbox": ("params-builtin-kdbox.yaml", "kd"),
    "kd3": ("params-builtin-kd3.yaml", "kd2"),
    "kd3s1": ("params-builtin-kd3s1.yaml", "kd2"),
    "kd4": ("params-builtin-kd4.yaml", "kd3"),
    "kd4z": ("params-builtin-kd4z.yaml", "kd3"),
    "kd5z": ("params-builtin-kd5z.yaml", "kd4z"),
    "kd4zs1": ("params-builtin-kd4zs1.yaml", "kd3"),
    "kd4zs2": ("params-builtin-kd4zs2.yaml", "kd3"),
    "kd5zs1": ("params-builtin-kd5zs1.yaml", "kd4zs1"),
    "kd4ze": ("params-builtin-kd4ze.yaml", "kd3"),
    "kd6zs1": ("params-builtin-kd6zs1.yaml", "kd5zs1"),
    "kd6z4": ("params-builtin-kd6z4.yaml", "kd5zs1"),
    "kd6zs1s2": ("params-builtin-kd6zs1s2.yaml", "kd5zs1"),
    "kd7zs1": ("params-builtin-kd7zs1.yaml", "kd6zs1"),
}
# phase: the phases whose final.pt weights it averages (a model soup)
BUILTIN_SOUPS = {
    "soup3": ("kd3", "kd3s1"),
    "soup4": ("kd4", "kd4z"),
    "soup4z": ("kd4z", "kd4zs1"),
}
BUILTIN_MODEL = config["train"]["model"]


wildcard_constraints:
    phase="|".join(("step0", "mimic", *BUILTIN_PHASES, *BUILTIN_SOUPS)),


rule builtin:
    input:
        expand(f"{BUILTIN_DIR}/{{phase}}/score/ap.json", phase=("step0", "mimic", *BUILTIN_PHASES, *BUILTIN_SOUPS)),


rule builtin_step0:
    output:
        final=f"{BUILTIN_DIR}/step0/final.pt",
    params:
        train=config["train"],
    log:
        "logs/builtin/step0.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface transfer --source-model {params.train[init_model]} --weights {params.train[init_weights]} "
        "--model {BUILTIN_MODEL} --seed {params.train[seed]} --out {output.final} > {log} 2>&1"


rule builtin_mimic:
    output:
        final=f"{BUILTIN_DIR}/mimic/final.pt",
    params:
        train=config["train"],
    log:
        "logs/builtin/mimic.log",
    threads: 8
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "featherface train --params {PARAMS_FILE} --out {BUILTIN_DIR}/mimic --resume auto --quiet > {log} 2>&1"


rule builtin_continue:
    input:
        previous=lambda wc: f"{BUILTIN_DIR}/{BUILTIN_PHASES[wc.phase][1]}/final.pt",
        params=lambda wc: BUILTIN_PHASES[wc.phase][0],
    output:
        final=f"{BUILTIN_DIR}/{{phase}}/final.pt",
    wildcard_constraints:
        phase="|".join(BUILTIN_PHASES),
    log:
        "logs/builtin/{phase}.log",
    threads: 8
    resources:
        gpu=0 if config["train"]["device"] == "cpu" else 1,
        mem_mb=16000,
        runtime=24 * 60,
    shell:
        "featherface train --params {input.params} --out {BUILTIN_DIR}/{wildcards.phase} --resume auto --quiet > {log} 2>&1"


rule builtin_soup:
    input:
        lambda wc: [f"{BUILTIN_DIR}/{phase}/final.pt" for phase in BUILTIN_SOUPS[wc.phase]],
    output:
        final=f"{BUILTIN_DIR}/{{phase}}/final.pt",
    wildcard_constraints:
        phase="|".join(BUILTIN_SOUPS),
    log:
        "logs/builtin/{phase}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "featherface average --weights {input} --out {output.final} > {log} 2>&1"


rule builtin_predict:
    priority: 10
    input:
        final=f"{BUILTIN_DIR}/{{phase}}/final.pt",
        widerface=f"{DATA}/widerface",
    output:
        predictions=directory(f"{BUILTIN_DIR}/{{phase}}/predict/predictions"),
        summary=f"{BUILTIN_DIR}/{{phase}}/predict/summary.json",
    params:
        predict=config["predict"],
    log:
        f"logs/builtin/{{phase}}/predict.log",
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "featherface predict --params {PARAMS_FILE} --set predict.model={BUILTIN_MODEL} "
        "--set predict.weights={input.final} --out {BUILTIN_DIR}/{wildcards.phase}/predict --quiet > {log} 2>&1"


rule builtin_score:
    priority: 10
    input:
        predictions=f"{BUILTIN_DIR}/{{phase}}/predict/predictions",
        widerface=f"{DATA}/widerface",
    output:
        ap=f"{BUILTIN_DIR}/{{phase}}/score/ap.json",
    params:
        score=config["score"],
    log:
        f"logs/builtin/{{phase}}/score.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface score --params {PARAMS_FILE} --set predict.model={BUILTIN_MODEL} "
        "--predictions {input.predictions} --out {BUILTIN_DIR}/{wildcards.phase}/score > {log} 2>&1"
