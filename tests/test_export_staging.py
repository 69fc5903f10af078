"""Exported files are either complete and checked, or absent."""

import os

import pytest

from keras_bn.export.staging import staged_file, validate_destination


def test_success_moves_the_file_into_place(tmp_path):
    destination = str(tmp_path / "m.onnx")
    with staged_file(destination) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith(".m.onnx.")
        with open(tmp, "wb") as f:
            f.write(b"model")
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert open(destination, "rb").read() == b"model"


def test_failure_removes_the_partial_file_and_keeps_the_old_one(tmp_path):
    destination = tmp_path / "m.onnx"
    destination.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="converter crashed"):
        with staged_file(str(destination)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a mod")
            raise RuntimeError("converter crashed")
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert destination.read_bytes() == b"old"


def test_interrupt_removes_the_partial_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with staged_file(str(tmp_path / "m.tflite")):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_valid_destination_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert validate_destination("m.tflite", ".tflite") == str(tmp_path / "m.tflite")
    assert validate_destination(tmp_path / "M.ONNX", ".onnx").endswith("M.ONNX")


@pytest.mark.parametrize(
    "path, error, match",
    [
        (42, TypeError, "Received: path=42 of type int"),
        ("{tmp}/nowhere/m.onnx", FileNotFoundError, "does not exist"),
        ("{tmp}/m.onnx.txt", ValueError, "must end with '.onnx'"),
        ("{tmp}", ValueError, "not a directory"),
    ],
)
def test_bad_destination_raises(tmp_path, path, error, match):
    if isinstance(path, str):
        path = path.format(tmp=tmp_path)
    with pytest.raises(error, match=match):
        validate_destination(path, ".onnx")
