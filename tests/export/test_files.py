"""`export_files` checks every format's inputs before it converts anything, and
publishes all its files or none (issue 17, case 3: `--format all --opset 99`
replaced `model.tflite` before refusing the opset)."""

import os

import keras
import pytest

from keras_bn.export import export_files
from keras_bn.export import files as export_files_module
from keras_bn.models import digits_cnn
from keras_bn.stand_in_statistics import set_stand_in_statistics

OLD = b"the user's previous file"


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(11)
    model = digits_cnn((8, 8, 1), 10)
    set_stand_in_statistics(model, seed=11)
    return model


@pytest.fixture
def previous_files(tmp_path):
    for name in ("model.tflite", "model.onnx"):
        (tmp_path / name).write_bytes(OLD)
    return tmp_path


def assert_untouched(directory) -> None:
    assert sorted(os.listdir(directory)) == ["model.onnx", "model.tflite"]
    for name in ("model.tflite", "model.onnx"):
        assert (directory / name).read_bytes() == OLD, name


def test_a_bad_option_of_the_last_format_converts_nothing(
    model, previous_files, monkeypatch
):
    converted = []
    monkeypatch.setattr(
        export_files_module.PlannedFile, "write", lambda *a: converted.append(a)
    )
    with pytest.raises(ValueError, match="opset"):
        export_files(
            model, previous_files, stem="model", formats=("tflite", "onnx"), opset=99
        )
    assert converted == []
    assert_untouched(previous_files)


def test_a_failing_last_file_leaves_the_first_as_it_was(
    model, previous_files, monkeypatch
):
    def onnx_fails(*args, **kwargs):
        raise ValueError("the ONNX converter refused the model")

    monkeypatch.setattr(export_files_module, "write_onnx", onnx_fails)
    with pytest.raises(ValueError, match="ONNX converter refused"):
        export_files(model, previous_files, stem="model", formats=("tflite", "onnx"))
    assert_untouched(previous_files)  # the checked .tflite was never published


def test_both_files_are_published_when_both_pass(model, previous_files):
    reports = export_files(
        model, previous_files, stem="model", formats=("tflite", "onnx")
    )
    assert [r.format for r in reports] == ["tflite", "onnx"]
    assert sorted(os.listdir(previous_files)) == ["model.onnx", "model.tflite"]
    for report in reports:
        assert report.parity.passed
        assert os.path.getsize(report.path) == report.file_size != len(OLD)
