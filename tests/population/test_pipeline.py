"""`population_data=` on fold_batchnorm and the exporters: statistics are
re-estimated on a copy, folded into the weights, and the caller's model stays
as it was."""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.export import export_files, run_file
from keras_bn.folding import fold as fold_module
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.tolerances import EXPORT_FLOAT32_RTOL, FOLD_FLOAT32_RTOL


def stale_model(seed=0):
    """A CNN whose moving statistics are far from those of its data."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, use_bias=False),
            keras_bn.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
            keras.layers.BatchNormalization(),
        ]
    )
    set_stand_in_statistics(model, seed=seed)
    return model


@pytest.fixture
def data():
    return np.random.default_rng(3).normal(2.0, 3.0, (64, 8, 8, 3)).astype("float32")


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_fold_with_population_data_folds_the_recalibrated_copy(data):
    model = stale_model()
    before = [w.copy() for w in model.get_weights()]
    folded, report = keras_bn.fold_batchnorm(
        model, population_data=data, return_report=True
    )
    recalibrated, _ = keras_bn.with_population_statistics(model, data, verbose=0)
    x = data[:8]
    assert relative_error(folded(x), recalibrated(x, training=False)) <= (
        FOLD_FLOAT32_RTOL
    )
    # The stand-in statistics are far from the data's: a fold that ignored
    # population_data would compute the stale model instead.
    assert relative_error(folded(x), model(x, training=False)) > 1e-2
    assert report.population is not None and report.population.batches == 2
    assert "population statistics re-estimated on 2 batches" in str(report)
    assert report.to_dict()["population"]["batches"] == 2
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_export_files_recalibrates_and_folds_once_for_every_format(
    data, tmp_path, monkeypatch
):
    model = stale_model()
    before = [w.copy() for w in model.get_weights()]
    calls = {"with_population_statistics": 0, "fold_graph": 0}
    for name in calls:
        original = getattr(fold_module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(fold_module, name, counted)
    reports = export_files(
        model,
        tmp_path,
        stem="model",
        formats=("tflite", "onnx"),
        evaluation=data[:8],
        population_data=data,
    )
    assert calls == {"with_population_statistics": 1, "fold_graph": 1}
    recalibrated, _ = keras_bn.with_population_statistics(model, data, verbose=0)
    x = data[8:16]
    for report in reports:
        assert relative_error(
            run_file(report.path, x), recalibrated(x, training=False)
        ) <= (EXPORT_FLOAT32_RTOL)
        assert report.parity.passed
        assert report.population is not None
        assert report.fold_report.population is report.population
        assert report.to_dict()["population"]["batches"] == 2
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
