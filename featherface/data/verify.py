"""The verify stage: check a data folder before anything trains or scores on it.

Checks, each reported as a `Problem` (fails the stage) or a warning:

- structure: ``widerface/{train,val}/images``, ``train/label.txt``, the four ``val/*.mat`` files and
  ``weights/mobilenetV1X0.25_pretrain.tar``;
- counts: the expected number of train / val images (when given) and the minimums of `VerifyConfig`;
- checksums: every file listed in ``manifest.json`` (size and sha256) and the official files whose sha256
  is known (`featherface.data.sources.OFFICIAL_LAYOUT_SHA256`);
- images: every image decodes (``cv2.imdecode`` of the file's bytes); corrupt ones are named;
- labels: every line of ``label.txt`` parses (file:line), every image it lists exists; images without
  labels are warnings;
- val ground truth: the ``.mat`` files have ``event_list``, ``file_list``, ``face_bbx_list`` and each
  setting's ``gt_list`` with agreeing shapes, and every val image is in it (event / name lookup).

`verify` accepts either a download root (holding ``widerface/``, ``weights/`` and ``manifest.json``) or a
bare WIDER FACE folder (holding ``train/`` and ``val/``, e.g. ``../shared/data/widerface``); with a bare
folder the weights are checked only when given explicitly. The findings and their JSON file are
:mod:`featherface.data.verify_report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from scipy.io import loadmat

from featherface.config import VerifyConfig
from featherface.data.download import MANIFEST_NAME
from featherface.data.labels import count_faces, drop_degenerate_boxes, scan_label_file
from featherface.data.layout import files_under, list_images
from featherface.data.sources import OFFICIAL_LAYOUT_SHA256, PRETRAIN_LAYOUT_PATH, VAL_MAT_FILES
from featherface.data.verify_report import Problem, VerifyError, VerifyReport, write_report
from featherface.eval.ground_truth import GT_FILES, SETTINGS, mat_string
from featherface.utils.io import ProgressCallback, sha256_file

# The stage's API: `verify` and the report types it returns (defined in featherface.data.verify_report).
__all__ = ["Problem", "VerifyError", "VerifyReport", "verify", "write_report"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class _Layout:
    root: Path
    widerface: Path
    prefix: str  # path of `widerface` relative to `root`, "" or "widerface/"
    weights: Path | None
    manifest: Path | None


def _layout(data_root: Path, weights: Path | None) -> _Layout:
    if (data_root / "widerface").is_dir() or (data_root / MANIFEST_NAME).is_file():
        default_weights = data_root / PRETRAIN_LAYOUT_PATH
        return _Layout(data_root, data_root / "widerface", "widerface/", weights or default_weights,
                       data_root / MANIFEST_NAME)
    return _Layout(data_root, data_root, "", weights, None)


class _Checker:
    def __init__(self, layout: _Layout, cfg: VerifyConfig, progress: ProgressCallback | None) -> None:
        self.layout = layout
        self.cfg = cfg
        self.progress = progress
        self.report = VerifyReport(data_root=str(layout.root))

    # -- helpers ------------------------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.layout.root).as_posix()
        except ValueError:
            return str(path)

    def problem(self, kind: str, path: Path | str, message: str, line: int | None = None) -> None:
        p = Problem(kind, path if isinstance(path, str) else self.rel(path), message, line)
        logger.debug("problem: %s", p)
        self.report.problems.append(p)

    def warn(self, kind: str, path: Path | str, message: str, line: int | None = None) -> None:
        self.report.warnings.append(Problem(kind, path if isinstance(path, str) else self.rel(path), message, line))

    def tick(self, done: int, total: int | None, what: str) -> None:
        if self.progress is not None:
            self.progress(done, total, what)

    # -- checks -------------------------------------------------------------------------------------
    def structure(self) -> None:
        wf = self.layout.widerface
        if not wf.is_dir():
            self.problem("missing", wf, "WIDER FACE folder not found")
            return
        for folder in (wf / "train" / "images", wf / "val" / "images"):
            if not folder.is_dir():
                self.problem("missing", folder, "folder not found")
        if not (wf / "train" / "label.txt").is_file():
            self.problem("missing", wf / "train" / "label.txt", "train label file not found")
        for name in VAL_MAT_FILES:
            if not (wf / "val" / name).is_file():
                self.problem("missing", wf / "val" / name, "official val ground-truth file not found")
        if self.layout.weights is None:
            self.report.skipped.append("weights: a bare WIDER FACE folder was given and no weights file")
        elif not self.layout.weights.is_file():
            self.problem("missing", self.layout.weights, "pretrained backbone weights not found")

    def images(self, split: str) -> list[str]:
        return list_images(self.layout.widerface / split / "images")

    def counts(self, train: list[str], val: list[str], expected_train: int | None, expected_val: int | None) -> None:
        c = self.report.counts
        c["train_images"], c["val_images"] = len(train), len(val)
        for split, have, expected, minimum in (
            ("train", len(train), expected_train, self.cfg.min_train_images),
            ("val", len(val), expected_val, self.cfg.min_val_images),
        ):
            folder = f"{self.layout.prefix}{split}/images"
            if expected is not None and have != expected:
                self.problem("count", folder, f"{have} {split} images, expected {expected}")
            if have < minimum:
                self.problem("count", folder, f"{have} {split} images, fewer than the minimum {minimum}")

    def labels(self, train: list[str]) -> None:
        path = self.layout.widerface / "train" / "label.txt"
        if not path.is_file():
            return
        try:
            images, errors = scan_label_file(path)
        except UnicodeDecodeError as err:
            self.problem("label", path, f"not UTF-8 text ({err})")
            return
        for err in errors:
            self.problem("label", path, err.reason, err.line)
        on_disk = set(train)
        listed = set()
        for image in images:
            listed.add(image.path)
            if image.path not in on_disk:
                self.problem("missing-image", path, f"image {image.path!r} is listed but not in train/images",
                             image.line)
        unlabelled = sorted(on_disk - listed)
        for name in unlabelled:
            self.warn("unlabelled-image", f"{self.layout.prefix}train/images/{name}", "image has no entry in label.txt")
        faces, landmarked = count_faces(images)
        _, degenerate = drop_degenerate_boxes(images)
        c = self.report.counts
        c["train_label_images"], c["train_faces"], c["train_landmarked_faces"] = len(images), faces, landmarked
        c["train_degenerate_boxes"] = degenerate
        if degenerate:
            self.warn("degenerate-box", path, f"{degenerate} faces with w <= 0 or h <= 0 (dropped for training)")

    def read_images(self, train: list[str], val: list[str], want_sha: set[str]) -> dict[str, str]:
        """Decode every image (when configured) and hash those in `want_sha`; returns {rel: sha256}."""
        jobs = [(self.layout.widerface / split / "images" / name) for split, names in (("train", train), ("val", val))
                for name in names]
        decode = self.cfg.decode_images
        if not decode:
            self.report.skipped.append("image decoding: verify.decode_images is false")
        rels = [self.rel(p) for p in jobs]
        todo = [(p, r) for p, r in zip(jobs, rels) if decode or r in want_sha]
        if not todo:
            return {}

        def work(item: tuple[Path, str]) -> tuple[str, str | None, str | None]:
            path, rel = item
            try:
                data = path.read_bytes()
            except OSError as err:
                return rel, None, f"cannot read: {err}"
            digest = hashlib.sha256(data).hexdigest() if rel in want_sha else None
            if decode:
                if not data:
                    return rel, digest, "empty file"
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if image is None or image.size == 0:
                    return rel, digest, "does not decode as an image (corrupt or truncated)"
            return rel, digest, None

        digests: dict[str, str] = {}
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for index, (rel, digest, error) in enumerate(pool.map(work, todo), start=1):
                if digest is not None:
                    digests[rel] = digest
                if error is not None:
                    self.problem("corrupt-image", rel, error)
                self.tick(index, len(todo), "checking images")
        return digests

    def ground_truth(self, val: list[str]) -> None:
        val_dir = self.layout.widerface / "val"
        face_path = val_dir / GT_FILES["face"]
        if not face_path.is_file():
            self.report.skipped.append("val ground-truth lookup: wider_face_val.mat is missing")
            return

        def load(path: Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
            try:
                mat = loadmat(str(path))
            except Exception as err:  # scipy raises several types for a bad file
                self.problem("mat", path, f"cannot be read as a MATLAB file ({err})")
                return None
            missing = [k for k in keys if k not in mat]
            if missing:
                self.problem("mat", path, f"missing keys {missing}")
                return None
            return mat

        face = load(face_path, ("event_list", "file_list", "face_bbx_list"))
        if face is None:
            return
        events_arr, files_arr, boxes_arr = face["event_list"], face["file_list"], face["face_bbx_list"]
        n_events = events_arr.shape[0]
        if not (events_arr.ndim == files_arr.ndim == boxes_arr.ndim == 2) or not (
            events_arr.shape == files_arr.shape == boxes_arr.shape and events_arr.shape[1] == 1
        ):
            self.problem("mat", face_path, f"event_list {events_arr.shape}, file_list {files_arr.shape} and "
                         f"face_bbx_list {boxes_arr.shape} should all be (E, 1)")
            return
        events = [mat_string(events_arr[i, 0]) for i in range(n_events)]
        index: dict[tuple[str, str], tuple[int, int]] = {}
        for e in range(n_events):
            names, boxes = files_arr[e, 0], boxes_arr[e, 0]
            if names.shape[0] != boxes.shape[0]:
                self.problem("mat", face_path,
                             f"event {events[e]!r}: {names.shape[0]} files but {boxes.shape[0]} box lists")
                return
            for j in range(names.shape[0]):
                index[(events[e], mat_string(names[j, 0]))] = (e, j)

        settings: dict[str, Any] = {}
        for setting in SETTINGS:
            path = val_dir / GT_FILES[setting]
            if not path.is_file():
                continue
            mat = load(path, ("gt_list",))
            if mat is None:
                continue
            gt = mat["gt_list"]
            if gt.shape != events_arr.shape:
                self.problem("mat", path,
                             f"gt_list has shape {gt.shape}, wider_face_val.mat has {events_arr.shape} events")
                continue
            bad = [events[e] for e in range(n_events) if gt[e, 0].shape[0] != files_arr[e, 0].shape[0]]
            if bad:
                self.problem("mat", path, f"gt_list lengths differ from file_list for events {bad[:3]}")
                continue
            if "event_list" in mat and [mat_string(mat["event_list"][i, 0]) for i in range(n_events)] != events:
                self.problem("mat", path, "event_list differs from wider_face_val.mat")
                continue
            settings[setting] = gt

        c = self.report.counts
        c["val_gt_images"] = 0
        c["val_faces"] = 0
        for setting in settings:
            c[f"val_faces_{setting}"] = 0
        for name in val:
            parts = PurePosixPath(name).parts
            rel = f"{self.layout.prefix}val/images/{name}"
            if len(parts) != 2:
                self.problem("val-not-in-gt", rel, "val image not in the <event>/<name> layout")
                continue
            key = (parts[0], PurePosixPath(parts[1]).stem)
            if key not in index:
                self.problem("val-not-in-gt", rel,
                             f"no entry for event {key[0]!r}, file {key[1]!r} in wider_face_val.mat")
                continue
            e, j = index[key]
            n_boxes = np.size(boxes_arr[e, 0][j, 0]) // 4
            c["val_gt_images"] += 1
            c["val_faces"] += n_boxes
            for setting, gt in settings.items():
                keep = np.asarray(gt[e, 0][j, 0]).reshape(-1)
                if keep.size and (keep.min() < 1 or keep.max() > n_boxes):
                    self.problem("mat", f"{self.layout.prefix}val/{GT_FILES[setting]}",
                                 f"{key[0]}/{key[1]}: gt_list indices outside 1..{n_boxes}")
                c[f"val_faces_{setting}"] += int(keep.size)

    def checksums(self, image_digests: dict[str, str], manifest_files: dict[str, Any] | None) -> None:
        cache: dict[Path, str] = {}

        def digest_of(rel: str) -> str | None:
            if rel in image_digests:
                return image_digests[rel]
            path = self.layout.root / rel
            if not path.is_file():
                return None
            if path not in cache:
                cache[path] = sha256_file(path)
            return cache[path]

        result: dict[str, Any] = {}
        if manifest_files is not None:
            mismatches = 0
            for index, (rel, entry) in enumerate(sorted(manifest_files.items()), start=1):
                path = self.layout.root / rel
                if not path.is_file():
                    self.problem("checksum", rel, "listed in manifest.json but missing")
                    mismatches += 1
                    continue
                size = path.stat().st_size
                if isinstance(entry, dict) and entry.get("size") is not None and size != entry["size"]:
                    self.problem("checksum", rel, f"size {size} differs from manifest.json ({entry['size']})")
                    mismatches += 1
                    continue
                actual = digest_of(rel)
                recorded = entry.get("sha256") if isinstance(entry, dict) else entry
                if actual != recorded:
                    self.problem("checksum", rel, f"sha256 {actual} differs from manifest.json ({recorded})")
                    mismatches += 1
                self.tick(index, len(manifest_files), "checking manifest checksums")
            listed = set(manifest_files)
            present = {f"{self.layout.prefix}{p}" for p in files_under(self.layout.widerface)}
            for rel in sorted(present - listed):
                self.warn("manifest", rel, "present but not listed in manifest.json")
            result["manifest"] = {"path": self.rel(self.layout.manifest) if self.layout.manifest else None,
                                  "files_checked": len(manifest_files), "mismatches": mismatches}
        official: dict[str, str] = {}
        for layout_rel, expected in OFFICIAL_LAYOUT_SHA256.items():
            if layout_rel == PRETRAIN_LAYOUT_PATH:
                path = self.layout.weights
            else:
                inner = layout_rel[len("widerface/"):]
                path = self.layout.widerface / inner
            if path is None or not path.is_file():
                official[layout_rel] = "absent"
                continue
            actual = digest_of(self.rel(path))
            if actual == expected:
                official[layout_rel] = "ok"
            else:
                official[layout_rel] = "mismatch"
                self.problem("checksum-official", path, f"sha256 {actual} is not the official file's ({expected})")
        result["official"] = official
        self.report.checksums = result


def verify(
    data_root: Path,
    cfg: VerifyConfig,
    *,
    expected_train: int | None,
    expected_val: int | None,
    progress: ProgressCallback | None = None,
    weights: Path | None = None,
) -> VerifyReport:
    """Verify a data folder and return the report (it never raises for data problems; see
    `VerifyReport.raise_for_problems`).

    Args:
        data_root: a download root (``widerface/``, ``weights/``, ``manifest.json``) or a bare WIDER FACE
            folder (``train/``, ``val/``).
        cfg: the ``verify`` section of ``params.yaml``.
        expected_train / expected_val: the exact number of images required; None checks only the minimums.
        progress: ``progress(done, total, what)`` callback.
        weights: the backbone weights file to check (default ``<root>/weights/mobilenetV1X0.25_pretrain.tar``
            for a download root, none for a bare WIDER FACE folder).
    """
    start = time.perf_counter()
    data_root = Path(data_root).resolve()
    layout = _layout(data_root, Path(weights).resolve() if weights is not None else None)
    checker = _Checker(layout, cfg, progress)
    report = checker.report
    if not data_root.is_dir():
        checker.problem("missing", str(data_root), "data folder not found")
        report.elapsed_s = time.perf_counter() - start
        return report

    manifest_files: dict[str, Any] | None = None
    if layout.manifest is not None:
        if layout.manifest.is_file():
            try:
                data = json.loads(layout.manifest.read_text())
                manifest_files = data["files"]
                if not isinstance(manifest_files, dict):
                    raise TypeError("'files' is not a mapping")
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                checker.problem("manifest", layout.manifest, f"unreadable manifest ({err})")
                manifest_files = None
        else:
            checker.warn("manifest", layout.manifest, "no manifest.json: recorded checksums not checked")
    if manifest_files is None:
        report.skipped.append("manifest checksums: no readable manifest.json")

    checker.structure()
    train, val = checker.images("train"), checker.images("val")
    checker.counts(train, val, expected_train, expected_val)
    checker.labels(train)
    want_sha = set(manifest_files) if manifest_files else set()
    digests = checker.read_images(train, val, want_sha)
    checker.ground_truth(val)
    checker.checksums(digests, manifest_files)
    report.elapsed_s = time.perf_counter() - start
    logger.info("verify %s: %s, %d problems, %d warnings, %.1f s", data_root, "ok" if report.ok else "FAILED",
                len(report.problems), len(report.warnings), report.elapsed_s)
    return report

