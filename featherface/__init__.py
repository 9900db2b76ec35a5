"""FeatherFace ODConv: a lightweight face detector with omni-dimensional dynamic convolution.

The public API, imported on first use (so that ``import featherface`` and the torch-free runtime,
:mod:`featherface.inference.onnx`, do not load torch):

- :class:`FaceDetector` (:mod:`featherface.inference.detector`): the built-in or a trained detector on images;
- :func:`create_model`, :func:`list_models` (:mod:`featherface.models.registry`): the registered architectures;
- :func:`load_params` (:mod:`featherface.config`): ``params.yaml``, typed and validated.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "FaceDetector": "featherface.inference.detector",
    "create_model": "featherface.models.registry",
    "list_models": "featherface.models.registry",
    "load_params": "featherface.config",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'featherface' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_PUBLIC))
