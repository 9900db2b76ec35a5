"""The RetinaFace label.txt reader: values, malformed lines (with line numbers), degenerate boxes, the real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featherface.data.labels import (
    LabelFormatError,
    count_faces,
    drop_degenerate_boxes,
    label_file_blocks,
    parse_label_lines,
    read_label_file,
    restrict_label_text,
    scan_label_file,
)

GOOD = """\
# 0--Parade/a.jpg
10 20 30 40 15.0 25.0 0.0 35.0 25.0 0.0 25.0 35.0 1.0 18.0 45.0 0.0 32.0 45.0 0.0 0.82
5 6 7 8 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0

# 1--Handshaking/b.jpg
1.5 2.5 3 4
# 1--Handshaking/empty.jpg
"""


def write(tmp_path: Path, text: str, name: str = "label.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_boxes_landmarks_and_masks(tmp_path: Path) -> None:
    images = read_label_file(write(tmp_path, GOOD))
    assert [im.path for im in images] == ["0--Parade/a.jpg", "1--Handshaking/b.jpg", "1--Handshaking/empty.jpg"]
    assert [im.line for im in images] == [1, 5, 7]
    a, b, empty = images
    assert a.boxes.dtype == np.float32 and a.boxes.shape == (2, 4)
    np.testing.assert_array_equal(a.boxes, [[10, 20, 30, 40], [5, 6, 7, 8]])
    assert a.landmarks.shape == (2, 5, 2) and a.landmarks.dtype == np.float32
    np.testing.assert_array_equal(a.landmarks[0], [[15, 25], [35, 25], [25, 35], [18, 45], [32, 45]])
    np.testing.assert_array_equal(a.landmarks[1], np.full((5, 2), -1.0))
    np.testing.assert_array_equal(a.has_landmarks, [True, False])
    np.testing.assert_array_equal(a.visibility[0], [0, 0, 1, 0, 0])
    np.testing.assert_allclose(a.blur, [0.82, -1.0])
    # boxes-only line: landmarks absent, blur unknown
    np.testing.assert_array_equal(b.boxes, [[1.5, 2.5, 3, 4]])
    assert not b.has_landmarks[0] and np.all(b.landmarks == -1) and b.blur[0] == -1
    assert empty.num_faces == 0 and empty.boxes.shape == (0, 4) and empty.landmarks.shape == (0, 5, 2)
    assert count_faces(images) == (3, 1)


def test_partially_negative_landmarks_still_count_as_landmarks() -> None:
    # A face at the image border has landmarks with x < 0: only "all -1" means "no landmarks".
    line = "0 10 20 20 -3.0 12.0 1.0 5.0 12.0 1.0 2.0 18.0 1.0 -2.0 24.0 1.0 6.0 24.0 1.0 0.5"
    (image,) = parse_label_lines(["# e/x.jpg", line])
    assert image.has_landmarks.tolist() == [True]
    assert image.landmarks[0, 0].tolist() == [-3.0, 12.0]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("10 20 30 40\n# e/a.jpg\n", 1, "before any"),
        ("# e/a.jpg\n10 20 30 40\n1 2 3 4 5\n", 3, "got 5"),
        ("# e/a.jpg\n" + " ".join(["1"] * 21) + "\n", 2, "got 21"),
        ("# e/a.jpg\n\n10 20 abc 40\n", 3, "field 3 is not a number: 'abc'"),
        ("# e/a.jpg\n10 20 30 nan\n", 2, "field 4 is not finite"),
        ("# e/a.jpg\n10 20 inf 40\n", 2, "field 3 is not finite"),
        ("# e/a.jpg\n#\n", 2, "without an image path"),
        ("# e/a.jpg\n# ../etc/passwd\n", 2, "must be relative"),
        ("# e/a.jpg\n1 2 3 4\n# e/a.jpg\n", 3, "already listed at line 1"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LabelFormatError) as info:
        read_label_file(path)
    assert info.value.line == line
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert fragment in str(info.value)


def test_scan_collects_every_malformed_line(tmp_path: Path) -> None:
    text = "1 2 3 4\n# e/a.jpg\n1 2 3 4\n1 2 x 4\n# e/b.jpg\n1 2 3\n5 6 7 8\n"
    images, errors = scan_label_file(write(tmp_path, text))
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [
        (1, "face line before any '# <image path>' header"),
        (4, "field 3 is not a number"),
        (6, "expected 20 numbers (box, 5 landmarks, blur) or 4 (box only), got 3"),
    ]
    assert [(im.path, im.num_faces) for im in images] == [("e/a.jpg", 1), ("e/b.jpg", 1)]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_label_file(tmp_path / "nothere.txt")


def test_drop_degenerate_boxes_counts_what_it_drops() -> None:
    lines = ["# e/a.jpg", "0 0 10 10", "0 0 0 5", "1 1 5 -2", "# e/b.jpg", "2 2 3 3"]
    images = parse_label_lines(lines)
    kept, dropped = drop_degenerate_boxes(images)
    assert dropped == 2
    np.testing.assert_array_equal(kept[0].boxes, [[0, 0, 10, 10]])
    assert kept[0].landmarks.shape == (1, 5, 2) and kept[0].has_landmarks.shape == (1,)
    assert kept[1] is images[1]  # untouched images are passed through
    assert images[0].num_faces == 3  # the input is not modified


def test_restrict_label_text_keeps_lines_verbatim() -> None:
    text = "# e/a.jpg\n1 2 3 4\n# e/b.jpg\n5.000 6 7 8\n9 9 9 9\n# e/c.jpg\n"
    assert [name for name, _ in label_file_blocks(text)] == ["e/a.jpg", "e/b.jpg", "e/c.jpg"]
    assert "".join(block for _, block in label_file_blocks(text)) == text
    assert restrict_label_text(text, ["e/b.jpg", "e/c.jpg"]) == "# e/b.jpg\n5.000 6 7 8\n9 9 9 9\n# e/c.jpg\n"
    assert restrict_label_text(text, []) == ""


def test_real_label_file_counts(widerface_dir: Path) -> None:
    images = read_label_file(widerface_dir / "train" / "label.txt")
    assert len(images) == 640
    assert count_faces(images) == (20521, 6907)
    assert all(im.path.count("/") == 1 for im in images)
    # every listed image is on disk
    assert all((widerface_dir / "train" / "images" / im.path).is_file() for im in images)
    kept, dropped = drop_degenerate_boxes(images)
    assert dropped == 4 and count_faces(kept)[0] == 20521 - 4
