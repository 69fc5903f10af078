"""JAX-side helpers: one compiled training step of a layer, as `fit` runs it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np

import keras_bn
from keras_bn.stand_in_statistics import stand_in_values

# As tests/helpers/layers.py: β and the means with standard deviation 0.5.
LAYER_TEST_SPREAD = 0.5


def bn_pair(rng: np.random.Generator, input_shape, **kwargs):
    """keras_bn's and Keras' layer, built, with the same random weights."""
    ours = keras_bn.BatchNormalization(**kwargs)
    theirs = keras.layers.BatchNormalization(**kwargs)
    ours.build(input_shape)
    theirs.build(input_shape)
    weights = stand_in_values(theirs, rng, spread=LAYER_TEST_SPREAD)
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs


def train_step(layer, x, upstream, mask=None):
    """`jax.jit`-compiled training call: (y, dx, dγ, dβ, new non-trainable values).

    The gradients are those of `Σ upstream·layer(x)`, taken by `jax.grad`
    through `stateless_call`, the way Keras' JAX trainer takes them.
    """
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        y, updated = layer.stateless_call(
            trainable, frozen, x, training=True, mask=mask
        )
        return jnp.sum(upstream * y.astype(upstream.dtype)), (y, updated)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, (y, updated)), (d_trainable, dx) = step(trainable, jnp.asarray(x))
    return y, dx, d_trainable, updated


def assert_close(actual, expected, rtol: float) -> None:
    """Max error relative to the largest reference value."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected)), 1e-30)
    error = np.max(np.abs(actual - expected)) if actual.size else 0.0
    assert error <= rtol * scale, f"max error {error:.3g} > {rtol:.3g} x {scale:.3g}"
