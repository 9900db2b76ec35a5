"""The verify stage on small trees built in tmp_path from a few shared images, and on the shared folder itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from featherface.config import DataConfig, VerifyConfig
from featherface.data.download import download
from featherface.data.sources import PRETRAIN_FILENAME
from featherface.data.verify import Problem, VerifyError, VerifyReport, verify, write_report

N_TRAIN, N_VAL = 4, 3


@pytest.fixture()
def data_root(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> Path:
    """A download root with the first 4 train and 3 val images of the shared folder, and its manifest."""
    cfg = DataConfig(source="local", local_widerface=str(widerface_dir), local_weights=str(weights_dir),
                     root="data", train_images=N_TRAIN, val_images=N_VAL)
    download(cfg, tmp_path)
    return tmp_path / "data"


def run(root: Path, **kw) -> VerifyReport:
    kw.setdefault("expected_train", N_TRAIN)
    kw.setdefault("expected_val", N_VAL)
    return verify(root, VerifyConfig(), **kw)


def kinds(report: VerifyReport) -> list[str]:
    return [p.kind for p in report.problems]


def first_image(root: Path, split: str) -> Path:
    return sorted((root / "widerface" / split / "images").rglob("*.jpg"))[0]


def test_happy_path(data_root: Path) -> None:
    calls: list[str] = []
    report = run(data_root, progress=lambda d, t, w: calls.append(w))
    assert report.ok, report.problems
    assert report.problems == [] and report.warnings == []
    c = report.counts
    assert (c["train_images"], c["train_label_images"], c["val_images"], c["val_gt_images"]) == (4, 4, 3, 3)
    labels = (data_root / "widerface" / "train" / "label.txt").read_text().splitlines()
    assert c["train_faces"] == sum(1 for line in labels if not line.startswith("#"))
    assert c["val_faces"] >= c["val_faces_hard"] >= 0
    assert report.checksums["manifest"] == {"path": "manifest.json", "files_checked": 4 + 1 + 3 + 4 + 1,
                                            "mismatches": 0}
    assert set(report.checksums["official"].values()) == {"ok"}
    assert "checking images" in calls
    report.raise_for_problems()  # no exception


def test_corrupt_image_is_named(data_root: Path) -> None:
    image = first_image(data_root, "val")
    image.write_bytes(image.read_bytes()[:1000])  # truncated JPEG
    report = run(data_root)
    rel = image.relative_to(data_root).as_posix()
    assert Problem("corrupt-image", rel, "does not decode as an image (corrupt or truncated)") in report.problems
    assert any(p.kind == "checksum" and p.path == rel for p in report.problems)  # the manifest disagrees too
    with pytest.raises(VerifyError) as info:
        report.raise_for_problems()
    assert rel in str(info.value) and info.value.report is report


def test_corrupt_image_found_without_manifest(data_root: Path) -> None:
    (data_root / "manifest.json").unlink()
    image = first_image(data_root, "train")
    image.write_bytes(b"\xff\xd8 not really a jpeg")
    report = run(data_root)
    assert kinds(report) == ["corrupt-image"]
    assert report.problems[0].path == image.relative_to(data_root).as_posix()
    assert any(w.kind == "manifest" for w in report.warnings)
    assert "manifest checksums: no readable manifest.json" in report.skipped


def test_missing_image_listed_in_label_file(data_root: Path) -> None:
    labels = data_root / "widerface" / "train" / "label.txt"
    lines = labels.read_text().splitlines()
    headers = [(i, line[2:].strip()) for i, line in enumerate(lines, start=1) if line.startswith("#")]
    line, name = headers[2]
    (data_root / "widerface" / "train" / "images" / name).unlink()
    report = run(data_root)
    missing = [p for p in report.problems if p.kind == "missing-image"]
    assert missing == [Problem("missing-image", "widerface/train/label.txt",
                               f"image {name!r} is listed but not in train/images", line)]
    assert Problem("count", "widerface/train/images", "3 train images, expected 4") in report.problems
    assert "widerface/train/label.txt:" + str(line) in str(VerifyError(report))


def test_malformed_label_line_reports_file_and_line(data_root: Path) -> None:
    labels = data_root / "widerface" / "train" / "label.txt"
    lines = labels.read_text().splitlines()
    lines[3] = "12 34 56"  # a face line with 3 numbers
    lines.insert(6, "1 2 x 4")
    labels.write_text("\n".join(lines) + "\n")
    report = run(data_root)
    label_problems = [(p.path, p.line) for p in report.problems if p.kind == "label"]
    assert label_problems == [("widerface/train/label.txt", 4), ("widerface/train/label.txt", 7)]
    assert "got 3" in report.problems[kinds(report).index("label")].message
    message = str(VerifyError(report))
    assert "widerface/train/label.txt:4:" in message and "widerface/train/label.txt:7:" in message


def test_missing_mat_file(data_root: Path) -> None:
    (data_root / "widerface" / "val" / "wider_hard_val.mat").unlink()
    report = run(data_root)
    assert Problem("missing", "widerface/val/wider_hard_val.mat", "official val ground-truth file not found") \
        in report.problems
    assert report.checksums["official"]["widerface/val/wider_hard_val.mat"] == "absent"
    assert "val_faces_hard" not in report.counts and report.counts["val_gt_images"] == N_VAL


def test_missing_face_mat_skips_lookup(data_root: Path) -> None:
    (data_root / "widerface" / "val" / "wider_face_val.mat").unlink()
    report = run(data_root)
    assert "missing" in kinds(report)
    assert any("wider_face_val.mat is missing" in s for s in report.skipped)


def test_unreadable_mat_file(data_root: Path) -> None:
    path = data_root / "widerface" / "val" / "wider_easy_val.mat"
    path.write_bytes(b"MATLAB? no")
    report = run(data_root)
    mat = [p for p in report.problems if p.kind == "mat"]
    assert len(mat) == 1 and mat[0].path == "widerface/val/wider_easy_val.mat"
    assert "checksum-official" in kinds(report)


def test_val_image_not_in_ground_truth(data_root: Path) -> None:
    src = first_image(data_root, "val")
    extra = src.parent / "not_a_wider_image.jpg"
    extra.write_bytes(src.read_bytes())
    report = run(data_root, expected_val=None)
    rel = extra.relative_to(data_root).as_posix()
    assert any(p.kind == "val-not-in-gt" and p.path == rel for p in report.problems)
    assert report.counts["val_images"] == N_VAL + 1 and report.counts["val_gt_images"] == N_VAL


def test_unlabelled_image_is_a_warning(data_root: Path) -> None:
    src = first_image(data_root, "train")
    (src.parent / "zz_extra.jpg").write_bytes(src.read_bytes())
    (data_root / "manifest.json").unlink()
    report = run(data_root, expected_train=None)
    assert report.ok
    assert any(w.kind == "unlabelled-image" and w.path.endswith("zz_extra.jpg") for w in report.warnings)


def test_counts_and_minimums(data_root: Path) -> None:
    report = verify(data_root, VerifyConfig(min_val_images=10), expected_train=5, expected_val=None)
    assert Problem("count", "widerface/train/images", "4 train images, expected 5") in report.problems
    assert Problem("count", "widerface/val/images", "3 val images, fewer than the minimum 10") in report.problems


def test_missing_weights_and_folder(data_root: Path, tmp_path: Path) -> None:
    (data_root / "weights" / PRETRAIN_FILENAME).unlink()
    report = run(data_root)
    expected = Problem("missing", f"weights/{PRETRAIN_FILENAME}", "pretrained backbone weights not found")
    assert expected in report.problems
    empty = verify(tmp_path / "nothing", VerifyConfig(), expected_train=None, expected_val=None)
    assert not empty.ok and empty.problems[0].kind == "missing"


def test_decode_can_be_disabled(data_root: Path) -> None:
    (data_root / "manifest.json").unlink()
    first_image(data_root, "val").write_bytes(b"garbage")
    report = verify(data_root, VerifyConfig(decode_images=False), expected_train=N_TRAIN, expected_val=N_VAL)
    assert report.ok and any("decode_images" in s for s in report.skipped)


def test_report_json_and_atomic_write(data_root: Path, tmp_path: Path) -> None:
    (data_root / "widerface" / "val" / "wider_medium_val.mat").unlink()
    report = run(data_root)
    out = tmp_path / "results" / "verify.json"
    write_report(report, out)
    data = json.loads(out.read_text())
    assert data["ok"] is False
    assert data["problems"][0] == {"kind": "missing", "path": "widerface/val/wider_medium_val.mat",
                                   "message": "official val ground-truth file not found"}
    assert data["counts"] == report.counts
    assert [p.name for p in out.parent.iterdir()] == ["verify.json"]  # no temporary file left


def test_problem_reads_like_its_json() -> None:
    p = Problem("label", "widerface/train/label.txt", "bad", 3)
    assert p["path"] == "widerface/train/label.txt" and p.get("line") == 3 and p.get("kind") == "label"
    assert Problem("missing", "x", "gone").get("line") is None and str(p) == "widerface/train/label.txt:3: bad [label]"


def test_error_message_names_first_problems_and_count() -> None:
    report = VerifyReport(data_root="/d", problems=[Problem("label", "l.txt", f"bad {i}", i) for i in range(1, 9)])
    message = str(VerifyError(report))
    assert "failed with 8 problem(s)" in message and "l.txt:1: bad 1" in message and "l.txt:5: bad 5" in message
    assert "l.txt:6" not in message and "and 3 more" in message


def test_shared_widerface(widerface_dir: Path, weights_dir: Path) -> None:
    start = time.perf_counter()
    report = verify(widerface_dir, VerifyConfig(), expected_train=640, expected_val=233,
                    weights=weights_dir / PRETRAIN_FILENAME)
    elapsed = time.perf_counter() - start
    assert report.ok, report.problems[:5]
    assert report.counts == {
        "train_images": 640, "val_images": 233, "train_label_images": 640, "train_faces": 20521,
        "train_landmarked_faces": 6907, "train_degenerate_boxes": 4, "val_gt_images": 233, "val_faces": 7358,
        "val_faces_easy": 563, "val_faces_medium": 1409, "val_faces_hard": 5777,
    }
    assert set(report.checksums["official"].values()) == {"ok"}
    assert [w.kind for w in report.warnings] == ["degenerate-box"]
    assert elapsed < 60
