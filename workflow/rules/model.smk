# Model stages: validate (build, budget, shapes, ODConv golden vectors), predict (val prediction files) and
# score (Easy / Medium / Hard AP, PR curves).

MODEL_CODE = py_files("featherface/nn", "featherface/models") + ["featherface/validate.py"]
DETECT_CODE = (
    py_files("featherface/nn", "featherface/models", "featherface/ops")
    + ["featherface/postprocess.py", "featherface/api.py", "featherface/images.py", "featherface/eval/predict.py"]
)


rule validate:
    input:
        code=MODEL_CODE,
    output:
        report="results/validate/report.json",
        provenance="results/validate/provenance.json",
    params:
        validate=config["validate"],
    shell:
        "featherface validate --params {PARAMS_FILE}"


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
    shell:
        "featherface predict --params {PARAMS_FILE} --quiet"


rule score:
    input:
        code=py_files("featherface/eval"),
        predictions="results/predict/predictions",
        widerface=f"{DATA}/widerface",
    output:
        ap="results/score/ap.json",
        plot="results/score/pr_curves.png",
        provenance="results/score/provenance.json",
    params:
        score=config["score"],
    shell:
        "featherface score --params {PARAMS_FILE}"
