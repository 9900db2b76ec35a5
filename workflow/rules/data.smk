# Data stages: download (or copy from a local folder) and verify.

DATA_CODE = py_files("featherface/data")


rule download:
    input:
        code=DATA_CODE,
    output:
        widerface=directory(f"{DATA}/widerface"),
        weights=directory(f"{DATA}/weights"),
        manifest=f"{DATA}/manifest.json",
        provenance=f"{DATA}/provenance.json",
    params:
        data=config["data"],
    shell:
        "featherface download --params {PARAMS_FILE} --quiet"


rule verify:
    input:
        code=DATA_CODE,
        widerface=f"{DATA}/widerface",
        weights=f"{DATA}/weights",
        manifest=f"{DATA}/manifest.json",
    output:
        report="results/verify/report.json",
        provenance="results/verify/provenance.json",
    params:
        data=config["data"],
        verify=config["verify"],
    shell:
        "featherface verify --params {PARAMS_FILE} --quiet"
