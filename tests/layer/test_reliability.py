"""The layer where users met crashes: ghost batches under `fit(jit_compile=True)`
with a partial last batch, and a mask of the wrong size inside a `tf.function`
whose shapes are unknown when traced."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests.helpers.population import bn_train_numpy
from tests.tolerances import PARITY_FLOAT32_ATOL, PARITY_FLOAT32_RTOL

layers = keras.layers


@pytest.mark.parametrize(
    "front, shape",
    [(layers.Dense(3), (5,)), (layers.Conv2D(3, 3), (6, 6, 2))],
    ids=["dense", "conv2d"],
)
def test_ghost_batches_train_under_xla_with_a_partial_last_batch(front, shape):
    # 37 examples in batches of 16: the last batch of 5 is a ghost batch of 4
    # and one of 1; XLA needs every shape of the grouping to be static.
    keras.utils.set_random_seed(21)
    bn = keras_bn.BatchNormalization(virtual_batch_size=4, momentum=0.0)
    model = keras.Sequential([keras.Input(shape), front, bn])
    # A zero learning rate keeps the front layer as it is, so the reference
    # can compute the BN's input; momentum 0 leaves the last batch's statistics.
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
    x = np.random.default_rng(21).normal(0.5, 2.0, (37, *shape)).astype("float32")
    y = np.zeros((37, *model.output_shape[1:]), "float32")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    h = np.asarray(front(x[32:]), np.float64)
    _, groups = bn_train_numpy(bn, h)
    assert [int(n[0]) for _, _, n in groups] == [
        4 * h[0, ..., 0].size,
        h[0, ..., 0].size,
    ]
    counts = np.stack([n for _, _, n in groups])
    mean = (counts * np.stack([m for m, _, _ in groups])).sum(0) / counts.sum(0)
    variance = (counts * np.stack([v for _, v, _ in groups])).sum(0) / counts.sum(0)
    np.testing.assert_allclose(
        bn.moving_mean, mean, rtol=PARITY_FLOAT32_RTOL, atol=PARITY_FLOAT32_ATOL
    )
    np.testing.assert_allclose(
        bn.moving_variance, variance, rtol=PARITY_FLOAT32_RTOL, atol=PARITY_FLOAT32_ATOL
    )


@pytest.mark.parametrize("training", [True, False])
def test_a_wrong_size_mask_is_named_when_sizes_are_known_only_at_run_time(training):
    bn = keras_bn.BatchNormalization(name="my_bn")
    bn.build((None, None, 3))
    step = tf.function(
        lambda x, mask: bn(x, training=training, mask=mask),
        input_signature=[
            tf.TensorSpec((None, None, 3)),
            tf.TensorSpec((None, None), tf.bool),
        ],
    )
    x = np.random.default_rng(22).normal(size=(2, 5, 3)).astype("float32")
    with pytest.raises(ValueError, match="my_bn.*mask.*cannot be broadcast"):
        bn(x, training=training, mask=np.ones((2, 6), bool))  # eager: sizes known
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="my_bn.*mask.*cannot be broadcast"
    ):
        step(x, np.ones((2, 6), bool))
    mask = np.random.default_rng(22).uniform(size=(2, 5)) > 0.3
    np.testing.assert_allclose(
        step(x, mask),
        bn(x, training=training, mask=mask),
        rtol=PARITY_FLOAT32_RTOL,
        atol=PARITY_FLOAT32_ATOL,
    )
