"""`keras_bn.data`: one set of rules for a user's `.npz` / `.npy` files."""

import types

import keras
import numpy as np
import pytest

from keras_bn.data import (
    images_for_model,
    load_dataset,
    load_images,
    load_population_data,
)
from keras_bn.models import digits_cnn


def test_npy_gives_the_same_array_for_calibration_and_evaluation(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    calibration, evaluation = load_images(tmp_path / "x.npy")
    np.testing.assert_array_equal(calibration, x)
    np.testing.assert_array_equal(evaluation, x)


@pytest.mark.parametrize("present", [("x_train",), ("x_test",), ("x_train", "x_test")])
def test_npz_uses_either_split_for_both_when_one_is_missing(present, tmp_path):
    arrays = {name: np.full((2, 3), i, np.float32) for i, name in enumerate(present)}
    np.savez(tmp_path / "d.npz", **arrays)
    calibration, evaluation = load_images(tmp_path / "d.npz")
    train = arrays["x_train"] if "x_train" in arrays else arrays["x_test"]
    test = arrays["x_test"] if "x_test" in arrays else arrays["x_train"]
    np.testing.assert_array_equal(calibration, train)
    np.testing.assert_array_equal(evaluation, test)


def truncated_npz(path):
    np.savez(path, x_train=np.zeros((64, 8, 8, 1)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "write, error, fragment",
    [
        (lambda p: np.savez(p, y=np.zeros(2)), ValueError, "x_train or x_test"),
        (lambda p: p.write_text("text"), ValueError, "not a NumPy .npy or .npz"),
        (lambda p: p.write_bytes(b""), ValueError, "not a NumPy .npy or .npz"),
        (lambda p: p.write_bytes(b"PK\x03\x04"), ValueError, "not a NumPy"),
        (truncated_npz, ValueError, "not a NumPy .npy or .npz"),
        (lambda p: None, FileNotFoundError, "does not exist"),
    ],
)
def test_bad_files_name_the_problem(write, error, fragment, tmp_path):
    path = tmp_path / "d.npz"
    write(path)
    with pytest.raises(error, match=fragment):
        load_images(path)


def test_dataset_adds_a_channel_axis_and_rejects_mismatched_lengths(tmp_path):
    rng = np.random.default_rng(0)
    good = {
        "x_train": rng.integers(0, 255, (6, 5, 5)).astype(np.uint8),
        "y_train": np.arange(6) % 3,
        "x_test": rng.integers(0, 255, (2, 5, 5)).astype(np.uint8),
        "y_test": np.array([0, 2]),
    }
    np.savez(tmp_path / "good.npz", **good)
    data = load_dataset(tmp_path / "good.npz")
    assert data.x_train.shape == (6, 5, 5, 1) and data.x_train.dtype == np.float32
    np.testing.assert_array_equal(data.x_train[..., 0], good["x_train"])
    assert data.describe()["classes"] == 3
    np.savez(tmp_path / "bad.npz", **{**good, "y_test": np.array([0, 1, 2])})
    with pytest.raises(ValueError, match="must have the same length"):
        load_dataset(tmp_path / "bad.npz")


def test_population_data_is_x_train_of_an_npz_or_the_array_of_an_npy(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
    x_test = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x_train, x_test=x_test)
    np.testing.assert_array_equal(load_population_data(tmp_path / "d.npz"), x_train)
    np.save(tmp_path / "shifted.npy", x_test)
    np.testing.assert_array_equal(
        load_population_data(tmp_path / "shifted.npy"), x_test
    )


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"x_test": np.zeros((3, 4))}, "has no `x_train`"),
        ({"x_train": np.zeros((0, 4))}, "non-empty numeric array"),
        ({"x_train": np.array(["a", "b"])}, "non-empty numeric array"),
    ],
)
def test_population_data_never_falls_back_to_the_held_out_set(
    arrays, fragment, tmp_path
):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=fragment):
        load_population_data(tmp_path / "d.npz")


@pytest.mark.parametrize(
    "shape, input_shape, expected",
    [
        ((5, 8, 8), (None, 8, 8, 1), (5, 8, 8, 1)),
        ((5, 8, 8), (None, None, None, 1), (5, 8, 8, 1)),
        ((5, 8), (None, 8, 1), (5, 8, 1)),
        ((5, 8, 8, 1), (None, 8, 8, 1), (5, 8, 8, 1)),
        ((5, 8, 8), (None, 8, 8, 3), (5, 8, 8)),  # a missing axis of 3: unchanged
        ((5, 8, 7), (None, 8, 8, 1), (5, 8, 7)),  # other sizes disagree
        ((5, 8, 8), [(None, 8, 8, 1), (None, 2)], (5, 8, 8)),  # several inputs
    ],
)
def test_images_for_model_adds_only_a_missing_channel_axis_of_one(
    shape, input_shape, expected
):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    model = types.SimpleNamespace(input_shape=input_shape)
    adapted = images_for_model(x, model)
    assert adapted.shape == expected
    np.testing.assert_array_equal(adapted.reshape(shape), x)
    assert images_for_model(None, model) is None


def test_images_for_a_model_without_known_input_shape_are_unchanged():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    x = np.zeros((5, 8, 8), np.float32)
    assert images_for_model(x, Subclassed()) is x


def test_a_demo_file_of_channelless_images_serves_the_demo_model(tmp_path):
    # One rule: the demo adds the axis to train, the other commands to use
    # the model the demo produced.
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(6, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    np.savez(tmp_path / "hw.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    dataset = load_dataset(tmp_path / "hw.npz")
    model = digits_cnn(dataset.x_train.shape[1:], dataset.num_classes)
    for loaded in (
        *load_images(tmp_path / "hw.npz"),
        load_population_data(tmp_path / "hw.npz"),
    ):
        adapted = images_for_model(loaded, model)
        np.testing.assert_array_equal(adapted, x[..., None])
        model.predict(adapted, verbose=0)


def test_a_file_that_cannot_be_read_is_a_permission_error_naming_it(
    tmp_path, monkeypatch
):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 3)))
    real_open = open

    def denied(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    # File modes do not stop root; the refusal is simulated where it happens.
    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(PermissionError) as error_info:
        load_images(path)
    assert error_info.value.filename == str(path)
