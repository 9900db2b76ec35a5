# Deployment and report stages:
#   export     the predict section's model and weights to ONNX (dynamic batch / height / width, opset 19), checked
#              against eager PyTorch before it is written; results/export/<model>.onnx and summary.json (parity)
#   benchmark  a quick CPU latency measurement of that model (ONNX Runtime fp32, bare network and end to end, at 1
#              and 2 threads; about 10 s on 2 idle cores); results/benchmark/latency.json and latency.md
#   report     one Markdown document with the tables, plots and provenance of every stage; results/report/
# `featherface export` and `featherface benchmark` write no provenance.json themselves, so each rule ends with
# `python -m featherface.report record`, which writes one (parameters, git commit, sha256 of inputs and outputs).

import json

EXPORT_DIR = "results/export"
BENCHMARK_DIR = "results/benchmark"
REPORT_DIR = "results/report"
DEPLOY_MODEL = config["predict"]["model"]
DEPLOY_WEIGHTS = config["predict"]["weights"]
EXPORTED = f"{EXPORT_DIR}/{DEPLOY_MODEL}.onnx"

# The export settings (the `featherface export` defaults) and the benchmark's small counts. They are written into
# each stage's provenance.json and repeated in dvc.yaml; change both places together.
EXPORT_SETTINGS = {"format": "onnx", "opset": 19, "dynamic": True, "input_size": [640, 640]}
BENCHMARK_SETTINGS = {"input_size": [640, 640], "threads": [1, 2], "runs": 10, "warmup": 2, "torch_eager": False,
                      "profile": False, "peers": False}

EXPORT_CODE = py_files("featherface/nn", "featherface/models", "featherface/ops") + [
    "featherface/export.py", "featherface/onnx_ops.py"
]
BENCHMARK_CODE = EXPORT_CODE + ["featherface/benchmark.py", "featherface/runtime.py", "featherface/postprocess.py"]
PREDICT_KEYS = "--section predict.model --section predict.weights"


rule export:
    input:
        code=EXPORT_CODE,
        weights=produced_or_file(DEPLOY_WEIGHTS),
    output:
        model=EXPORTED,
        summary=f"{EXPORT_DIR}/summary.json",
        provenance=f"{EXPORT_DIR}/provenance.json",
    params:
        model=DEPLOY_MODEL,
        weights=DEPLOY_WEIGHTS,
        settings=json.dumps(EXPORT_SETTINGS),
        opset=EXPORT_SETTINGS["opset"],
        size=" ".join(map(str, EXPORT_SETTINGS["input_size"])),
    shell:
        "featherface export {params.model} --weights {params.weights} --format onnx --opset {params.opset} "
        "--input-size {params.size} --output {output.model} --summary {output.summary} "
        "&& python -m featherface.report record export --dir {EXPORT_DIR} --params {PARAMS_FILE} {PREDICT_KEYS} "
        "--value export={params.settings:q} --input {params.weights} --output {output.model}"


rule benchmark:
    input:
        code=BENCHMARK_CODE,
        weights=produced_or_file(DEPLOY_WEIGHTS),
        exported=EXPORTED,  # after a passing export: the benchmark times the same network and weights
    output:
        json=f"{BENCHMARK_DIR}/latency.json",
        markdown=f"{BENCHMARK_DIR}/latency.md",
        provenance=f"{BENCHMARK_DIR}/provenance.json",
    params:
        model=DEPLOY_MODEL,
        weights=DEPLOY_WEIGHTS,
        settings=json.dumps(BENCHMARK_SETTINGS),
        size=" ".join(map(str, BENCHMARK_SETTINGS["input_size"])),
        threads=" ".join(map(str, BENCHMARK_SETTINGS["threads"])),
        runs=BENCHMARK_SETTINGS["runs"],
        warmup=BENCHMARK_SETTINGS["warmup"],
    shell:
        "featherface benchmark --models {params.model} --weights {params.model}={params.weights} --no-retinaface "
        "--no-profile --no-torch --input-size {params.size} --threads {params.threads} --runs {params.runs} "
        "--warmup {params.warmup} --json {output.json} --markdown {output.markdown} "
        "&& python -m featherface.report record benchmark --dir {BENCHMARK_DIR} --params {PARAMS_FILE} "
        "{PREDICT_KEYS} --value benchmark={params.settings:q} --input {params.weights} --input {input.exported}"


rule report:
    input:
        code=["featherface/report.py", "featherface/provenance.py"],
        download=f"{DATA}/provenance.json",
        verify=["results/verify/report.json", "results/verify/provenance.json"],
        validate=["results/validate/report.json", "results/validate/provenance.json"],
        train=["results/train/final.pt", "results/train/provenance.json"],  # the report reads metrics.csv beside them
        predict=["results/predict/summary.json", "results/predict/provenance.json"],
        score=["results/score/ap.json", "results/score/pr_curves.png", "results/score/provenance.json"],
        export=[f"{EXPORT_DIR}/summary.json", f"{EXPORT_DIR}/provenance.json"],
        benchmark=[f"{BENCHMARK_DIR}/latency.json", f"{BENCHMARK_DIR}/provenance.json"],
    output:
        report=directory(REPORT_DIR),
    shell:
        "python -m featherface.report --results results --out {output.report} --data {DATA}"
