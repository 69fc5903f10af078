"""Masks and non-float inputs, read exactly as Keras 3.15's layer reads them.

Keras gives a mask of rank `rank(inputs) - 1` a trailing axis and broadcasts
it to the input, whatever `axis` is; it tests the mask for truth; it
normalizes integer and boolean inputs in float32. Every case is compared with
`keras.layers.BatchNormalization` (output, gradients by autodiff, moving
statistics) or, where Keras has no equivalent, with NumPy in float64.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests.helpers.layers import assert_close, bn_pair, random_bn_weights, train_step
from tests.helpers.reference import batchnorm_train

KERAS_MASK_CASES = {
    # Behind a Masking layer with axis=1 the mask (5, 2) → (5, 2, 1) varies
    # along the channel axis: Keras' test_correctness8-15.
    "channels_first_sequence": dict(shape=(5, 2, 3), mask=(5, 2), axis=1),
    "channels_first_image": dict(shape=(4, 3, 5, 2), mask=(4, 3, 5), axis=1),
    "sequence": dict(shape=(5, 8, 3), mask=(5, 8), axis=-1),
    # Keras' test_masked_broadcast_normalization: a mask broadcast over axes.
    "broadcast": dict(shape=(3, 2, 3, 4), mask=(1, 2, 1), axis=-1),
    "broadcast_batch": dict(shape=(6, 4, 3), mask=(6, 1), axis=-1),
}


@pytest.mark.parametrize("case", KERAS_MASK_CASES)
def test_masked_training_matches_keras(rng, case):
    shape, mask_shape, axis = KERAS_MASK_CASES[case].values()
    ours, theirs = bn_pair(rng, shape, axis=axis, momentum=0.5)
    x = tf.constant(rng.normal(1.0, 2.0, shape), "float32")
    mask = tf.constant(rng.uniform(size=mask_shape) > 0.3)
    upstream = tf.constant(rng.normal(size=shape), "float32")
    for a, b in zip(
        train_step(ours, x, upstream, mask),
        train_step(theirs, x, upstream, mask),
        strict=True,
    ):
        assert_close(a, b)
    assert_close(ours.moving_mean.numpy(), theirs.moving_mean.numpy())
    assert_close(ours.moving_variance.numpy(), theirs.moving_variance.numpy())


def test_mask_behind_masking_layer_in_a_compiled_model_matches_keras(rng):
    shape = (6, 4, 3)
    x = rng.normal(size=shape).astype("float32")
    # Masking(0.0) hides these steps; every step stays visible in some example.
    x[rng.uniform(size=shape[:2]) < 0.4] = 0.0
    x[0] = rng.normal(size=shape[1:])
    outputs = []
    for cls in (keras_bn.BatchNormalization, keras.layers.BatchNormalization):
        inputs = keras.Input(shape[1:])
        bn = cls(axis=1, momentum=0.0)
        model = keras.Model(inputs, bn(keras.layers.Masking()(inputs)))
        train = tf.function(lambda x, m=model: m(x, training=True), jit_compile=True)
        outputs.append((train(x), bn.moving_mean.numpy(), bn.moving_variance.numpy()))
    for a, b in zip(*outputs, strict=True):
        assert_close(a, b)


def test_list_axis_mask_matches_numpy(rng):
    """Keras has no list axis; NumPy applies the same broadcasting rule."""
    shape, epsilon = (6, 3, 4, 5), 1e-3
    layer = keras_bn.BatchNormalization(axis=[1, 3], momentum=0.0, epsilon=epsilon)
    x = rng.normal(2.0, 3.0, shape)
    mask = rng.uniform(size=shape[:-1]) > 0.4
    y = layer(tf.constant(x, "float32"), training=True, mask=tf.constant(mask))
    expected, mean, variance = batchnorm_train(x, (0, 2), epsilon, mask[..., None])
    assert_close(y, expected)
    assert_close(layer.moving_mean.numpy(), mean[0, :, 0, :])
    assert_close(layer.moving_variance.numpy(), variance[0, :, 0, :])


def test_non_boolean_mask_is_read_as_truth_values(rng):
    shape = (5, 6, 3)
    ours, theirs = bn_pair(rng, shape)
    x = tf.constant(rng.normal(size=shape), "float32")
    # 0.5 and 2 are "present" for Keras, not weights.
    mask = tf.constant(rng.choice([0.0, 0.5, 2.0], size=shape[:2]), "float32")
    assert_close(ours(x, training=True, mask=mask), theirs(x, training=True, mask=mask))


@pytest.mark.parametrize(
    "shape, mask_shape",
    [((10, 3), (8,)), ((2, 4, 3), (2, 5)), ((1, 2, 3, 4), (3, 2, 1))],
)
@pytest.mark.parametrize("training", [True, False])
def test_mask_that_cannot_broadcast_names_the_layer_and_both_shapes(
    shape, mask_shape, training
):
    layer = keras_bn.BatchNormalization(name="masked_bn")
    pattern = (
        rf"masked_bn.*cannot be broadcast.*mask.shape={re.escape(str(mask_shape))}"
        rf".*inputs.shape={re.escape(str(shape))}"
    )
    with pytest.raises(ValueError, match=pattern):
        layer(tf.zeros(shape), training=training, mask=tf.ones(mask_shape, "bool"))


def test_mask_with_unknown_sizes_is_accepted_when_traced(rng):
    layer = keras_bn.BatchNormalization(momentum=0.0)
    reference = keras.layers.BatchNormalization(momentum=0.0)
    spec = [tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, None], tf.bool)]
    x = tf.constant(rng.normal(size=(4, 5, 3)), "float32")
    mask = tf.constant(rng.uniform(size=(4, 5)) > 0.5)
    ours = tf.function(
        lambda x, m: layer(x, training=True, mask=m), input_signature=spec
    )
    assert_close(ours(x, mask), reference(x, training=True, mask=mask))


# -- integer and boolean inputs -------------------------------------------------


def _integer_input(dtype):
    values = np.arange(24).reshape(6, 4) * 10
    return values % 3 == 0 if dtype == "bool" else values.astype(dtype)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "int64", "bool"])
@pytest.mark.parametrize("training", [True, False])
def test_integer_and_boolean_inputs_are_normalized_in_float32_like_keras(
    rng, dtype, training
):
    ours, theirs = bn_pair(rng, (6, 4), momentum=0.5)
    x = _integer_input(dtype)
    y = ours(x, training=training)
    assert y.dtype == "float32"
    assert_close(y, theirs(x, training=training))
    assert_close(ours.moving_variance.numpy(), theirs.moving_variance.numpy())


def test_integer_input_in_a_compiled_function_matches_numpy():
    layer = keras_bn.BatchNormalization(epsilon=1e-3)
    x = _integer_input("uint8")
    y = tf.function(lambda x: layer(x, training=True), jit_compile=True)(x)
    expected, _, _ = batchnorm_train(x, (0,), 1e-3)
    assert_close(y, expected)


def test_a_channel_the_mask_hides_keeps_its_moving_statistics(rng):
    """axis=1 behind a mask: channel 2 is hidden in every example."""
    layer = keras_bn.BatchNormalization(axis=1, momentum=0.0)
    layer.build((6, 4, 3))
    layer.set_weights(random_bn_weights(layer, rng))
    before = layer.get_weights()
    x = rng.normal(size=(6, 4, 3))
    mask = np.ones((6, 4), bool)
    mask[:, 2] = False
    layer(tf.constant(x, "float32"), training=True, mask=tf.constant(mask))
    mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    assert mean[2] == before[2][2] and variance[2] == before[3][2]
    visible = [0, 1, 3]  # momentum 0: this batch's statistics
    assert_close(mean[visible], x.mean((0, 2))[visible])
    assert_close(variance[visible], x.var((0, 2))[visible])
