# Deployment and report stages:
#   export     the predict section's model and weights (the model the score stage measured) to ONNX with the
#              export: section's settings, checked against eager PyTorch before it is written;
#              results/export/<model>.onnx and summary.json (parity)
#   benchmark  a quick CPU latency measurement of that model with the benchmark: section's settings (ONNX Runtime,
#              bare network and end to end); results/benchmark/latency.json, latency.md and latency_ms.json (the
#              medians: DVC metrics)
#   report     one Markdown document with the tables, plots and provenance of every stage; results/report/
# Each stage's provenance.json records its settings, the git commit and the sha256 of the weights.

EXPORT_DIR = "results/export"
BENCHMARK_DIR = "results/benchmark"
REPORT_DIR = "results/report"
DEPLOY_MODEL = config["predict"]["model"]
DEPLOY_WEIGHTS = config["predict"]["weights"]
EXPORTED = f"{EXPORT_DIR}/{DEPLOY_MODEL}.onnx"

EXPORT_CODE = py_files("featherface/nn", "featherface/models", "featherface/ops") + [
    "featherface/deploy/export.py", "featherface/deploy/contract.py", "featherface/deploy/parity.py",
    "featherface/deploy/torchscript.py", "featherface/deploy/onnx_ops.py", "featherface/deploy/rewrites.py",
    "featherface/stages/export.py",
]
BENCHMARK_CODE = EXPORT_CODE + [
    "featherface/stages/benchmark.py", "featherface/deploy/benchmark.py", "featherface/deploy/benchmark_result.py",
    "featherface/deploy/profile.py", "featherface/deploy/timing.py", "featherface/deploy/accuracy.py",
    "featherface/deploy/openvino.py", "featherface/inference/onnx.py", "featherface/inference/np_ops.py",
    "featherface/inference/postprocess.py",
]


rule export:
    input:
        code=EXPORT_CODE,
        weights=produced_or_file(DEPLOY_WEIGHTS),
    output:
        model=EXPORTED,
        summary=f"{EXPORT_DIR}/summary.json",
        provenance=f"{EXPORT_DIR}/provenance.json",
    params:
        export=config["export"],
        model=DEPLOY_MODEL,
        weights=DEPLOY_WEIGHTS,
    log:
        "logs/export.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface export --params {PARAMS_FILE} > {log} 2>&1"


rule benchmark:
    input:
        code=BENCHMARK_CODE,
        weights=produced_or_file(DEPLOY_WEIGHTS),
        exported=EXPORTED,  # after a passing export: the benchmark times the same network and weights
    output:
        json=f"{BENCHMARK_DIR}/latency.json",
        markdown=f"{BENCHMARK_DIR}/latency.md",
        metrics=f"{BENCHMARK_DIR}/latency_ms.json",
        provenance=f"{BENCHMARK_DIR}/provenance.json",
    params:
        benchmark=config["benchmark"],
        model=DEPLOY_MODEL,
        weights=DEPLOY_WEIGHTS,
    log:
        "logs/benchmark.log",
    threads: max(config["benchmark"]["threads"])  # the whole measurement alone on its cores
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "featherface benchmark --params {PARAMS_FILE} > {log} 2>&1"


rule report:
    input:
        code=py_files("featherface/report") + [
            "featherface/eval/results.py", "featherface/eval/ground_truth.py",
            "featherface/utils/provenance.py", "featherface/utils/figures.py",
            "featherface/utils/provenance.py", "featherface/utils/io.py", "featherface/stages/report.py"
        ],
        download=f"{DATA}/provenance.json",
        verify=["results/verify/report.json", "results/verify/provenance.json"],
        validate=["results/validate/report.json", "results/validate/provenance.json"],
        train=["results/train/final.pt", "results/train/provenance.json"],  # the report reads metrics.csv beside them
        predict=["results/predict/summary.json", "results/predict/provenance.json"],
        score=["results/score/ap.json", "results/score/pr_curves.png", "results/score/provenance.json"],
        references=["results/references/references.json", "results/references/provenance.json"],
        export=[f"{EXPORT_DIR}/summary.json", f"{EXPORT_DIR}/provenance.json"],
        benchmark=[f"{BENCHMARK_DIR}/latency.json", f"{BENCHMARK_DIR}/provenance.json"],
    output:
        report=directory(REPORT_DIR),
    log:
        "logs/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "featherface report --params {PARAMS_FILE} --out {output.report} > {log} 2>&1"
