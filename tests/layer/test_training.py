"""Training with keras_bn.BatchNormalization: XLA, mixed precision, saving, every option."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests import tolerances as tol
from tests.helpers.layers import random_bn_weights
from tests.helpers.reference import batchnorm_train

# Each option of the layer goes through the same contract (as Keras'
# run_layer_test does): config round trip, .keras round trip, a jit-compiled
# training step, and mixed precision.
OPTIONS = {
    "default": ({}, (8, 6, 6, 3)),
    "channels_first": ({"axis": 1}, (8, 3, 6, 6)),
    "list_axis": ({"axis": [2, 3]}, (8, 6, 4, 3)),
    "no_center": ({"center": False}, (8, 5)),
    "no_scale": ({"scale": False}, (8, 5)),
    "renorm": (
        {"renorm": True, "renorm_clipping": {"rmax": 3.0, "dmax": 5.0}},
        (8, 6, 6, 3),
    ),
    "ghost": ({"virtual_batch_size": 4}, (8, 6, 6, 3)),
    "unbiased": ({"unbiased_moving_variance": True}, (8, 5)),
    "ghost_renorm": ({"virtual_batch_size": 2, "renorm": True}, (8, 5)),
}


def _model(kwargs, input_shape, rng):
    inputs = keras.Input(input_shape[1:], batch_size=input_shape[0])
    outputs = keras_bn.BatchNormalization(name="bn", **kwargs)(inputs)
    outputs = keras.layers.Flatten()(outputs)
    outputs = keras.layers.Dense(
        2, kernel_initializer=keras.initializers.GlorotUniform(0)
    )(outputs)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    bn.set_weights(random_bn_weights(bn, rng))
    return model


@pytest.mark.parametrize("option", OPTIONS)
def test_config_round_trip(option):
    kwargs, _ = OPTIONS[option]
    layer = keras_bn.BatchNormalization(**kwargs)
    config = layer.get_config()
    clone = keras_bn.BatchNormalization.from_config(config)
    assert clone.get_config() == config
    for key, value in kwargs.items():
        assert config[key] == value


@pytest.mark.parametrize("option", OPTIONS)
def test_keras_file_round_trip_preserves_outputs_exactly(rng, tmp_path, option):
    kwargs, shape = OPTIONS[option]
    model = _model(kwargs, shape, rng)
    x = rng.normal(size=shape).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: registered
    assert type(loaded.get_layer("bn")) is keras_bn.BatchNormalization
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


@pytest.mark.parametrize("option", OPTIONS)
def test_jit_compiled_training_step_updates_weights_and_statistics(rng, option):
    kwargs, shape = OPTIONS[option]
    model = _model(kwargs, shape, rng)
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    bn = model.get_layer("bn")
    before = {w.name: w.numpy().copy() for w in bn.weights}
    x = rng.normal(size=shape).astype("float32")
    y = rng.normal(size=(shape[0], 2)).astype("float32")
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = {
        w.name for w in bn.weights if not np.array_equal(w.numpy(), before[w.name])
    }
    assert "moving_mean" in changed and "moving_variance" in changed
    assert ("gamma" in changed) == bn.scale and ("beta" in changed) == bn.center


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("option", ["default", "renorm", "ghost"])
def test_mixed_precision_computes_statistics_in_float32(
    rng, mixed_precision, policy, option
):
    kwargs, shape = OPTIONS[option]
    mixed_precision(policy)
    layer = keras_bn.BatchNormalization(momentum=0.0, **kwargs)
    half = policy.split("_")[1]
    x = tf.constant(rng.normal(3.0, 2.0, shape), half)
    y = layer(x, training=True)
    assert y.dtype == half
    assert all(w.dtype == "float32" for w in layer.weights)
    x64 = np.asarray(tf.cast(x, "float64"))
    if "virtual_batch_size" in kwargs:
        x64 = x64.reshape((-1, kwargs["virtual_batch_size"], *shape[1:]))
    axes = (
        tuple(range(x64.ndim - 1)) if "virtual_batch_size" not in kwargs else (1, 2, 3)
    )
    expected, mean, variance = batchnorm_train(x64, axes, 1e-3)
    if kwargs.get("renorm"):
        # A fresh layer's renorm statistics are 0 and 1, so r = σ_B, d = μ_B.
        expected = expected * np.minimum(np.sqrt(variance + 1e-3), 3.0) + np.clip(
            mean, -5, 5
        )
    expected = expected.reshape(shape)
    assert np.max(np.abs(np.asarray(tf.cast(y, "float64")) - expected)) <= (
        tol.HALF_PRECISION_ATOL[half] * np.max(np.abs(expected))
    )


def _conv_net(policy=None):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(
                8, 3, use_bias=False, kernel_initializer=keras.initializers.HeNormal(1)
            ),
            keras_bn.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                3, kernel_initializer=keras.initializers.GlorotUniform(2)
            ),
        ]
    )
    return model


def _learnable_data(rng, n=192):
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    labels = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int64") + (
        x[:, 4:].mean(axis=(1, 2, 3)) > 0.2
    )
    return x, labels


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_model_trains_under_xla(rng, mixed_precision, policy):
    mixed_precision(policy)
    keras.utils.set_random_seed(0)
    model = _conv_net()
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    x, labels = _learnable_data(rng)
    history = model.fit(x, labels, batch_size=32, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert model.layers[1].gamma.dtype == "float32"
    if policy == "mixed_float16":
        assert model.layers[1].compute_dtype == "float16"


def test_train_step_compiles_with_the_analytic_gradient(rng):
    model = _conv_net()
    model.build((None, 8, 8, 1))
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    x, labels = _learnable_data(rng, 32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def train_step(x, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    hlo = train_step.experimental_get_compiler_ir(x, labels)(stage="hlo")
    assert hlo.startswith("HloModule")
    # The backward pass's two per-channel sums are XLA reductions; there is
    # no TF fused batch-norm kernel for XLA to lower.
    assert "reduce(" in hlo and "batch-norm" not in hlo
    first = float(train_step(x, labels))
    for _ in range(20):
        last = float(train_step(x, labels))
    assert last < first


def test_sgd_leaves_a_dense_bias_before_batch_norm_where_it_started(rng):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                4, bias_initializer=keras.initializers.RandomNormal(seed=3)
            ),
            keras_bn.BatchNormalization(),
        ]
    )
    bias = model.layers[0].bias
    start = bias.numpy().copy()
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.normal(3.0, 1.0, size=(64, 4)).astype("float32")
    model.fit(x, y, batch_size=64, epochs=300, verbose=0)
    # Same bound as the ops-level test: float32 rounding only.
    assert np.max(np.abs(bias.numpy() - start)) < 1e-4
    assert np.max(np.abs(model.layers[0].kernel.numpy())) > 0
