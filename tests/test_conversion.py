"""keras_bn.convert_batchnorm: Keras' BN becomes ours with the same config and
weights, so the model infers the same (Keras' layer is the reference) and trains
with the analytic gradient (Keras' autodiff gradient is the reference)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from keras_bn.conversion import clone_with_weights, is_keras_batchnorm
from keras_bn.keras_adapter import batchnorm_layers
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.population import assert_unchanged, snapshot
from tests.tolerances import (
    CONVERSION_GRADIENT_FLOAT64_RTOL,
    CONVERSION_INFERENCE_RTOL,
    PARITY_FLOAT32_ATOL,
    PARITY_FLOAT32_RTOL,
)

layers = keras.layers


def mixed_model():
    """Keras' BN at the top, in a nested Sequential, shared by two branches; one of ours."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    h = layers.Conv2D(8, 3, use_bias=False)(inputs)
    h = layers.BatchNormalization(momentum=0.9, epsilon=1e-4, name="top")(h)
    block = keras.Sequential(
        [layers.Conv2D(8, 1), layers.BatchNormalization(center=False, name="nested")],
        name="block",
    )
    shared = layers.BatchNormalization(scale=False, name="shared")
    a = shared(block(h))
    b = shared(layers.Conv2D(8, 1)(h))
    h = layers.Add()([a, b])
    h = keras_bn.BatchNormalization(name="already_ours")(h)
    outputs = layers.Dense(4)(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    set_stand_in_statistics(model, seed=0)
    return model


def relative_error(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


def test_every_keras_bn_becomes_ours_with_the_same_config_and_weights():
    model = mixed_model()
    before = snapshot(model)
    converted = keras_bn.convert_batchnorm(model)
    originals = batchnorm_layers(model)
    new = batchnorm_layers(converted)
    assert [type(layer) for layer in new] == [keras_bn.BatchNormalization] * 4
    for old, layer in zip(originals, new, strict=True):
        assert layer.name == old.name
        config = layer.get_config()
        assert {k: config[k] for k in old.get_config()} == old.get_config()
        for a, b in zip(old.get_weights(), layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    # The caller's model is untouched and shares nothing with the copy.
    assert_unchanged(model, before)
    assert sum(is_keras_batchnorm(layer) for layer in originals) == 3
    assert not {id(v) for v in model.variables} & {id(v) for v in converted.variables}
    x = np.random.default_rng(0).normal(size=(5, 6, 6, 3)).astype("float32")
    assert relative_error(converted(x), model(x)) <= PARITY_FLOAT32_RTOL


def test_the_converted_model_trains_like_keras_with_the_analytic_gradient():
    model = mixed_model()
    converted = keras_bn.convert_batchnorm(model)
    x = np.random.default_rng(1).normal(size=(8, 6, 6, 3)).astype("float32")

    def gradients(m):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(m(x, training=True)))
        return tape.gradient(loss, m.trainable_variables)

    # Relative to the largest gradient: the biases before a BN have a zero
    # gradient in exact arithmetic, which either side leaves at rounding level.
    got = np.concatenate([np.ravel(g) for g in gradients(converted)])
    want = np.concatenate([np.ravel(g) for g in gradients(model)])
    assert relative_error(got, want) <= PARITY_FLOAT32_RTOL
    # The training-mode step updated the same moving statistics.
    for a, b in zip(model.get_weights(), converted.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=PARITY_FLOAT32_RTOL, atol=1e-6)


class Block(layers.Layer):
    """A subclassed layer that creates Keras' BN inside itself."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4)
        self.norm = layers.BatchNormalization(name="hidden_bn")

    def call(self, x, training=None):
        return self.norm(self.dense(x), training=training)


def test_a_bn_inside_a_subclassed_layer_is_named():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, Block(name="my_block")(inputs))
    with pytest.raises(ValueError, match=r"'hidden_bn' inside 'my_block' \(Block\)"):
        keras_bn.convert_batchnorm(model)


def test_a_subclassed_model_is_refused():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="type Net"):
        keras_bn.convert_batchnorm(Net())


def test_clone_with_weights_copies_without_sharing():
    model = mixed_model()
    copy = clone_with_weights(model)
    assert [type(layer) for layer in batchnorm_layers(copy)] == [
        type(layer) for layer in batchnorm_layers(model)
    ]
    assert not {id(v) for v in model.variables} & {id(v) for v in copy.variables}
    for a, b in zip(model.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def resnet50v2(seed=2):
    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50V2(
        weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None
    )
    set_stand_in_statistics(model, seed=seed)
    return model


def gradient(model, x):
    with tf.GradientTape() as tape:
        y = model(tf.cast(x, model.compute_dtype), training=True)
        loss = tf.reduce_sum(tf.square(y))
    grads = tape.gradient(loss, model.trainable_variables)
    return np.concatenate([np.ravel(np.asarray(g, np.float64)) for g in grads])


@pytest.mark.slow
def test_resnet50v2_converts_with_the_same_outputs_and_trains(mixed_precision):
    base = resnet50v2()
    converted = keras_bn.convert_batchnorm(base)
    assert not any(is_keras_batchnorm(layer) for layer in batchnorm_layers(converted))
    assert len(batchnorm_layers(converted)) == len(batchnorm_layers(base)) == 49
    x = np.random.default_rng(2).normal(size=(4, 64, 64, 3)).astype("float32")
    assert relative_error(converted(x), base(x)) <= CONVERSION_INFERENCE_RTOL
    # Training mode through 49 BNs at batch 4 (2×2 maps at the end) is badly
    # conditioned: any float32 gradient, Keras' or ours, is ~1e-2 from the
    # float64 one, so comparing float32 gradients says nothing. In float64 both
    # are exact to far below the tolerance: the converted model's analytic
    # gradient must match Keras' autodiff gradient there.
    mixed_precision("float64")
    reference = resnet50v2()
    reference.set_weights([w.astype("float64") for w in base.get_weights()])
    converted64 = keras_bn.convert_batchnorm(reference)
    assert all(
        layer.compute_dtype == "float64" for layer in batchnorm_layers(converted64)
    )
    error = relative_error(gradient(converted64, x), gradient(reference, x))
    assert error <= CONVERSION_GRADIENT_FLOAT64_RTOL


KERAS_CONFIGS = [
    {"epsilon": 0.0},
    {"momentum": 0.0},
    {"momentum": 1.0, "epsilon": 0.0},
    {"center": False},
    {"scale": False},
    {"center": False, "scale": False, "epsilon": 0.0},
    {"axis": 1},
    {"axis": -2, "epsilon": 1e-7},
    {"renorm": True},
    {"renorm": True, "epsilon": 0.0, "renorm_clipping": {"rmax": 2.0, "dmax": 1.0}},
    {"renorm": True, "renorm_momentum": 0.0, "momentum": 1.0},
]


@pytest.mark.parametrize("config", KERAS_CONFIGS, ids=str)
def test_every_batchnorm_keras_builds_converts_and_infers_the_same(config):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4, 3))
    outputs = layers.BatchNormalization(name="keras_bn_under_test", **config)(inputs)
    model = keras.Model(inputs, outputs)
    set_stand_in_statistics(model, seed=5)
    converted = keras_bn.convert_batchnorm(model)
    (layer,) = batchnorm_layers(converted)
    assert type(layer) is keras_bn.BatchNormalization
    assert {k: layer.get_config()[k] for k in config} == {
        k: model.layers[-1].get_config()[k] for k in config
    }
    x = np.random.default_rng(5).normal(0.5, 2.0, (8, 4, 3)).astype("float32")
    np.testing.assert_allclose(
        converted(x, training=False),
        model(x, training=False),
        rtol=CONVERSION_INFERENCE_RTOL,
        atol=PARITY_FLOAT32_ATOL,
    )


@pytest.mark.parametrize(
    "config, match",
    [
        ({"momentum": 1.5}, "momentum.*1.5"),
        ({"epsilon": -1e-3}, "epsilon.*-0.001"),
    ],
)
def test_a_value_keras_accepts_without_meaning_is_refused_by_layer_name(config, match):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, layers.BatchNormalization(name="odd", **config)(inputs))
    with pytest.raises(ValueError, match=f"layer 'odd'.*{match}"):
        keras_bn.convert_batchnorm(model)
