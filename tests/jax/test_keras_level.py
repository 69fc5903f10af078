"""convert, freeze, fold and population statistics on Keras' JAX backend.

Small models; each result is checked against an independent reference: the
original model's inference output (conversion, folding), bit-identical
statistics after `fit` (freezing), and Algorithm 2 in NumPy float64
(`tests.helpers.population`) for the population statistics.
"""

from __future__ import annotations

import keras
import numpy as np

import keras_bn
from keras_bn.keras_adapter import batchnorm_layers
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests import tolerances as tol
from tests.helpers.population import (
    algorithm2,
    array_batches,
    assert_matches,
    sequential_recipe,
)
from tests.jax.helpers import assert_close


def _model(bn_class=keras.layers.BatchNormalization) -> keras.Sequential:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            bn_class(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
            bn_class(),
            keras.layers.Dense(2),
        ]
    )
    set_stand_in_statistics(model, seed=0)
    return model


def _data(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).normal(1.0, 2.0, (n, 6, 6, 2)).astype("float32")


def test_convert_batchnorm_keeps_the_inference_function():
    model = _model()
    converted = keras_bn.convert_batchnorm(model)
    layers = batchnorm_layers(converted)
    assert len(layers) == 2
    assert all(isinstance(layer, keras_bn.BatchNormalization) for layer in layers)
    x = _data(8)
    assert_close(converted(x), model(x), tol.PARITY_FLOAT32_RTOL)


def test_freeze_batchnorm_keeps_statistics_through_fit():
    model = _model(keras_bn.BatchNormalization)
    frozen = keras_bn.freeze_batchnorm(model, train_affine=True)
    assert len(frozen) == 2
    statistics = [
        (np.array(layer.moving_mean), np.array(layer.moving_variance))
        for layer in batchnorm_layers(model)
    ]
    gamma_before = np.array(batchnorm_layers(model)[0].gamma)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")
    model.fit(_data(), y, batch_size=8, epochs=1, verbose=0)
    for layer, (mean, variance) in zip(
        batchnorm_layers(model), statistics, strict=True
    ):
        np.testing.assert_array_equal(layer.moving_mean, mean)
        np.testing.assert_array_equal(layer.moving_variance, variance)
    assert not np.array_equal(batchnorm_layers(model)[0].gamma, gamma_before)


def test_fold_batchnorm_verifies_on_jax():
    model = _model(keras_bn.BatchNormalization)
    folded, report = keras_bn.fold_batchnorm(model, return_report=True)
    assert not batchnorm_layers(folded)
    assert report.max_error is not None and report.max_error <= tol.FOLD_FLOAT32_RTOL
    x = _data(8)
    assert_close(folded(x), model(x), tol.FOLD_FLOAT32_RTOL)


def test_population_statistics_match_algorithm2():
    model = _model(keras_bn.BatchNormalization)
    x = _data(40)
    report = keras_bn.population_statistics(model, x, batch_size=8, verbose=0)
    reference = algorithm2(sequential_recipe(model), array_batches(x, 8))
    assert_matches(report, reference, tol.POPULATION_RTOL)
    for layer in batchnorm_layers(model):
        mean, variance, _ = reference[layer.name]
        assert_close(layer.moving_mean, mean, tol.POPULATION_RTOL)
        assert_close(layer.moving_variance, variance, tol.POPULATION_RTOL)
