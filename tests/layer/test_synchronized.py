"""synchronized=True on two replicas equals one device on the concatenated batch.

conftest.py splits the CPU into two logical devices before TensorFlow starts.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests import tolerances as tol
from tests.helpers.layers import assert_close, random_bn_weights

SHAPE = (8, 3, 3, 4)
HALF = SHAPE[0] // 2


@pytest.fixture(scope="module")
def strategy():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _step(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(upstream * y)
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


def _split(strategy, array):
    def piece(ctx):
        i = ctx.replica_id_in_sync_group
        return array[i * HALF : (i + 1) * HALF]

    return strategy.experimental_distribute_values_from_function(piece)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"renorm": True}, {"unbiased_moving_variance": True}, {"axis": 1}],
    ids=["plain", "renorm", "unbiased", "channels_first"],
)
def test_two_replicas_equal_one_device_on_the_whole_batch(rng, strategy, kwargs):
    shape = SHAPE if "axis" not in kwargs else (8, 4, 3, 3)
    # A large mean: the combination must be exact, not raw sums of squares.
    x = rng.normal(1e3, 2.0, shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    with strategy.scope():
        synced = keras_bn.BatchNormalization(synchronized=True, momentum=0.5, **kwargs)
        synced.build(shape)
    single = keras_bn.BatchNormalization(momentum=0.5, **kwargs)
    single.build(shape)
    weights = random_bn_weights(single, rng)
    synced.set_weights(weights)
    single.set_weights(weights)

    run = tf.function(
        lambda x, u: strategy.run(lambda a, b: _step(synced, a, b), args=(x, u))
    )
    results = run(_split(strategy, x), _split(strategy, upstream))
    y, dx, d_gamma, d_beta = (strategy.experimental_local_results(t) for t in results)
    expected = _step(single, tf.constant(x), tf.constant(upstream))

    assert_close(np.concatenate(y), expected[0])
    assert_close(np.concatenate(dx), expected[1])
    # Each replica returns its own part of dγ, dβ; the optimizer sums them.
    assert_close(np.sum(d_gamma, axis=0), expected[2])
    assert_close(np.sum(d_beta, axis=0), expected[3])
    for a, b in zip(synced.weights, single.weights, strict=True):
        assert_close(a.numpy(), b.numpy())


def test_unsynchronized_replicas_do_differ(rng, strategy):
    """The test above could fail: without synchronization the statistics are local."""
    x = rng.normal(size=SHAPE).astype("float32")
    x[HALF:] += 3.0
    with strategy.scope():
        local = keras_bn.BatchNormalization()
        local.build(SHAPE)
    single = keras_bn.BatchNormalization()
    run = tf.function(
        lambda x: strategy.run(lambda a: local(a, training=True), args=(x,))
    )
    y = np.concatenate(strategy.experimental_local_results(run(_split(strategy, x))))
    assert (
        np.max(np.abs(y - single(tf.constant(x), training=True)))
        > tol.PARITY_FLOAT32_RTOL
    )


def test_synchronized_outside_a_replica_context_uses_the_local_batch(rng):
    x = tf.constant(rng.normal(size=(6, 3)), "float32")
    synced = keras_bn.BatchNormalization(synchronized=True)
    plain = keras_bn.BatchNormalization()
    np.testing.assert_allclose(
        synced(x, training=True), plain(x, training=True), rtol=1e-6
    )
