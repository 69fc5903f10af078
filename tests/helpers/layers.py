"""Shared helpers for the layer tests: BN weights far from the defaults, a close check."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

import keras_bn
from keras_bn.stand_in_statistics import stand_in_values
from tests import tolerances as tol

# β and the means with standard deviation 0.5: far enough from 0 that a
# wrong sign or a dropped term shows, small enough to keep unit-scale data.
LAYER_TEST_SPREAD = 0.5


def random_bn_weights(
    layer: keras.layers.Layer, rng: np.random.Generator
) -> list[np.ndarray]:
    """Non-default values for every weight, so parity cannot hold by accident."""
    return stand_in_values(layer, rng, spread=LAYER_TEST_SPREAD)


def assert_close(actual, expected, rtol: float = tol.PARITY_FLOAT32_RTOL) -> None:
    """Max error relative to the largest reference value."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected)), 1e-30)
    error = np.max(np.abs(actual - expected)) if actual.size else 0.0
    assert error <= rtol * scale, f"max error {error:.3g} > {rtol:.3g} x {scale:.3g}"


def bn_pair(rng: np.random.Generator, input_shape, **kwargs):
    """keras_bn's and Keras' layer, built, with the same random weights."""
    ours = keras_bn.BatchNormalization(**kwargs)
    theirs = keras.layers.BatchNormalization(**kwargs)
    ours.build(input_shape)
    theirs.build(input_shape)
    weights = random_bn_weights(theirs, rng)
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs


def train_step(layer, x, upstream, mask=None) -> list:
    """Output and gradients of `Σ upstream·layer(x)` w.r.t. x and the weights."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True, mask=mask)
        loss = tf.reduce_sum(upstream * tf.cast(y, upstream.dtype))
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [y, *grads]
