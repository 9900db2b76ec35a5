"""pack_train_folders: merged, downscaled, re-encoded, labels scaled to match."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from featherface.data.labels import read_label_file
from featherface.data.pack import pack_train_folders, scale_face_line


def _folder(root: Path, name: str, size: tuple[int, int], label: str) -> Path:
    (root / "images" / "0--Parade").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "0--Parade" / name), np.full((*size, 3), 128, np.uint8))
    (root / "label.txt").write_text(f"# 0--Parade/{name}\n{label}\n")
    return root


def test_scale_face_line_by_hand() -> None:
    line = "10 20 30 40 1 2 0.0 3 4 1.0 -1 -1 -1.0 5 6 0.0 7 8 1.0 0.5"
    assert scale_face_line(line, 0.5).split() == [
        "5", "10", "15", "20", "0.5", "1", "0", "1.5", "2", "1", "-1.0", "-1.0", "-1.0", "2.5", "3", "0", "3.5", "4",
        "1", "0.5"]


def test_pack_merges_downscales_and_scales_labels(tmp_path: Path) -> None:
    big = _folder(tmp_path / "a", "big.jpg", (400, 2000), "100 50 200 100 " + " ".join(["-1"] * 16))
    small = _folder(tmp_path / "b", "small.jpg", (100, 200), "10 10 20 20")
    summary = pack_train_folders([big, small], tmp_path / "out", max_side=1000, quality=50)
    assert summary.images == 2 and summary.downscaled == 1 and summary.bytes > 0
    assert cv2.imread(str(tmp_path / "out/images/0--Parade/big.jpg")).shape[:2] == (200, 1000)
    labels = {im.path: im for im in read_label_file(tmp_path / "out" / "label.txt")}
    assert labels["0--Parade/big.jpg"].boxes.tolist() == [[50, 25, 100, 50]]
    assert not labels["0--Parade/big.jpg"].has_landmarks.any()
    assert labels["0--Parade/small.jpg"].boxes.tolist() == [[10, 10, 20, 20]]  # not downscaled


def test_pack_refuses_an_image_listed_twice(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", "x.jpg", (10, 10), "1 1 2 2")
    b = _folder(tmp_path / "b", "x.jpg", (10, 10), "1 1 2 2")
    with pytest.raises(ValueError, match="more than one folder"):
        pack_train_folders([a, b], tmp_path / "out")
