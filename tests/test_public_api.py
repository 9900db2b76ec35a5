"""The package's public API: the names of featherface/__init__.py, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import featherface


def test_public_names_resolve_to_their_modules():
    from featherface.config import load_params
    from featherface.inference.detector import FaceDetector
    from featherface.models.registry import create_model, list_models

    assert featherface.FaceDetector is FaceDetector
    assert featherface.create_model is create_model
    assert featherface.list_models is list_models
    assert featherface.load_params is load_params
    assert "featherface_odconv_ssh" in featherface.list_models()
    assert set(featherface.__all__) <= set(dir(featherface))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Detector'"):
        featherface.Detector  # noqa: B018


def test_importing_the_package_does_not_load_torch():
    code = "import sys, featherface; assert 'torch' not in sys.modules, 'torch loaded'; print(featherface.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == featherface.__version__
