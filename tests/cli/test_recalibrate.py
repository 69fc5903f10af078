"""`keras-bn recalibrate` and `--population-data`: the command line's population
statistics equal a float64 NumPy Algorithm 2 (`tests.helpers.population`).

In-process through `keras_bn.cli.main`, on the demo's architecture with
stand-in statistics (far from the population's, so a no-op cannot pass).
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn import cli, defaults, demo
from keras_bn.population import DEFAULT_BATCH_SIZE
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.population import algorithm2, array_batches, sequential_recipe
from tests.tolerances import FOLD_FLOAT32_RTOL, POPULATION_RTOL

BATCH_SIZE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    keras.utils.set_random_seed(8)
    model = demo.build_model((8, 8, 1), 10)
    set_stand_in_statistics(model, seed=8)
    directory = tmp_path_factory.mktemp("recalibrate")
    model.save(directory / "model.keras")
    rng = np.random.default_rng(8)
    x_train = rng.normal(0.5, 0.3, size=(48, 8, 8, 1)).astype(np.float32)
    x_test = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    np.savez(directory / "data.npz", x_train=x_train, x_test=x_test)
    return directory, model, x_train


def reference(model, x):
    return algorithm2(sequential_recipe(model), array_batches(x, BATCH_SIZE))


def assert_statistics(model, expected) -> None:
    layers = [x for x in model.layers if isinstance(x, keras_bn.BatchNormalization)]
    assert {layer.name for layer in layers} == set(expected)
    for layer in layers:
        mean, variance, _ = expected[layer.name]
        np.testing.assert_allclose(
            layer.moving_variance.numpy(), variance, rtol=POPULATION_RTOL
        )
        scale = np.sqrt(variance)
        assert np.all(
            np.abs(layer.moving_mean.numpy() - mean) <= POPULATION_RTOL * scale
        )


def test_recalibrate_writes_the_population_statistics(files, tmp_path, capsys):
    directory, model, x_train = files
    out = tmp_path / "recalibrated.keras"
    argv = ["recalibrate", str(directory / "model.keras"), "--data"]
    argv += [str(directory / "data.npz"), "-o", str(out), "--batch-size", "16"]
    assert cli.main([*argv, "-q"]) == defaults.EXIT_OK
    assert "values/channel" in capsys.readouterr().out
    assert_statistics(keras.saving.load_model(out), reference(model, x_train))


def test_dry_run_reports_and_writes_nothing(files, tmp_path, capsys, monkeypatch):
    directory, model, x_train = files
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(directory))
    argv = ["recalibrate", str(directory / "model.keras"), "--data"]
    argv += [str(directory / "data.npz"), "--dry-run", "--json", "-q"]
    assert cli.main(argv) == defaults.EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "ok" and document["output"] is None
    assert document["population"]["applied"] is False
    batches = -(-len(x_train) // DEFAULT_BATCH_SIZE)
    assert document["population"]["batches"] == batches
    assert sorted(os.listdir(directory)) == before and os.listdir(tmp_path) == []


def test_fold_with_population_data_folds_the_population_statistics(
    files, tmp_path, capsys
):
    directory, model, x_train = files
    out = tmp_path / "folded.keras"
    argv = ["fold", str(directory / "model.keras"), "-o", str(out)]
    argv += ["--population-data", str(directory / "data.npz"), "-q"]
    assert cli.main(argv) == defaults.EXIT_OK
    folded = keras.saving.load_model(out)
    recalibrated, _ = keras_bn.with_population_statistics(model, x_train, verbose=0)
    expected = recalibrated.predict(x_train, verbose=0)
    moving = model.predict(x_train, verbose=0)
    actual = folded.predict(x_train, verbose=0)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) <= FOLD_FLOAT32_RTOL * scale
    # The stand-in statistics are far from the population's: a fold of the
    # moving statistics would not pass the line above.
    assert np.max(np.abs(moving - expected)) > 1e-2 * scale


def test_recalibrate_needs_data(files, capsys):
    directory, _, _ = files
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["recalibrate", str(directory / "model.keras")])
    assert exit_info.value.code == defaults.EXIT_USAGE


def test_recalibrating_a_checkpoint_in_place_keeps_its_training_state(
    files, tmp_path, capsys
):
    """Issue 17, case 2: the optimizer's variables were dropped (520 → 201 KB)."""
    directory, _, x_train = files
    keras.utils.set_random_seed(12)
    model = keras.saving.load_model(directory / "model.keras")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    labels = np.random.default_rng(12).integers(0, 10, len(x_train))
    model.fit(x_train, labels, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    checkpoint = tmp_path / "checkpoint.keras"
    model.save(checkpoint)
    argv = ["recalibrate", str(checkpoint), "--data", str(directory / "data.npz")]
    argv += ["-o", str(checkpoint), "--batch-size", str(BATCH_SIZE), "-q"]
    assert cli.main(argv) == defaults.EXIT_OK
    restored = keras.saving.load_model(checkpoint, compile=True)
    assert restored.get_compile_config() == model.get_compile_config()
    before = [v.numpy() for v in model.optimizer.variables]
    after = [v.numpy() for v in restored.optimizer.variables]
    assert len(after) == len(before) > 2  # iterations, learning rate, moments
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new, old)
    assert_statistics(restored, reference(model, x_train))


@pytest.mark.parametrize("command", ["recalibrate", "check", "export"])
def test_images_without_a_channel_axis_serve_the_model_they_trained(
    files, tmp_path, capsys, command
):
    """Issue 17, case 10: an (N, 8, 8) `.npz` trains the demo, so every command
    takes it for that model (one rule, `keras_bn.data.images_for_model`)."""
    directory, model, x_train = files
    data = tmp_path / "hw.npz"
    np.savez(data, x_train=x_train[..., 0], x_test=x_train[:16, ..., 0])
    model_file = str(directory / "model.keras")
    argv = {
        "recalibrate": ["recalibrate", model_file, "--data", str(data), "--dry-run"],
        "check": ["check", model_file, str(tmp_path / "m.tflite"), "--data", str(data)],
        "export": ["export", model_file, "--format", "tflite", "--data", str(data)],
    }[command]
    if command == "check":
        keras_bn.export.to_tflite(model, tmp_path / "m.tflite")
    if command == "export":
        argv += ["-o", str(tmp_path / "out")]
    assert cli.main([*argv, "-q", "--json"]) == defaults.EXIT_OK
    assert json.loads(capsys.readouterr().out)["status"] == "ok"
