# Data stages: download (or copy from a local folder) and verify.

DATA_CODE = py_files("featherface/data")


rule download:
    input:
        code=DATA_CODE + ["featherface/stages/download.py"],
    output:
        widerface=directory(f"{DATA}/widerface"),
        weights=directory(f"{DATA}/weights"),
        manifest=f"{DATA}/manifest.json",
        provenance=f"{DATA}/provenance.json",
    params:
        data=config["data"],
    log:
        "logs/download.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,  # minutes: the full WIDER FACE download (gdown) takes the longest
    shell:
        "featherface download --params {PARAMS_FILE} --quiet > {log} 2>&1"


rule verify:
    input:
        code=DATA_CODE + ["featherface/eval/ground_truth.py", "featherface/stages/verify.py"],
        widerface=f"{DATA}/widerface",
        weights=f"{DATA}/weights",
        manifest=f"{DATA}/manifest.json",
    output:
        report="results/verify/report.json",
        provenance="results/verify/provenance.json",
    params:
        data=config["data"],
        verify=config["verify"],
    log:
        "logs/verify.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "featherface verify --params {PARAMS_FILE} --quiet > {log} 2>&1"
