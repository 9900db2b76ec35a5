"""Reading and writing official WIDER FACE prediction files (`<event>/<name>.txt`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from featherface.eval.prediction_files import (
    PredictionFileError,
    read_prediction_file,
    read_prediction_folder,
    write_prediction_file,
    write_prediction_folder,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    floats = np.column_stack([rng.random((40, 2)) * 1000 - 100, rng.random((40, 2)) * 300, rng.random(40)])
    floats[:, 4] /= 3.0  # scores with full 53-bit mantissas
    ints = np.round(floats * [1, 1, 1, 1, 0]) + [0, 0, 0, 0, 0.5]
    preds = {
        "0--Parade/0_Parade_a_1": floats,
        "0--Parade/0_Parade_b_2": ints,
        "1--Handshaking/1_Handshaking_c_3": np.zeros((0, 5)),
        "1--Handshaking/1_Handshaking_d_4": np.array([[1e-300, 5e20, 0.0, 0.0, 1.0]]),
    }
    written = write_prediction_folder(preds, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [f"{k}.txt" for k in sorted(preds)]
    back = read_prediction_folder(tmp_path)
    assert list(back) == sorted(preds)
    for key, dets in preds.items():
        assert back[key].dtype == np.float64 and back[key].shape == dets.shape
        assert np.array_equal(back[key], dets), key


def test_written_layout(tmp_path: Path) -> None:
    path = write_prediction_file(tmp_path / "0--Parade" / "0_Parade_x_7.txt", np.array([[1.0, 2.5, 3.0, 4.0, 0.25]]))
    assert path.read_text() == "0_Parade_x_7.jpg\n1\n1.0 2.5 3.0 4.0 0.25\n"
    write_prediction_file(tmp_path / "e" / "empty.txt", np.zeros((0, 5)))
    assert (tmp_path / "e" / "empty.txt").read_text() == "empty.jpg\n0\n"


@pytest.mark.parametrize(
    "header", ["img_1.jpg", "img_1", "0--Parade/img_1.jpg", "  img_1.jpg  ", "/abs/path/0--Parade/img_1.jpg"]
)
def test_header_variants(tmp_path: Path, header: str) -> None:
    path = _write(tmp_path / "ev" / "img_1.txt", f"{header}\n2\n1 2 3 4 0.9\n5 6 7 8 0.1\n")
    name, dets = read_prediction_file(path)
    assert name == "img_1"
    assert np.array_equal(dets, [[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.1]])


def test_retinaface_style_and_crlf(tmp_path: Path) -> None:
    """biubug6's test_widerface.py writes `<name>` (no .jpg) and a trailing space on each line."""
    path = tmp_path / "ev" / "img_2.txt"
    path.parent.mkdir()
    path.write_bytes(b"img_2\r\n2\r\n10 20 30 40 0.99 \r\n1 2 3 4 0.5 \r\n\r\n")
    name, dets = read_prediction_file(path)
    assert name == "img_2"
    assert np.array_equal(dets, [[10, 20, 30, 40, 0.99], [1, 2, 3, 4, 0.5]])


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "line 1"),
        ("other_image.jpg\n0\n", "line 1: names image 'other_image'"),
        ("img_3.jpg\n", "line 2: missing the detection count"),
        ("img_3.jpg\ntwo\n1 2 3 4 0.5\n", "line 2: detection count must be an integer, got 'two'"),
        ("img_3.jpg\n-1\n", "line 2: negative detection count"),
        ("img_3.jpg\n2\n1 2 3 4 0.5\n", "line 2: declares 2 detection(s) but the file lists 1"),
        ("img_3.jpg\n1\n1 2 3 4 0.5\n5 6 7 8 0.4\n", "line 2: declares 1 detection(s) but the file lists 2"),
        ("img_3.jpg\n2\n1 2 3 4 0.5\n1 2 3 4\n", "line 4: expected 5 values (x y w h score), got 4"),
        ("img_3.jpg\n2\n1 2 3 4 0.5\n\n1 2 3 4 0.5 7\n", "line 5: expected 5 values (x y w h score), got 6"),
        ("img_3.jpg\n1\n1 2 three 4 0.5\n", "line 3: 'three' is not a number"),
        ("img_3.jpg\n2\n1 2 3 4 0.5\n1 2 -3 4 0.5\n", "line 4: negative width or height"),
        ("img_3.jpg\n2\n\n1 2 3 4 0.5\n1 2 3 -0.5 0.5\n", "line 5: negative width or height"),
        ("img_3.jpg\n1\n1 2 3 4 nan\n", "line 3: non-finite value"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path / "ev" / "img_3.txt", text)
    with pytest.raises(PredictionFileError) as info:
        read_prediction_file(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_folder_reader_layout_rules(tmp_path: Path) -> None:
    _write(tmp_path / "ev" / "img_4.txt", "img_4.jpg\n0\n")
    _write(tmp_path / "ev" / "notes.md", "not a prediction file")
    _write(tmp_path / "ev" / ".img_5.txt.abc123.tmp", "img_5.jpg\n3\n1 2")  # leftover of an interrupted writer
    _write(tmp_path / "results.json", "{}")
    assert list(read_prediction_folder(tmp_path)) == ["ev/img_4"]

    _write(tmp_path / "flat.txt", "flat.jpg\n0\n")
    with pytest.raises(PredictionFileError, match=r"<event>/ folders.*flat\.txt"):
        read_prediction_folder(tmp_path)

    (tmp_path / "empty_dir" / "ev").mkdir(parents=True)
    with pytest.raises(PredictionFileError, match="no prediction files"):
        read_prediction_folder(tmp_path / "empty_dir")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        read_prediction_folder(tmp_path / "missing_dir")


def test_folder_reader_names_the_bad_file(tmp_path: Path) -> None:
    _write(tmp_path / "ev" / "good.txt", "good.jpg\n1\n1 2 3 4 0.5\n")
    bad = _write(tmp_path / "ev" / "bad.txt", "bad.jpg\n1\n1 2 3 4 x\n")
    with pytest.raises(PredictionFileError, match=rf"{bad}, line 3"):
        read_prediction_folder(tmp_path)


def test_writer_validates_before_writing(tmp_path: Path) -> None:
    good = np.array([[1.0, 2.0, 3.0, 4.0, 0.5]])
    with pytest.raises(PredictionFileError, match=r"'ev/b', row 1: negative width or height"):
        write_prediction_folder({"ev/a": good, "ev/b": np.array([[0, 0, 1, 1, 0.3], [0, 0, -1, 1, 0.2]])}, tmp_path)
    with pytest.raises(PredictionFileError, match=r"shape \(N, 5\)"):
        write_prediction_folder({"ev/a": np.zeros((2, 4))}, tmp_path)
    with pytest.raises(PredictionFileError, match="expected '<event>/<name>'"):
        write_prediction_folder({"no_event": good}, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValueError, match=r"<name>\.txt"):
        write_prediction_file(tmp_path / "ev" / "a.csv", good)


def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ev" / "img_6.txt"
    write_prediction_file(target, np.array([[1.0, 2.0, 3.0, 4.0, 0.5]]))
    before = target.read_text()

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_prediction_file(target, np.array([[9.0, 9.0, 9.0, 9.0, 0.9]] * 3))
    with pytest.raises(KeyboardInterrupt):
        write_prediction_file(tmp_path / "ev" / "img_7.txt", np.array([[9.0, 9.0, 9.0, 9.0, 0.9]]))
    monkeypatch.undo()
    assert target.read_text() == before  # the old file is intact
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["img_6.txt"]  # no temporary, no new file
