"""keras_bn.freeze_batchnorm, checked in `fit`: frozen statistics stay
bit-identical, γ and β move only when asked."""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.keras_adapter import batchnorm_layers
from keras_bn.stand_in_statistics import set_stand_in_statistics

layers = keras.layers


def model_with(bn_class, nested_bn_class=None):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [layers.Dense(6), (nested_bn_class or bn_class)(name="nested_bn")], name="inner"
    )
    model = keras.Sequential(
        [
            keras.Input((5,)),
            layers.Dense(6),
            bn_class(name="top_bn"),
            layers.ReLU(),
            inner,
            layers.Dense(2),
        ]
    )
    set_stand_in_statistics(model, seed=0)
    return model


def fit(model):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (64, 5)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)


def bn_values(model):
    return {
        f"{layer.name}/{v.path.rsplit('/', 1)[-1]}": np.array(v)
        for layer in batchnorm_layers(model)
        for v in layer.weights
    }


@pytest.mark.parametrize(
    "bn_class", [keras_bn.BatchNormalization, layers.BatchNormalization]
)
def test_frozen_statistics_and_affine_stay_bit_identical_in_fit(bn_class):
    model = model_with(bn_class)
    before = bn_values(model)
    dense_before = model.layers[0].get_weights()[0].copy()
    assert keras_bn.freeze_batchnorm(model) == ["top_bn", "nested_bn"]
    fit(model)
    for name, value in bn_values(model).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert not np.array_equal(model.layers[0].get_weights()[0], dense_before)


def test_train_affine_trains_gamma_and_beta_only():
    model = model_with(keras_bn.BatchNormalization)
    model.get_layer("top_bn").trainable = False  # trainable again with train_affine
    before = bn_values(model)
    keras_bn.freeze_batchnorm(model, train_affine=True)
    fit(model)
    after = bn_values(model)
    for name, value in after.items():
        if "moving" in name:
            np.testing.assert_array_equal(value, before[name], err_msg=name)
        else:
            assert not np.array_equal(value, before[name]), name
    # Training mode now normalizes with the moving statistics, as inference does.
    x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    np.testing.assert_array_equal(model(x, training=True), model(x, training=False))


def test_unfrozen_bn_updates_its_statistics_in_the_same_fit():
    # The control: without freezing, the same fit moves every BN weight.
    model = model_with(keras_bn.BatchNormalization)
    before = bn_values(model)
    fit(model)
    for name, value in bn_values(model).items():
        assert not np.array_equal(value, before[name]), name


def test_train_affine_refuses_keras_layers_before_changing_anything():
    model = model_with(keras_bn.BatchNormalization, layers.BatchNormalization)
    with pytest.raises(ValueError, match=r"\['nested_bn'\].*convert_batchnorm"):
        keras_bn.freeze_batchnorm(model, train_affine=True)
    top = model.get_layer("top_bn")
    assert top.trainable and not top.use_moving_statistics
    converted = keras_bn.convert_batchnorm(model)
    assert keras_bn.freeze_batchnorm(converted, train_affine=True) == [
        "top_bn",
        "nested_bn",
    ]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="'plain' has no BatchNormalization"):
        keras_bn.freeze_batchnorm(
            keras.Sequential([keras.Input((2,)), layers.Dense(1)], name="plain")
        )
    with pytest.raises(TypeError, match="train_affine='yes'"):
        keras_bn.freeze_batchnorm(
            model_with(keras_bn.BatchNormalization), train_affine="yes"
        )
    with pytest.raises(TypeError, match="type str"):
        keras_bn.freeze_batchnorm("model")
