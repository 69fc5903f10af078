"""virtual_batch_size (ghost batches) and the unbiased moving variance, against NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests import tolerances as tol
from tests.helpers.layers import assert_close, random_bn_weights
from tests.helpers.reference import batchnorm_train


def _ghost_reference(x, k, epsilon):
    groups = x.reshape((-1, k, *x.shape[1:]))
    y, mean, variance = batchnorm_train(
        groups, tuple(range(1, groups.ndim - 1)), epsilon
    )
    return y.reshape(x.shape), mean.mean(0).ravel(), variance.mean(0).ravel()


@pytest.mark.parametrize(
    "shape, k", [((12, 5), 3), ((8, 4, 4, 3), 2), ((8, 4, 4, 3), 8)]
)
def test_each_group_is_normalized_by_its_own_statistics(rng, shape, k):
    layer = keras_bn.BatchNormalization(virtual_batch_size=k, momentum=0.0)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    x[:k] += 10.0  # a group unlike the others
    y = layer(tf.constant(x), training=True)
    expected, mean, variance = _ghost_reference(x, k, layer.epsilon)
    assert_close(y, expected)
    # The moving statistics average the groups' (momentum 0: this batch's).
    assert_close(layer.moving_mean.numpy(), mean)
    assert_close(layer.moving_variance.numpy(), variance)


def test_ghost_gradient_matches_finite_differences_float64(rng):
    layer = keras_bn.BatchNormalization(virtual_batch_size=3, dtype="float64")
    layer.build((9, 4))
    layer.set_weights(random_bn_weights(layer, rng))
    x = tf.constant(rng.normal(size=(9, 4)))
    # Three values per group make σ small and the curvature large; the default
    # step (~1e-3) then leaves ~1e-5 of truncation error, a step of 1e-5 ~1e-9.
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: layer(x, training=True), [x], delta=1e-5
    )
    assert np.max(np.abs(theoretical[0] - numerical[0])) <= tol.GRADIENT_CHECK_FLOAT64


def test_ghost_with_renorm_gradient_matches_autodiff_float64(rng):
    """r and d are constants (Ioffe 2017), so the reference stops their gradient."""
    k, shape = 2, (6, 3)
    layer = keras_bn.BatchNormalization(
        virtual_batch_size=k, renorm=True, dtype="float64"
    )
    layer.build(shape)
    layer.set_weights(random_bn_weights(layer, rng))
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    renorm_mean, renorm_stddev = layer.renorm_mean.numpy(), layer.renorm_stddev.numpy()
    x = tf.constant(rng.normal(size=shape))
    upstream = tf.constant(rng.normal(size=shape))

    def reference(x):
        groups = tf.reshape(x, (-1, k, shape[1]))
        mean, variance = tf.nn.moments(groups, [1], keepdims=True)
        stddev = tf.sqrt(variance + layer.epsilon)
        r = tf.stop_gradient(stddev / renorm_stddev)
        d = tf.stop_gradient((mean - renorm_mean) / renorm_stddev)
        y = ((groups - mean) / stddev * r + d) * gamma + beta
        return tf.reshape(y, shape)

    grads = []
    for f in (lambda x: layer(x, training=True), reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(upstream * f(x))
        grads.append(tape.gradient(loss, x))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def _partial_ghost_reference(x, k, epsilon):
    """Groups of k consecutive rows, the remainder one smaller group, in float64.

    The moving statistics are the groups' averaged with each group weighted
    by its size (keras_bn's documented rule).
    """
    x = x.astype("float64")
    ys, means, variances, sizes = [], [], [], []
    for start in range(0, len(x), k):
        group = x[start : start + k]
        y, mean, variance = batchnorm_train(
            group, tuple(range(group.ndim - 1)), epsilon
        )
        ys.append(y)
        means.append(mean.ravel())
        variances.append(variance.ravel())
        sizes.append(len(group))
    sizes = np.array(sizes, "float64")[:, None]
    average = lambda v: (sizes * np.array(v)).sum(0) / sizes.sum()  # noqa: E731
    return np.concatenate(ys), average(means), average(variances)


# "function" leaves the batch size unknown when traced, as `fit` does.
PARTIAL_MODES = {
    "eager": lambda f, shape: f,
    "function": lambda f, shape: tf.function(
        f, input_signature=[tf.TensorSpec((None, *shape[1:]))]
    ),
    "xla": lambda f, shape: tf.function(f, jit_compile=True),
}


@pytest.mark.parametrize("mode", PARTIAL_MODES)
@pytest.mark.parametrize("shape, k", [((10, 3), 4), ((3, 3), 4), ((7, 2, 2, 3), 3)])
def test_partial_ghost_batch_normalizes_the_remainder_as_one_group(rng, mode, shape, k):
    layer = keras_bn.BatchNormalization(virtual_batch_size=k, momentum=0.0)
    layer.build((None, *shape[1:]))
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    x[-1] += 5.0  # the last group unlike the others
    y = PARTIAL_MODES[mode](lambda x: layer(x, training=True), shape)(tf.constant(x))
    expected, mean, variance = _partial_ghost_reference(x, k, layer.epsilon)
    assert_close(y, expected)
    assert_close(layer.moving_mean.numpy(), mean)
    assert_close(layer.moving_variance.numpy(), variance)


def test_partial_ghost_gradient_matches_finite_differences_float64(rng):
    layer = keras_bn.BatchNormalization(virtual_batch_size=4, dtype="float64")
    layer.build((10, 3))
    layer.set_weights(random_bn_weights(layer, rng))
    x = tf.constant(rng.normal(size=(10, 3)))
    # Groups of 4, 4 and 2: as above, a small step for the small groups.
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: layer(x, training=True), [x], delta=1e-5
    )
    assert np.max(np.abs(theoretical[0] - numerical[0])) <= tol.GRADIENT_CHECK_FLOAT64


def test_partial_ghost_batch_with_mask_matches_numpy(rng):
    layer = keras_bn.BatchNormalization(virtual_batch_size=4, momentum=0.0)
    x = rng.normal(size=(6, 5, 2)).astype("float32")
    mask = rng.uniform(size=(6, 5)) > 0.3
    y = layer(tf.constant(x), training=True, mask=tf.constant(mask))
    expected = np.empty(x.shape, "float64")
    for rows in (slice(0, 4), slice(4, 6)):
        expected[rows], _, _ = batchnorm_train(
            x[rows], (0, 1), layer.epsilon, mask[rows, :, None]
        )
    assert_close(y, expected)


def test_fit_trains_on_a_last_batch_smaller_than_the_virtual_batch_size(rng):
    """200 examples in batches of 32 leave a last batch of 8 < k = 16."""
    x = rng.normal(1.0, 2.0, (200, 3)).astype("float32")
    bn = keras_bn.BatchNormalization(virtual_batch_size=16, momentum=0.0)
    model = keras.Sequential([keras.Input((3,)), bn])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(x, x, batch_size=32, epochs=1, shuffle=False, verbose=0)
    # momentum 0: the statistics of the last batch, one group of 8.
    last = x[192:].astype("float64")
    assert_close(bn.moving_mean.numpy(), last.mean(0))
    assert_close(bn.moving_variance.numpy(), last.var(0))


def test_inference_ignores_the_virtual_batch_size(rng):
    ghost = keras_bn.BatchNormalization(virtual_batch_size=4)
    plain = keras_bn.BatchNormalization()
    ghost.build((8, 3))
    plain.build((8, 3))
    weights = random_bn_weights(plain, rng)
    ghost.set_weights(weights)
    plain.set_weights(weights)
    x = tf.constant(rng.normal(size=(5, 3)), "float32")  # any batch size
    np.testing.assert_array_equal(ghost(x), plain(x))


@pytest.mark.parametrize("kwargs", [{}, {"renorm": True}, {"virtual_batch_size": 4}])
def test_unbiased_moving_variance_is_bessel_corrected(rng, kwargs):
    m = 8
    biased = keras_bn.BatchNormalization(momentum=0.0, **kwargs)
    unbiased = keras_bn.BatchNormalization(
        momentum=0.0, unbiased_moving_variance=True, **kwargs
    )
    x = tf.constant(rng.normal(size=(m, 3)), "float32")
    y_biased, y_unbiased = biased(x, training=True), unbiased(x, training=True)
    # Normalization itself uses the biased batch variance either way.
    np.testing.assert_array_equal(y_biased, y_unbiased)
    n = kwargs.get("virtual_batch_size", m)
    expected = biased.moving_variance.numpy() * n / (n - 1)
    assert_close(unbiased.moving_variance.numpy(), expected)


def test_unbiased_matches_numpy_ddof_1(rng):
    layer = keras_bn.BatchNormalization(momentum=0.0, unbiased_moving_variance=True)
    x = rng.normal(size=(10, 4)).astype("float32")
    layer(tf.constant(x), training=True)
    assert_close(layer.moving_variance.numpy(), x.astype("float64").var(axis=0, ddof=1))
