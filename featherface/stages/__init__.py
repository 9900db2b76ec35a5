"""The pipeline's stages, one module each: every stage reads its sections of ``params.yaml`` and writes its outputs
with their ``provenance.json``.

Each module has a ``run(params, root, ...)`` that does the whole stage (``root`` is the project root: the folder
of the parameter file) and returns what the command line prints. The ``featherface`` command line
(:mod:`featherface.cli`), the Snakemake rules (``workflow/rules``) and ``dvc.yaml`` call these and nothing else.

=============  ==============================================  ================================================
stage          module                                          outputs
=============  ==============================================  ================================================
download       :mod:`featherface.stages.download`              ``<data.root>/`` (``manifest.json``)
verify         :mod:`featherface.stages.verify`                ``results/verify/report.json``
validate       :mod:`featherface.stages.validate`              ``results/validate/report.json``
train          :mod:`featherface.stages.train`                 ``results/train/final.pt``, ``metrics.csv``
predict        :mod:`featherface.stages.predict`               ``results/predict/predictions/``
score          :mod:`featherface.stages.score`                 ``results/score/ap.json``, PR curves
references     :mod:`featherface.stages.references`            ``results/references/references.json``
export         :mod:`featherface.stages.export`                ``results/export/<model>.onnx``
benchmark      :mod:`featherface.stages.benchmark`             ``results/benchmark/latency*.json``
report         :mod:`featherface.stages.report`                ``results/report/report.md``
study table    :mod:`featherface.stages.study`                 ``results/study/table.md``
=============  ==============================================  ================================================
"""
