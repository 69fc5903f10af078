"""int8 parity: one rule for export and check, judged on held-out data.

Issue 12, case 6: `keras-bn export --quantize int8 --data d.npz` checked
parity on `x_train` (the calibration data) and passed, while `keras-bn check`
of the same file on `x_test` failed. `split_int8_data` is now the one rule
(calibrate on `x_train`, judge on `x_test` or a held-out part), applied by
`export_files` / `to_tflite` and by `check_parity(..., calibration=)`.
"""

import keras
import numpy as np
import pytest

from keras_bn.data import digits
from keras_bn.demo import build_model
from keras_bn.export import check_parity, export_files, parity_tolerance
from keras_bn.export.prepare import HELD_OUT_EVERY, split_int8_data


def _dense_model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_separate_inputs_judge_and_all_data_calibrates():
    rng = np.random.default_rng(0)
    data, inputs = rng.random((10, 3)), rng.random((4, 3))
    split = split_int8_data(_dense_model(), data, inputs)
    np.testing.assert_array_equal(split.calibration, data.astype(np.float32))
    np.testing.assert_array_equal(split.held_out, inputs.astype(np.float32))


@pytest.mark.parametrize("same_array", [True, False])
def test_without_separate_inputs_a_part_is_held_out(same_array):
    data = np.arange(30, dtype=np.float32).reshape(10, 3)
    split = split_int8_data(_dense_model(), data, data if same_array else None)
    calibrated = {tuple(row) for row in split.calibration}
    held_out = {tuple(row) for row in split.held_out}
    assert not calibrated & held_out
    assert calibrated | held_out == {tuple(row) for row in data}
    assert len(held_out) == len(data[1::HELD_OUT_EVERY]) == 2


def test_a_single_sample_cannot_be_held_out():
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        split_int8_data(_dense_model(), np.zeros((1, 3)))


@pytest.fixture(scope="module")
def digits_model():
    """The demo's CNN after one epoch on the digits, as `keras-bn demo` trains it."""
    dataset = digits()
    keras.utils.set_random_seed(0)
    model = build_model(dataset.x_train.shape[1:], 10)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(dataset.x_train, dataset.y_train, epochs=1, batch_size=32, verbose=0)
    return model, dataset


def export_and_check(model, tmp_path, x_train, x_test, quantize="int8", exported=None):
    """Exports `exported` (default `model`) and checks the file against `model`,
    both given a data file's arrays as the command line gives them."""
    (report,) = export_files(
        model if exported is None else exported,
        tmp_path,
        stem="digits",
        formats=["tflite" if quantize else "onnx"],
        quantize=quantize,
        calibration=x_train,
        evaluation=x_test,
    )
    check = check_parity(
        model,
        report.path,
        inputs=x_test,
        tolerance="error_model",
        quantize=quantize,
        calibration=x_train,
    )
    return report, check


@pytest.mark.parametrize("npz", [True, False], ids=["npz", "npy"])
def test_export_then_check_on_the_same_data_agree(digits_model, tmp_path, npz):
    model, dataset = digits_model
    # An .npz gives x_train and x_test; an .npy one array read for both.
    x_train = dataset.x_train
    x_test = dataset.x_test if npz else x_train
    report, check = export_and_check(model, tmp_path, x_train, x_test)
    assert report.parity.passed and check.passed
    # The same samples, so the same numbers: one verdict.
    assert check.input_shape == report.parity.input_shape
    assert check.max_rel_error == report.parity.max_rel_error
    held_out = len(dataset.x_test) if npz else len(x_train[1::5])
    assert report.parity.input_shape[0] == held_out


def test_the_bound_rejects_a_file_with_two_classes_swapped(digits_model, tmp_path):
    model, dataset = digits_model
    swapped = keras.models.clone_model(model)
    swapped.set_weights(model.get_weights())
    head = swapped.layers[-1]
    kernel, bias = head.get_weights()
    order = np.arange(kernel.shape[1])
    order[[0, 1]] = order[[1, 0]]
    head.set_weights([kernel[:, order], bias[order]])
    _, check = export_and_check(
        model, tmp_path, dataset.x_train, dataset.x_test, exported=swapped
    )
    assert check.tolerance == parity_tolerance(model, "int8")
    assert not check.passed


def test_float_files_are_judged_on_inputs_whatever_calibration(digits_model, tmp_path):
    # The command line passes a data file's arrays unchanged for every file.
    model, dataset = digits_model
    report, check = export_and_check(
        model, tmp_path, dataset.x_train, dataset.x_test, quantize=None
    )
    assert check.input_shape == report.parity.input_shape == dataset.x_test.shape
    assert check.max_rel_error == report.parity.max_rel_error
    assert check.passed
