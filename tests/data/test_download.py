"""The download stage without network: a fake downloader serving in-memory archives, and the local source."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from featherface.config import DataConfig
from featherface.data import layout
from featherface.data.archives import ChecksumError, DownloadError
from featherface.data.download import download
from featherface.data.layout import DataSourceError
from featherface.data.labels import read_label_file, restrict_label_text
from featherface.data.sources import PRETRAIN_FILENAME, SOURCES, VAL_MAT_FILES, Extract, Source

LABEL_TEXT = "# 0--Parade/0_b.jpg\n1 2 3 4\n# 0--Parade/0_a.jpg\n5 6 7 8\n9 9 9 9\n# 1--Handshaking/1_c.jpg\n1 1 2 2\n"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_source(name: str, filename: str, data: bytes, kind: str, extract: tuple[Extract, ...], **kw) -> Source:
    checks = {"md5": hashlib.md5(data).hexdigest(), "size": len(data)}
    checks.update(kw)
    return Source(name=name, filename=filename, kind=kind, extract=extract, gdrive_id=f"id-{name}", **checks)


@pytest.fixture()
def served() -> dict[str, bytes]:
    """What the fake server holds, by file name."""
    return {
        "WIDER_train.zip": zip_bytes({
            "WIDER_train/images/0--Parade/0_a.jpg": b"image a" * 50,
            "WIDER_train/images/0--Parade/0_b.jpg": b"image b" * 50,
            "WIDER_train/images/1--Handshaking/1_c.jpg": b"image c" * 50,
        }),
        "WIDER_val.zip": zip_bytes({
            "WIDER_val/images/0--Parade/0_v1.jpg": b"val 1",
            "WIDER_val/images/0--Parade/0_v2.jpg": b"val 2",
        }),
        "eval_tools.zip": zip_bytes({f"eval_tools/ground_truth/{n}": n.encode() for n in VAL_MAT_FILES}
                                    | {"__MACOSX/eval_tools/._x": b"junk"}),
        "retinaface_gt_v1.1.zip": zip_bytes({"train/label.txt": LABEL_TEXT.encode(), "val/label.txt": b"# x\n"}),
        PRETRAIN_FILENAME: b"weights" * 100,
    }


@pytest.fixture()
def sources(served: dict[str, bytes]) -> list[Source]:
    mats = tuple(Extract(f"eval_tools/ground_truth/{n}", f"widerface/val/{n}") for n in VAL_MAT_FILES)
    return [
        make_source("train", "WIDER_train.zip", served["WIDER_train.zip"], "zip",
                    (Extract("WIDER_train/images/", "widerface/train/images"),)),
        make_source("val", "WIDER_val.zip", served["WIDER_val.zip"], "zip",
                    (Extract("WIDER_val/images/", "widerface/val/images"),)),
        # no checksum published for these two, as for the real ones
        Source("eval", "eval_tools.zip", "zip", mats, url="http://example.invalid/eval_tools.zip",
               layout_sha256=(("widerface/val/wider_face_val.mat",
                               hashlib.sha256(b"wider_face_val.mat").hexdigest()),)),
        Source("labels", "retinaface_gt_v1.1.zip", "zip", (Extract("train/label.txt", "widerface/train/label.txt"),),
               url="http://example.invalid/retinaface_gt_v1.1.zip"),
        make_source("weights", PRETRAIN_FILENAME, served[PRETRAIN_FILENAME], "file",
                    (Extract(PRETRAIN_FILENAME, f"weights/{PRETRAIN_FILENAME}"),),
                    sha256=hashlib.sha256(served[PRETRAIN_FILENAME]).hexdigest()),
    ]


class FakeDownloader:
    """Serves `files` by name into ``<dest>.part`` then renames it, resuming a partial ``.part``.

    `interrupt_at[name] = n` makes the next fetch of `name` stop after n bytes (partial file kept) and raise.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.interrupt_at: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []  # (file name, offset resumed from)

    def fetch(self, source: Source, dest: Path, progress) -> None:
        data = self.files[source.filename]
        part = dest.with_name(dest.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        self.calls.append((source.filename, offset))
        stop = self.interrupt_at.pop(source.filename, None)
        with open(part, "ab") as handle:
            handle.write(data[offset:stop])
        if progress is not None:
            progress(part.stat().st_size, len(data), source.filename)
        if stop is not None:
            raise DownloadError(f"{source.filename}: connection reset (test)")
        os.replace(part, dest)


def gdown_cfg(**kw) -> DataConfig:
    return DataConfig(**{"source": "gdown", "root": "data", "archive_dir": "data/archives",
                         "train_images": 2, "val_images": 0, **kw})


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_half_tree(root: Path) -> None:
    assert not (root / "widerface").exists()
    assert not (root / "weights").exists()
    assert not (root / "manifest.json").exists()
    assert not list(root.glob(".widerface.*"))


# ------------------------------------------------------------------------------------------------------
# gdown source with a fake downloader
# ------------------------------------------------------------------------------------------------------


def test_gdown_happy_path_builds_layout_and_manifest(tmp_path: Path, served, sources) -> None:
    fake = FakeDownloader(served)
    seen: list[tuple[int, int | None, str]] = []
    manifest_path = download(gdown_cfg(), tmp_path, downloader=fake, sources=sources,
                             progress=lambda d, t, w: seen.append((d, t, w)))
    root = tmp_path / "data"
    assert manifest_path == root / "manifest.json"
    files = tree(root / "widerface")
    assert sorted(files) == sorted([
        "train/images/0--Parade/0_a.jpg", "train/images/0--Parade/0_b.jpg", "train/label.txt",
        "val/images/0--Parade/0_v1.jpg", "val/images/0--Parade/0_v2.jpg",
        *(f"val/{n}" for n in VAL_MAT_FILES),
    ])
    # the first 2 train images in sorted order; label.txt restricted to them, in the file's order, verbatim
    assert files["train/label.txt"].decode() == "# 0--Parade/0_b.jpg\n1 2 3 4\n# 0--Parade/0_a.jpg\n5 6 7 8\n9 9 9 9\n"
    assert files["val/wider_easy_val.mat"] == b"wider_easy_val.mat"
    assert (root / "weights" / PRETRAIN_FILENAME).read_bytes() == served[PRETRAIN_FILENAME]
    manifest = json.loads(manifest_path.read_text())
    assert manifest["source"]["kind"] == "gdown"
    archives = manifest["source"]["archives"]
    assert archives["train"]["verified"] == "md5" and archives["eval"]["verified"] == "none"
    assert archives["weights"]["verified"] == "md5+sha256"
    assert archives["train"]["sha256"] == hashlib.sha256(served["WIDER_train.zip"]).hexdigest()
    assert manifest["subset"]["train_images"] == 2 and manifest["subset"]["train_images_available"] == 3
    assert manifest["subset"]["train_faces"] == 3 and manifest["params"]["source"] == "gdown"
    for rel, entry in manifest["files"].items():
        data = (root / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
    assert len(manifest["files"]) == len(files) + 1
    assert [name for name, _ in fake.calls] == [s.filename for s in sources]
    assert any(w == "WIDER_train.zip" for _, _, w in seen)


def test_gdown_rerun_skips_present_archives_and_touches_nothing(tmp_path: Path, served, sources) -> None:
    fake = FakeDownloader(served)
    manifest_path = download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}
    calls = len(fake.calls)
    assert download(gdown_cfg(), tmp_path, downloader=fake, sources=sources) == manifest_path
    assert len(fake.calls) == calls  # every archive present with the right checksum: nothing fetched
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert after == before


def test_gdown_resumes_a_partial_download(tmp_path: Path, served, sources) -> None:
    fake = FakeDownloader(served)
    fake.interrupt_at["WIDER_train.zip"] = 100
    with pytest.raises(DownloadError, match="connection reset"):
        download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    archives = tmp_path / "data" / "archives"
    assert (archives / "WIDER_train.zip.part").stat().st_size == 100
    assert not (archives / "WIDER_train.zip").exists()
    assert_no_half_tree(tmp_path / "data")
    download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    assert fake.calls[-len(sources):][0] == ("WIDER_train.zip", 100)  # continued, not restarted
    assert (archives / "WIDER_train.zip").read_bytes() == served["WIDER_train.zip"]
    assert not (archives / "WIDER_train.zip.part").exists()
    assert (tmp_path / "data" / "widerface" / "train" / "images" / "0--Parade" / "0_a.jpg").is_file()


def test_gdown_truncated_file_is_a_clear_error(tmp_path: Path, served, sources) -> None:
    good = served["WIDER_val.zip"]
    fake = FakeDownloader({**served, "WIDER_val.zip": good[: len(good) // 2]})
    with pytest.raises(ChecksumError) as info:
        download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    message = str(info.value)
    assert "WIDER_val.zip" in message and "truncated" in message
    assert f"{len(good) // 2} bytes, expected {len(good)}" in message
    archives = tmp_path / "data" / "archives"
    assert not (archives / "WIDER_val.zip").exists()
    assert (archives / "WIDER_val.zip.bad").is_file()  # moved aside, named in the message
    assert str(archives / "WIDER_val.zip.bad") in message
    assert_no_half_tree(tmp_path / "data")


def test_gdown_checksum_mismatch_is_a_clear_error(tmp_path: Path, served, sources) -> None:
    good = served["WIDER_train.zip"]
    corrupt = good[:-10] + b"\0" * 10
    fake = FakeDownloader({**served, "WIDER_train.zip": corrupt})
    with pytest.raises(ChecksumError) as info:
        download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    message = str(info.value)
    assert "WIDER_train.zip: md5 mismatch" in message
    assert hashlib.md5(corrupt).hexdigest() in message and hashlib.md5(good).hexdigest() in message
    assert (tmp_path / "data" / "archives" / "WIDER_train.zip.bad").read_bytes() == corrupt
    assert_no_half_tree(tmp_path / "data")


def test_gdown_bad_archive_already_present_is_replaced(tmp_path: Path, served, sources) -> None:
    archives = tmp_path / "data" / "archives"
    archives.mkdir(parents=True)
    (archives / "WIDER_val.zip").write_bytes(b"garbage")
    fake = FakeDownloader(served)
    download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    assert ("WIDER_val.zip", 0) in fake.calls
    assert (archives / "WIDER_val.zip").read_bytes() == served["WIDER_val.zip"]
    assert (archives / "WIDER_val.zip.bad").read_bytes() == b"garbage"


def test_gdown_unverifiable_archive_that_is_not_a_zip(tmp_path: Path, served, sources) -> None:
    fake = FakeDownloader({**served, "retinaface_gt_v1.1.zip": b"<html>quota exceeded</html>"})
    with pytest.raises(DownloadError, match="retinaface_gt_v1.1.zip: not a valid zip archive"):
        download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    assert (tmp_path / "data" / "archives" / "retinaface_gt_v1.1.zip.bad").is_file()
    assert_no_half_tree(tmp_path / "data")
    assert not list((tmp_path / "data" / "archives" / "layout").glob(".extract-*"))


def test_gdown_extracted_file_not_official(tmp_path: Path, served, sources) -> None:
    mats = {f"eval_tools/ground_truth/{n}": b"not official" for n in VAL_MAT_FILES}
    fake = FakeDownloader({**served, "eval_tools.zip": zip_bytes(mats)})
    with pytest.raises(ChecksumError, match="extracted widerface/val/wider_face_val.mat has sha256"):
        download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)
    assert_no_half_tree(tmp_path / "data")


def test_gdown_archive_missing_a_member(tmp_path: Path, served, sources) -> None:
    fake = FakeDownloader({**served, "retinaface_gt_v1.1.zip": zip_bytes({"val/label.txt": b""})})
    with pytest.raises(DownloadError, match="no member 'train/label.txt'"):
        download(gdown_cfg(), tmp_path, downloader=fake, sources=sources)


def test_real_sources_manifest_is_consistent() -> None:
    names = [s.name for s in SOURCES]
    assert len(set(names)) == len(names)
    for source in SOURCES:
        assert source.gdrive_id or source.url, source.name
        assert source.extract, source.name
        for value in (source.md5, source.sha256):
            assert value is None or all(c in "0123456789abcdef" for c in value)
        assert source.md5 is None or len(source.md5) == 32
        assert source.sha256 is None or len(source.sha256) == 64
    layout = {rule.dest for s in SOURCES for rule in s.extract}
    assert {"widerface/train/images", "widerface/val/images", "widerface/train/label.txt",
            f"weights/{PRETRAIN_FILENAME}", *(f"widerface/val/{n}" for n in VAL_MAT_FILES)} <= layout


def test_real_pretrain_checksum_matches_shared_copy(weights_dir: Path) -> None:
    source = next(s for s in SOURCES if s.filename == PRETRAIN_FILENAME)
    path = weights_dir / PRETRAIN_FILENAME
    assert path.stat().st_size == source.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == source.sha256


# ------------------------------------------------------------------------------------------------------
# local source
# ------------------------------------------------------------------------------------------------------


def local_cfg(widerface_dir: Path, weights_dir: Path, **kw) -> DataConfig:
    return DataConfig(**{"source": "local", "local_widerface": str(widerface_dir), "local_weights": str(weights_dir),
                         "root": "data", "train_images": 5, "val_images": 3, **kw})


def inodes(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_local_subset(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    manifest_path = download(local_cfg(widerface_dir, weights_dir), tmp_path)
    root = tmp_path / "data"
    train_all = sorted(p.relative_to(widerface_dir / "train" / "images").as_posix()
                       for p in (widerface_dir / "train" / "images").rglob("*.jpg"))
    val_all = sorted(p.relative_to(widerface_dir / "val" / "images").as_posix()
                     for p in (widerface_dir / "val" / "images").rglob("*.jpg"))
    files = sorted(inodes(root / "widerface"))
    assert [f[len("train/images/"):] for f in files if f.startswith("train/images/")] == train_all[:5]
    assert [f[len("val/images/"):] for f in files if f.startswith("val/images/")] == val_all[:3]
    for name in VAL_MAT_FILES:  # always whole
        assert (root / "widerface" / "val" / name).read_bytes() == (widerface_dir / "val" / name).read_bytes()
    for rel in train_all[:5]:
        copied = root / "widerface" / "train" / "images" / rel
        assert copied.read_bytes() == (widerface_dir / "train" / "images" / rel).read_bytes()
    original = (widerface_dir / "train" / "label.txt").read_text()
    label = (root / "widerface" / "train" / "label.txt").read_text()
    assert label == restrict_label_text(original, train_all[:5])
    assert [im.path for im in read_label_file(root / "widerface" / "train" / "label.txt")] == train_all[:5]
    assert (root / "weights" / PRETRAIN_FILENAME).read_bytes() == (weights_dir / PRETRAIN_FILENAME).read_bytes()
    manifest = json.loads(manifest_path.read_text())
    assert manifest["source"]["kind"] == "local"
    assert manifest["subset"]["train_images"] == 5 and manifest["subset"]["val_images"] == 3
    assert manifest["subset"]["train_images_available"] == 640 and manifest["subset"]["val_images_available"] == 233
    assert len(manifest["files"]) == 5 + 1 + 3 + 4 + 1
    assert manifest["files"]["widerface/train/label.txt"]["sha256"] == hashlib.sha256(label.encode()).hexdigest()


def test_local_all_images_copies_label_file_verbatim(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    download(local_cfg(widerface_dir, weights_dir, train_images=0, val_images=2), tmp_path)
    root = tmp_path / "data" / "widerface"
    assert (root / "train" / "label.txt").read_bytes() == (widerface_dir / "train" / "label.txt").read_bytes()
    assert len(list((root / "train" / "images").rglob("*.jpg"))) == 640


def test_local_rerun_is_a_noop_and_shrinking_removes_files(tmp_path: Path, widerface_dir: Path,
                                                           weights_dir: Path) -> None:
    cfg = local_cfg(widerface_dir, weights_dir)
    manifest_path = download(cfg, tmp_path)
    root = tmp_path / "data"
    before = inodes(root)
    tree_inode = (root / "widerface").stat().st_ino
    download(cfg, tmp_path)
    assert inodes(root) == before  # same files, same inodes, same mtimes (manifest included)
    assert (root / "widerface").stat().st_ino == tree_inode  # the tree was not rebuilt and swapped

    smaller = replace(cfg, train_images=2, val_images=1)
    download(smaller, tmp_path)
    now = inodes(root / "widerface")
    assert len([f for f in now if f.startswith("train/images/")]) == 2
    assert len([f for f in now if f.startswith("val/images/")]) == 1
    kept = [f for f in now if f.startswith("train/images/")]
    assert all(before[f"widerface/{f}"][0] == now[f][0] for f in kept)  # unchanged files were not re-copied
    assert len(read_label_file(root / "widerface" / "train" / "label.txt")) == 2
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["files"]) == 2 + 1 + 1 + 4 + 1
    assert not list(root.glob(".widerface.*"))


def test_local_changed_file_is_replaced(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    cfg = local_cfg(widerface_dir, weights_dir)
    download(cfg, tmp_path)
    target = tmp_path / "data" / "widerface" / "val" / "wider_easy_val.mat"
    target.write_bytes(b"edited")
    download(cfg, tmp_path)
    assert target.read_bytes() == (widerface_dir / "val" / "wider_easy_val.mat").read_bytes()


def test_local_interrupted_build_leaves_previous_tree(tmp_path: Path, widerface_dir: Path, weights_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = local_cfg(widerface_dir, weights_dir)
    download(cfg, tmp_path)
    root = tmp_path / "data"
    before = tree(root / "widerface")
    real = layout._materialize
    count = {"n": 0}

    def flaky(planned, target, link):
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt("simulated interruption")
        real(planned, target, link)

    monkeypatch.setattr(layout, "_materialize", flaky)
    with pytest.raises(KeyboardInterrupt):
        download(replace(cfg, train_images=8), tmp_path)
    assert tree(root / "widerface") == before  # the old, complete tree
    assert not list(root.glob(".widerface.*"))


def test_local_interrupted_first_build_leaves_nothing(tmp_path: Path, widerface_dir: Path, weights_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(planned, target, link):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(layout, "_materialize", broken)
    with pytest.raises(OSError, match="disk full"):
        download(local_cfg(widerface_dir, weights_dir), tmp_path)
    assert_no_half_tree(tmp_path / "data")


def test_local_missing_sources_are_named(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    with pytest.raises(DataSourceError, match="nowhere"):
        download(local_cfg(tmp_path / "nowhere", weights_dir), tmp_path)
    partial = tmp_path / "partial"
    (partial / "train" / "images").mkdir(parents=True)
    (partial / "val" / "images").mkdir(parents=True)
    (partial / "train" / "label.txt").write_text("")
    with pytest.raises(DataSourceError) as info:
        download(local_cfg(partial, tmp_path / "noweights"), tmp_path)
    message = str(info.value)
    assert str(partial / "val" / "wider_hard_val.mat") in message
    assert str(tmp_path / "noweights" / PRETRAIN_FILENAME) in message
    assert not (tmp_path / "data" / "widerface").exists()


def test_local_relative_paths_resolve_against_project_root(tmp_path: Path, widerface_dir: Path,
                                                           weights_dir: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    os.symlink(widerface_dir.parent.parent, tmp_path / "shared")
    cfg = local_cfg(Path("../shared/data/widerface"), Path("../shared/weights"), root="out/data")
    manifest = download(cfg, project)
    assert manifest == project / "out" / "data" / "manifest.json"
    assert json.loads(manifest.read_text())["params"]["local_widerface"] == "../shared/data/widerface"


def test_local_run_killed_between_renames_recovers(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    cfg = local_cfg(widerface_dir, weights_dir)
    download(cfg, tmp_path)
    root = tmp_path / "data"
    before = inodes(root / "widerface")
    # the state a kill between the two renames of the swap leaves: the old tree aside, a new one unfinished
    os.rename(root / "widerface", root / ".widerface.old-x1")
    (root / ".widerface.tmp-x2" / "train").mkdir(parents=True)
    download(cfg, tmp_path)
    assert inodes(root / "widerface") == before  # the old tree came back and was kept as is
    assert not list(root.glob(".widerface.*"))


def test_local_extra_weights_are_copied_and_listed(tmp_path: Path, widerface_dir: Path, weights_dir: Path) -> None:
    cfg = DataConfig(
        source="local", local_widerface=str(widerface_dir), local_weights=str(weights_dir), root=str(tmp_path / "d"),
        train_images=2, val_images=2, extra_weights=("featherface_v1_fork.pth",),
    )
    manifest = json.loads(download(cfg, tmp_path).read_text())
    assert (tmp_path / "d" / "weights" / "featherface_v1_fork.pth").is_file()
    assert "weights/featherface_v1_fork.pth" in manifest["files"]
    missing = DataConfig(**{**cfg.__dict__, "extra_weights": ("nope.pth",)})
    with pytest.raises(DataSourceError, match="nope.pth"):
        download(missing, tmp_path)
