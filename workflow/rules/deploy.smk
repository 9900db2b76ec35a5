# Deployment and report stages:
#   export     the predict section's model and weights to ONNX (dynamic batch / height / width, opset 19), checked
#              against eager PyTorch before it is written; results/export/<model>.onnx and summary.json (parity)
#   benchmark  a quick CPU latency measurement of that model (ONNX Runtime fp32, bare network and end to end, at 1
#              and 2 threads, 10 runs); results/benchmark/latency.json and latency.md
#   report     one Markdown document with the tables, plots and provenance of every stage; results/report/
# The export and benchmark settings are fixed here (and repeated in dvc.yaml: change both together); the
# --provenance flag records them, the git commit and the sha256 of the weights in each stage's provenance.json.

EXPORT_DIR = "results/export"
BENCHMARK_DIR = "results/benchmark"
REPORT_DIR = "results/report"
DEPLOY_MODEL = config["predict"]["model"]
DEPLOY_WEIGHTS = config["predict"]["weights"]
EXPORTED = f"{EXPORT_DIR}/{DEPLOY_MODEL}.onnx"

EXPORT_CODE = py_files("featherface/nn", "featherface/models", "featherface/ops") + [
    "featherface/export.py", "featherface/onnx_ops.py"
]
BENCHMARK_CODE = EXPORT_CODE + ["featherface/benchmark.py", "featherface/runtime.py", "featherface/postprocess.py"]


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
    shell:
        "featherface export {params.model} --weights {params.weights} --format onnx --opset 19 "
        "--input-size 640 640 --output {output.model} --summary {output.summary} --provenance"


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
    shell:
        "featherface benchmark --models {params.model} --weights {params.model}={params.weights} --no-retinaface "
        "--no-profile --no-torch --input-size 640 640 --threads 1 2 --runs 10 --warmup 2 "
        "--json {output.json} --markdown {output.markdown} --provenance"


rule report:
    input:
        code=py_files("featherface/report") + ["featherface/provenance.py"],
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
        "featherface report --params {PARAMS_FILE} --out {output.report}"
