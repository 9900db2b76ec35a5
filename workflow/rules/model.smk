# Model stages: validate (build, budget, shapes, ODConv golden vectors), predict (val prediction files of the
# predict section's model: in the default pipeline, the train stage's checkpoint), score (Easy / Medium / Hard
# AP, PR curves) and references (the reference detectors of the references section on the same val images).

MODEL_CODE = py_files("featherface/nn", "featherface/models") + ["featherface/stages/validate.py"]
DETECT_CODE = (
    py_files("featherface/nn", "featherface/models", "featherface/ops")
    + ["featherface/inference/postprocess.py", "featherface/inference/detector.py", "featherface/inference/images.py",
       "featherface/inference/settings.py", "featherface/inference/np_ops.py", "featherface/inference/cache.py",
       "featherface/eval/predict.py", "featherface/stages/predict.py"]
)
def as_list(value):
    """A rule input that may be one path or a list of paths, as a list."""
    return value if isinstance(value, list) else [value]


PR_CSV = [f"results/score/pr/{setting}.csv" for setting in ("easy", "medium", "hard")]


rule validate:
    input:
        code=MODEL_CODE,
    output:
        report="results/validate/report.json",
        provenance="results/validate/provenance.json",
    params:
        validate=config["validate"],
    log:
        "logs/validate.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface validate --params {PARAMS_FILE} > {log} 2>&1"


rule predict:
    input:
        code=DETECT_CODE,
        images=f"{DATA}/widerface",
        weights=produced_or_file(config["predict"]["weights"]),
    output:
        predictions=directory("results/predict/predictions"),
        summary="results/predict/summary.json",
        provenance="results/predict/provenance.json",
    params:
        predict=config["predict"],
    log:
        "logs/predict.log",
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "featherface predict --params {PARAMS_FILE} --quiet > {log} 2>&1"


rule score:
    input:
        code=py_files("featherface/eval") + ["featherface/utils/figures.py", "featherface/stages/score.py"],
        predictions="results/predict/predictions",
        widerface=f"{DATA}/widerface",
    output:
        ap="results/score/ap.json",
        plot="results/score/pr_curves.png",
        pr_csv=PR_CSV,
        provenance="results/score/provenance.json",
    params:
        score=config["score"],
    log:
        "logs/score.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface score --params {PARAMS_FILE} > {log} 2>&1"


rule references:
    input:
        code=DETECT_CODE + py_files("featherface/eval") + [
            "featherface/stages/references.py", "featherface/inference/peers.py", "featherface/inference/onnx.py"
        ],
        widerface=f"{DATA}/widerface",
        weights=sorted({
            path
            for detector in config["references"]["detectors"] if detector["weights"]
            for path in as_list(produced_or_file(detector["weights"]))
        }),
    output:
        references="results/references/references.json",
        provenance="results/references/provenance.json",
    params:
        references=config["references"],
        protocol={key: config["predict"][key] for key in PredictConfig.PROTOCOL_KEYS},
        score=config["score"],
    log:
        "logs/references.log",
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
    shell:
        "featherface references --params {PARAMS_FILE} --quiet > {log} 2>&1"
