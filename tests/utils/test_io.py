"""Tests of featherface.utils.io: atomic writes keep the old content on failure, digests, leftover temporaries."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from featherface.utils import io


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = os.urandom(3000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert io.sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()
    assert io.sha256_file(path, chunk_bytes=7) == hashlib.sha256(data).hexdigest()


def test_write_json_atomic_round_trip_and_permissions(tmp_path):
    path = tmp_path / "deep" / "folder" / "out.json"
    io.write_json_atomic(path, {"a": 1, "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1, "p": str(tmp_path)}
    assert path.stat().st_mode & 0o777 == io.default_file_mode()
    assert list(path.parent.iterdir()) == [path]


def test_failed_write_keeps_old_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    io.write_text_atomic(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_target(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_target_keeps_the_suffix_and_fsyncs(tmp_path):
    path = tmp_path / "clip.mp4"
    with io.atomic_target(path, suffix=".mp4", fsync=True) as tmp:
        assert tmp.suffix == ".mp4" and tmp.parent == tmp_path and tmp.name.startswith(".clip.mp4.")
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x"


def test_leftover_temps_finds_only_this_files_temporaries(tmp_path):
    path = tmp_path / "a.jpg"
    mine = [io.temp_beside(path), io.temp_beside(path, suffix=".jpg")]
    other = io.temp_beside(tmp_path / "b.jpg")
    (tmp_path / ".a.jpg.not-a-temp").write_text("")
    found = io.leftover_temps(path)
    assert sorted(found) == sorted(mine)
    assert other not in found
    assert io.leftover_temps(tmp_path / "missing" / "a.jpg") == []


def test_replace_dir_swaps_in_a_complete_folder(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    staging = tmp_path / "out.tmp"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    assert io.replace_dir(staging, dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_puts_the_old_folder_back_when_the_move_fails(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(OSError):
        io.replace_dir(tmp_path / "missing", dest)
    assert (dest / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
