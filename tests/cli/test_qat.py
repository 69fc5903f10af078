"""`keras-bn qat` then `keras-bn export`: a QAT .keras file becomes int8 files, gated exactly."""

import json

import keras
import numpy as np

from keras_bn.data import digits
from tests.helpers.cli import run_script, stand_in_model_file


def test_qat_then_export_without_extra_flags(tmp_path):
    model_path = stand_in_model_file(tmp_path, seed=0)
    model = keras.saving.load_model(model_path)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(model_path)  # with its compiled loss, which qat fine-tunes with
    data = digits()
    n = 256
    np.savez(
        tmp_path / "d.npz",
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_test=data.x_test[:64],
        y_test=data.y_test[:64],
    )
    result = run_script(
        "qat",
        model_path,
        "--data",
        tmp_path / "d.npz",
        "--epochs",
        "1",
        "-o",
        tmp_path / "m_qat.keras",
        "--json",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "ok"
    assert document["qat"]["fold_report"]["folded"] == 3
    exported = run_script(
        "export",
        tmp_path / "m_qat.keras",
        "--data",
        tmp_path / "d.npz",
        "-o",
        tmp_path,
        "--json",
        "-q",
    )
    assert exported.returncode == 0, exported.stderr
    reports = json.loads(exported.stdout)["exports"]
    assert {r["format"] for r in reports} == {"tflite", "onnx"}
    for report in reports:
        assert report["parity"]["steps"]["passed"]


def test_a_model_without_loss_is_a_one_line_error(tmp_path):
    model_path = stand_in_model_file(tmp_path, seed=0)
    data = digits()
    np.savez(tmp_path / "d.npz", x_train=data.x_train[:32], y_train=data.y_train[:32])
    result = run_script("qat", model_path, "--data", tmp_path / "d.npz", "-q")
    assert result.returncode == 1
    assert "--loss" in result.stderr and len(result.stderr.strip().splitlines()) == 1
