"""The download stage: put WIDER FACE and the pretrained backbone into ``<data.root>`` in the pipeline's layout.

Two sources (``data.source``):

- ``gdown``: fetch each `featherface.data.sources.Source` into ``data.archive_dir`` (Google Drive through
  ``gdown``, other URLs through ``urllib``), resumable, skipping archives already present with the right
  checksum; check size and checksum (a bad file is moved aside to ``<name>.bad`` and the stage fails with
  the expected and actual values); extract each archive into a staging layout (``<archive_dir>/layout``,
  through a temporary folder on the same filesystem and a rename); then build ``<root>`` from it as below.
  (:mod:`featherface.data.archives`.)
- ``local``: build ``<root>`` from ``data.local_widerface`` / ``data.local_weights`` (the layout of
  ``../shared``), for offline machines and CI.

Building ``<root>/widerface`` (:mod:`featherface.data.layout`) applies the subset (the first
``data.train_images`` train images in sorted order with ``label.txt`` restricted to them, the first
``data.val_images`` val images; 0 keeps all; the ``.mat`` files are always whole). Files already present and
identical are kept, files no longer in the subset disappear, and the new tree is written into a temporary
folder and swapped in with renames, so an interrupted run never leaves a half-built tree. A run that changes
nothing touches nothing.

The stage ends by writing ``<root>/manifest.json``: every file with its size and sha256, the source, the
subset and the parameters. The library never prints: progress goes through a callback
``progress(done, total, what)``, messages through `logging`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

from featherface.config import DataConfig, resolve_path, to_dict
from featherface.data.archives import Downloader, GdownDownloader, extract_source, fetch_source
from featherface.data.layout import build_layout, copy_extra_weights, files_under
from featherface.data.sources import PRETRAIN_FILENAME, PRETRAIN_LAYOUT_PATH, SOURCES, Source
from featherface.utils.io import ProgressCallback, sha256_file, write_text_atomic

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "download"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def _hash_files(root: Path, rels: Iterable[str], progress: ProgressCallback | None) -> dict[str, dict[str, Any]]:
    """``{rel: {"size": bytes, "sha256": hex}}`` of the files `rels` (relative to `root`), in sorted order."""
    rels = sorted(rels)
    out: dict[str, dict[str, Any]] = {}
    for index, rel in enumerate(rels, start=1):
        path = root / rel
        out[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        if progress is not None:
            progress(index, len(rels), "checksums")
    return out


def _write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` atomically unless it already holds exactly that (a no-op run touches nothing)."""
    if path.is_file() and path.read_text() == text:
        return
    write_text_atomic(path, text)


def download(
    cfg: DataConfig,
    project_root: Path,
    *,
    downloader: Downloader | None = None,
    progress: ProgressCallback | None = None,
    sources: Sequence[Source] = SOURCES,
) -> Path:
    """Run the download stage and return the path of ``<root>/manifest.json``.

    Args:
        cfg: the ``data`` section of ``params.yaml``.
        project_root: the folder relative paths in `cfg` are resolved against (the parameter file's).
        downloader: fetches sources for ``source: gdown``; defaults to `GdownDownloader`.
        progress: ``progress(done, total, what)`` callback (bytes or files).
        sources: what the gdown source fetches (tests pass their own).

    Raises:
        DataSourceError: (local) a missing source folder or file, all of them named.
        DownloadError / ChecksumError: (gdown) a failed fetch, a bad archive, a size or checksum mismatch.
        LabelFormatError: the source ``label.txt`` is malformed (file and line named).
    """
    project_root = Path(project_root)
    root = resolve_path(cfg.root, project_root)
    if cfg.source == "local":
        widerface_src = resolve_path(cfg.local_widerface, project_root)
        weights_src = resolve_path(cfg.local_weights, project_root) / PRETRAIN_FILENAME
        summary = build_layout(widerface_src, weights_src, root, cfg, link=False, progress=progress)
        copy_extra_weights(resolve_path(cfg.local_weights, project_root), root, cfg.extra_weights)
        source_info: dict[str, Any] = {"kind": "local", "widerface": cfg.local_widerface, "weights": cfg.local_weights}
    elif cfg.source == "gdown":
        if cfg.extra_weights:
            raise ValueError(
                f"data.extra_weights {list(cfg.extra_weights)}: extra checkpoints have no official download; "
                "they are copied only with data.source: local (set data.extra_weights: [] for gdown)"
            )
        archive_dir = resolve_path(cfg.archive_dir, project_root)
        layout_dir = archive_dir / "layout"
        fetcher = downloader if downloader is not None else GdownDownloader()
        records = [fetch_source(s, archive_dir, fetcher, progress) for s in sources]
        for record in records:
            extract_source(record, layout_dir, progress)
        summary = build_layout(
            layout_dir / "widerface", layout_dir / PRETRAIN_LAYOUT_PATH, root, cfg, link=True, progress=progress
        )
        source_info = {
            "kind": "gdown",
            "archives": {
                r.source.name: {
                    "filename": r.source.filename,
                    "gdrive_id": r.source.gdrive_id,
                    "url": r.source.url,
                    "size": r.size,
                    "sha256": r.sha256,
                    "md5": r.md5,
                    "verified": r.verified,
                }
                for r in records
            },
        }
    else:  # pragma: no cover - DataConfig validates the literal
        raise ValueError(f"data.source: unknown source {cfg.source!r}")
    sync = summary.pop("sync")
    rels = [f"widerface/{rel}" for rel in files_under(root / "widerface")] + [PRETRAIN_LAYOUT_PATH]
    rels += [f"weights/{name}" for name in cfg.extra_weights]
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": source_info,
        "subset": summary,
        "params": to_dict(cfg),
        "files": _hash_files(root, rels, progress),
    }
    path = root / MANIFEST_NAME
    _write_if_changed(path, json.dumps(manifest, indent=2) + "\n")
    logger.info("download: %s (%s)", path, sync)
    return path
