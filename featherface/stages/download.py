"""The download stage: fetch WIDER FACE and the ImageNet backbone (or copy them from a local folder) into
``<data.root>`` (:func:`featherface.data.download.download`) and record the ``data:`` section with the manifest's
checksum in ``<data.root>/provenance.json``. Entry point: ``featherface download --params params.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from featherface.config import Params, to_dict
from featherface.data.download import download
from featherface.utils.io import ProgressCallback
from featherface.utils.provenance import write_record

__all__ = ["run"]


def run(params: Params, root: str | Path, progress: ProgressCallback | None = None) -> Path:
    """Download (or copy) the data of the ``data:`` section and return the path of ``<data.root>/manifest.json``.

    Args:
        params: the validated parameters (``data:`` section).
        root: the project root that relative paths are resolved against.
        progress: ``progress(done, total, what)`` for the downloads and copies.
    """
    manifest = download(params.data, Path(root), progress=progress)
    write_record(manifest.parent, "download", {"data": to_dict(params.data)}, inputs=[manifest])
    return manifest
