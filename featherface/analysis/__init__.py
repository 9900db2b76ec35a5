"""Analyses of trained models: the ODConv attentions (:mod:`~featherface.analysis.attention`, plots in
:mod:`~featherface.analysis.plots`) and evaluation with the attention switched off
(:mod:`~featherface.analysis.bypass`)."""
