"""Files that are not checkpoints, unsafe pickles, broken weights and failed writes: each message says what the
file is and what to do, and never suggests turning off safe loading (issue 15, cases 2, 3 and 4)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from featherface.inference.detector import FaceDetector
from featherface.models.checkpoints import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from featherface.models.loading import build_model_from_checkpoint
from featherface.models.featherface import FeatherFace, FeatherFaceConfig

TINY = FeatherFaceConfig(width=8, bifpn_repeats=1)
UNSAFE_ADVICE = ("weights_only", "Re-running", "will likely succeed")


class RunsCode:
    """Unpickling this calls ``os.system``: the kind of file safe loading exists to refuse."""

    def __reduce__(self):
        return (os.system, ("echo this should never run",))


def _message(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable PyTorch checkpoint: ")
    assert not any(phrase in message for phrase in UNSAFE_ADVICE), message
    return message


def test_random_bytes_are_named_as_unrecognised(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(bytes([0x3B, 0x46, 0x01, 0x73]) + os.urandom(200))
    assert "unrecognised content (it starts with the bytes 3b 46 01 73" in _message(path)


def test_onnx_file_is_named_with_the_tool_that_runs_it(tmp_path: Path) -> None:
    onnx_like = tmp_path / "model.bin"  # an ONNX header (ir_version 9, producer name) under another suffix
    onnx_like.write_bytes(b"\x08\x09\x12\x07pytorch" + bytes(64))
    assert "it is an ONNX model: run it with featherface.inference.onnx.OnnxFaceDetector" in _message(onnx_like)
    by_suffix = tmp_path / "model.onnx"
    by_suffix.write_bytes(b"\x01\x02\x03")
    assert "--peer featherface_onnx" in _message(by_suffix)


def test_code_executing_pickles_are_refused_and_named(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(RunsCode()))
    message = _message(plain)
    assert "a Python pickle" in message and f"it imports {os.name}.system" in message
    assert "can run arbitrary code, so it is refused" in message
    zipped = tmp_path / "zipped.pt"
    torch.save({"model": RunsCode()}, zipped)
    message = _message(zipped)
    assert "a PyTorch file, but it holds Python objects" in message and f"({os.name}.system)" in message


def test_truncated_empty_and_text_files(tmp_path: Path) -> None:
    whole = save_checkpoint(tmp_path / "whole.pt", FeatherFace(TINY))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:300])
    assert "damaged or truncated PyTorch file" in _message(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "the file is empty (0 bytes)" in _message(empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert "a text file (it starts with 'hello\\n')" in _message(text)


def test_cli_weights_message_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from featherface.cli import main

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x09\x12\x07pytorch" + bytes(64))
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert main(["detect", str(image), "--weights", str(onnx_file), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{onnx_file}: not a readable PyTorch checkpoint: it is an ONNX model" in err
    assert not any(phrase in err for phrase in UNSAFE_ADVICE)


def test_nan_weights_are_refused_at_load(tmp_path: Path) -> None:
    model = FeatherFace(TINY)
    with torch.no_grad():
        model.heads.cls[0].weight.fill_(float("nan"))
    path = save_checkpoint(tmp_path / "nan.pt", model)
    with pytest.raises(CheckpointError) as info:
        build_model_from_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "NaN or infinite values" in message and "heads.cls.0.weight" in message
    assert "Use an earlier checkpoint" in message
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        FaceDetector.from_pretrained(None, path, device="cpu")


def test_failed_write_names_the_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    model = FeatherFace(TINY)
    path = save_checkpoint(tmp_path / "last.pt", model, epoch=1)

    def full_disk(obj, f, *args, **kwargs):  # what torch's zip writer raises when a write comes up short
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 93952 vs 93848")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, model, epoch=2)
    message = str(info.value)
    assert message.startswith(f"cannot write the checkpoint {path}: the file could not be written completely")
    assert "inline_container" not in message and "a full disk, or a file size limit" in message
    assert "the previous last.pt is unchanged" in message
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unwritable_folder_names_the_checkpoint(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointWriteError,
                       match=r"cannot write the checkpoint .*file/sub/x\.pt: .*no x\.pt was written"):
        save_checkpoint(blocker / "sub" / "x.pt", FeatherFace(TINY))
