"""The built-in weights: a FeatherFace model trained by this project, shipped as package data.

``builtin_weights()`` is the checkpoint file (our format: it records its architecture, so
``FaceDetector.from_pretrained(None, builtin_weights())`` rebuilds the right model); ``MODEL_CARD.md`` beside it
says what it was trained on, with which recipe and command, and the AP it reaches.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUILTIN_CHECKPOINT", "MODEL_CARD", "builtin_weights"]

#: File names inside this package folder.
BUILTIN_CHECKPOINT = "featherface_odconv_ssh.pt"
MODEL_CARD = "MODEL_CARD.md"


def builtin_weights() -> Path:
    """The built-in checkpoint's path.

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    path = Path(__file__).resolve().parent / BUILTIN_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"the built-in weights {path} are missing: reinstall featherface with its package data, or pass --weights"
        )
    return path
