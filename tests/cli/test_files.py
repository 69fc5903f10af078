"""The command line loses nothing: a failed write keeps the old file, a failed
command leaves no directory behind, and file-system errors are one line.

Run in-process through `keras_bn.cli.main` (what the `keras-bn` script calls),
with `keras.Model.save` replaced by a write that fails half-way like a full
disk.
"""

import errno
import os

import keras
import numpy as np
import pytest

from keras_bn import cli, defaults
from tests.helpers.cli import stand_in_model_file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return stand_in_model_file(tmp_path_factory.mktemp("model"), seed=3)


def fail_half_way(self, filepath, *args, **kwargs):
    """`Model.save` on a disk that fills up after 4 KiB."""
    with open(filepath, "wb") as f:
        f.write(b"PK\x03\x04" + b"\0" * 4092)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"keras-bn {command}: error: "), lines[0]
    return lines[0]


def test_fold_over_a_valid_file_on_a_full_disk_keeps_it(
    model_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out.keras"
    assert cli.main(["fold", str(model_file), "-o", str(out), "-q"]) == defaults.EXIT_OK
    before = out.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(keras.Model, "save", fail_half_way)
    code = cli.main(["fold", str(model_file), "-o", str(out), "-q"])
    assert code == defaults.EXIT_FILE_SYSTEM
    line = one_error_line(capsys.readouterr().err, "fold")
    assert "No space left on device" in line and f"{str(out)!r}" in line
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.keras"]
    monkeypatch.undo()
    assert len(keras.saving.load_model(out).layers) > 0


def test_recalibrate_on_a_full_disk_writes_nothing(
    model_file, tmp_path, monkeypatch, capsys, rng
):
    data = tmp_path / "x.npy"
    np.save(data, rng.normal(size=(16, 8, 8, 1)).astype(np.float32))
    monkeypatch.setattr(keras.Model, "save", fail_half_way)
    out = tmp_path / "recalibrated.keras"
    argv = ["recalibrate", str(model_file), "--data", str(data), "-o", str(out)]
    assert cli.main([*argv, "-q"]) == defaults.EXIT_FILE_SYSTEM
    assert "No space left" in one_error_line(capsys.readouterr().err, "recalibrate")
    assert os.listdir(tmp_path) == ["x.npy"]


def test_a_failed_export_leaves_no_directory(model_file, tmp_path, capsys):
    misshapen = tmp_path / "misshapen.npy"
    np.save(misshapen, np.zeros((2, 3, 3, 1), np.float32))
    target = tmp_path / "a" / "b" / "c"
    code = cli.main(
        ["export", str(model_file), "--format", "onnx", "--data", str(misshapen)]
        + ["-o", str(target), "-q"]
    )
    assert code == defaults.EXIT_BAD_INPUT
    assert "shape" in one_error_line(capsys.readouterr().err, "export")
    assert os.listdir(tmp_path) == ["misshapen.npy"]


def test_an_output_path_through_a_file_is_a_file_system_error(
    model_file, tmp_path, capsys
):
    blocker = tmp_path / "a"
    blocker.write_text("a file where a directory should be")
    code = cli.main(["export", str(model_file), "-o", str(blocker / "b"), "-q"])
    assert code == defaults.EXIT_FILE_SYSTEM
    one_error_line(capsys.readouterr().err, "export")
    assert blocker.read_text() == "a file where a directory should be"
