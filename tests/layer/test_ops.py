"""keras_bn.ops: the analytic backward pass against finite differences and autodiff."""

import numpy as np
import pytest
import tensorflow as tf

from keras_bn import ops
from tests import tolerances as tol
from tests.helpers.reference import batchnorm_train


def _reference_train(x, gamma, beta, axes, epsilon, weights=None, r=None, d=None):
    """Batch norm written with plain TF ops, for autodiff to differentiate."""
    if weights is None:
        weights = tf.ones_like(x)
    weights = tf.broadcast_to(tf.cast(weights, x.dtype), tf.shape(x))
    count = tf.reduce_sum(weights, axes, keepdims=True)
    mean = tf.reduce_sum(weights * x, axes, keepdims=True) / count
    variance = tf.reduce_sum(weights * tf.square(x - mean), axes, keepdims=True) / count
    x_hat = (x - mean) / tf.sqrt(variance + epsilon)
    if r is not None:
        x_hat = x_hat * r + d
    return gamma * x_hat + beta


def _params(rng, shape, dtype="float64"):
    gamma = tf.constant(rng.normal(1.0, 0.5, shape), dtype)
    beta = tf.constant(rng.normal(0.0, 0.5, shape), dtype)
    return gamma, beta


def _analytic(x, gamma, beta, axes, epsilon, weights=None, r=None, d=None):
    stats = ops.moments(x, axes, weights=weights)
    return ops.batch_norm_train(
        x, gamma, beta, stats, axes=axes, epsilon=epsilon, weights=weights, r=r, d=d
    )


def _max_jacobian_error(f, args):
    theoretical, numerical = tf.test.compute_gradient(f, args)
    return max(
        np.max(np.abs(t - n)) for t, n in zip(theoretical, numerical, strict=True)
    )


CASES = {
    "dense": ((8, 5), [0]),
    "conv_channels_last": ((3, 4, 4, 3), [0, 1, 2]),
    "conv_channels_first": ((3, 3, 4, 4), [0, 2, 3]),
    "sequence": ((4, 6, 3), [0, 1]),
}


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_finite_differences_float64(rng, case):
    shape, axes = CASES[case]
    x = tf.constant(rng.normal(2.0, 3.0, shape))
    param_shape = [1 if a in axes else n for a, n in enumerate(shape)]
    gamma, beta = _params(rng, param_shape)
    error = _max_jacobian_error(
        lambda x, g, b: _analytic(x, g, b, axes, 1e-3), [x, gamma, beta]
    )
    assert error <= tol.GRADIENT_CHECK_FLOAT64


def test_masked_gradient_matches_finite_differences_float64(rng):
    x = tf.constant(rng.normal(size=(3, 5, 2)))
    mask = np.ones((3, 5, 1))
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    weights = tf.constant(mask)
    gamma, beta = _params(rng, (1, 1, 2))
    error = _max_jacobian_error(
        lambda x, g, b: _analytic(x, g, b, [0, 1], 1e-3, weights=weights),
        [x, gamma, beta],
    )
    assert error <= tol.GRADIENT_CHECK_FLOAT64


def test_renorm_gradient_treats_r_and_d_as_constants(rng):
    x = tf.constant(rng.normal(size=(6, 4)))
    gamma, beta = _params(rng, (1, 4))
    r = tf.constant(rng.uniform(0.5, 2.0, (1, 4)))
    d = tf.constant(rng.normal(size=(1, 4)))
    upstream = tf.constant(rng.normal(size=(6, 4)))
    grads = []
    for f in (_analytic, _reference_train):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            loss = tf.reduce_sum(upstream * f(x, gamma, beta, [0], 1e-3, r=r, d=d))
        grads.append(tape.gradient(loss, [x, gamma, beta]))
    for ours, reference in zip(*grads, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_autodiff_float32(rng, case):
    shape, axes = CASES[case]
    x = tf.constant(rng.normal(2.0, 3.0, shape), "float32")
    param_shape = [1 if a in axes else n for a, n in enumerate(shape)]
    gamma, beta = _params(rng, param_shape, "float32")
    upstream = tf.constant(rng.normal(size=shape), "float32")
    results = []
    for f in (_analytic, _reference_train):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = f(x, gamma, beta, axes, 1e-3)
            loss = tf.reduce_sum(upstream * y)
        results.append([y, *tape.gradient(loss, [x, gamma, beta])])
    for ours, reference in zip(*results, strict=True):
        scale = np.max(np.abs(reference))
        assert np.max(np.abs(ours - reference)) <= tol.PARITY_FLOAT32_RTOL * scale


def test_large_mean_variance_is_accurate(rng):
    x = (1e4 + 0.1 * rng.normal(size=(512, 8))).astype("float32")
    stats = ops.moments(tf.constant(x), [0])
    expected = x.astype("float64").var(axis=0)
    relative = np.abs(stats.variance.numpy()[0] - expected) / expected
    assert relative.max() <= tol.LARGE_MEAN_VARIANCE_RTOL
    # What the issue rules out, for contrast: the raw-moment formula.
    raw = (
        np.mean(x**2, axis=0, dtype=np.float32)
        - np.mean(x, axis=0, dtype=np.float32) ** 2
    )
    assert np.max(np.abs(raw - expected) / expected) > tol.LARGE_MEAN_VARIANCE_RTOL


@pytest.mark.parametrize("jit_compile", [False, True])
def test_large_mean_output_matches_float64(rng, jit_compile):
    x = (1e4 + 0.1 * rng.normal(size=(256, 8))).astype("float32")
    ones, zeros = tf.ones((1, 8)), tf.zeros((1, 8))
    f = tf.function(
        lambda x: _analytic(x, ones, zeros, [0], 1e-3), jit_compile=jit_compile
    )
    y = f(tf.constant(x)).numpy()
    expected, _, _ = batchnorm_train(x, (0,), 1e-3)
    assert np.max(np.abs(y - expected)) <= tol.LARGE_MEAN_OUTPUT_ATOL


@pytest.mark.parametrize(
    "x",
    [np.array([[1.0, -2.0, 3.0]]), np.full((5, 3), 7.0)],
    ids=["batch_of_one", "constant_channel"],
)
def test_degenerate_batches_give_finite_outputs_and_gradients(x):
    x = tf.constant(x, "float32")
    gamma, beta = tf.fill((1, 3), 2.0), tf.fill((1, 3), 0.5)
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        y = _analytic(x, gamma, beta, [0], 1e-3)
        loss = tf.reduce_sum(y * tf.range(1.0, 4.0))
    grads = tape.gradient(loss, [x, gamma, beta])
    for t in (y, *grads):
        assert np.all(np.isfinite(t))
    # Every value equals its channel's mean: x̂ = 0, so the output is β.
    np.testing.assert_allclose(y, np.broadcast_to(beta, y.shape))


def test_variance_is_never_negative(rng):
    x = np.full((64, 4), 1e4, "float32") + np.float32(1e-3) * rng.integers(
        0, 2, (64, 4)
    )
    stats = ops.moments(tf.constant(x), [0])
    assert np.all(stats.variance.numpy() >= 0)


# -- the properties of the seeds -------------------------------------------


def _dense_bn(u, kernel, bias, gamma, beta, epsilon=1e-3):
    return _analytic(u @ kernel + bias, gamma, beta, [0], epsilon)


def test_bias_before_batch_norm_gets_zero_gradient(rng):
    u = tf.constant(rng.normal(size=(32, 6)))
    kernel = tf.constant(rng.normal(size=(6, 4)))
    bias = tf.constant(rng.normal(size=(4,)))
    gamma, beta = _params(rng, (1, 4))
    upstream = tf.constant(rng.normal(size=(32, 4)))
    with tf.GradientTape() as tape:
        tape.watch([kernel, bias])
        loss = tf.reduce_sum(upstream * _dense_bn(u, kernel, bias, gamma, beta))
    d_kernel, d_bias = tape.gradient(loss, [kernel, bias])
    # d_bias = Σ_i dx_i, a sum of terms each as large as the kernel gradient.
    assert np.max(np.abs(d_bias)) <= tol.ZERO_GRADIENT_RTOL * np.max(np.abs(d_kernel))


def _mean_as_constant(x, gamma, beta, epsilon=1e-3):
    """The mistake the analytic gradient avoids: batch statistics as constants."""
    mean, variance = tf.nn.moments(x, [0], keepdims=True)
    mean, variance = tf.stop_gradient(mean), tf.stop_gradient(variance)
    return gamma * (x - mean) / tf.sqrt(variance + epsilon) + beta


def _train_bias(normalize, rng, steps=300, lr=0.1):
    u = tf.constant(rng.normal(size=(64, 6)), "float32")
    target = tf.constant(rng.normal(3.0, 1.0, size=(64, 4)), "float32")
    kernel = tf.Variable(rng.normal(size=(6, 4)) * 0.3, dtype="float32")
    bias = tf.Variable(rng.normal(size=(4,)), dtype="float32")
    gamma = tf.Variable(tf.ones((1, 4)))
    beta = tf.Variable(tf.zeros((1, 4)))
    start = bias.numpy().copy()
    variables = [kernel, bias, gamma, beta]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = normalize(u @ kernel + bias, gamma, beta)
            loss = tf.reduce_mean(tf.square(y - target))
        for v, g in zip(variables, tape.gradient(loss, variables), strict=True):
            v.assign_sub(lr * g)

    for _ in range(steps):
        step()
    return np.max(np.abs(bias.numpy() - start))


def test_training_leaves_bias_before_batch_norm_in_place(rng):
    analytic = _train_bias(lambda x, g, b: _analytic(x, g, b, [0], 1e-3), rng)
    naive = _train_bias(_mean_as_constant, np.random.default_rng(1234))
    # float32 rounding of Σdx ≈ 0 over 300 steps of lr 0.1 stays far below
    # the drift that treating the mean as a constant causes.
    assert analytic < 1e-4
    assert naive > 0.5


@pytest.mark.parametrize("a", [0.1, 10.0])
def test_scale_invariance_of_output_and_gradient(rng, a):
    # ε breaks the invariance by ε/σ²; a tiny ε isolates the property itself.
    epsilon = 1e-12
    u = tf.constant(rng.normal(size=(32, 6)))
    kernel = tf.constant(rng.normal(size=(6, 4)))
    gamma, beta = _params(rng, (1, 4))
    upstream = tf.constant(rng.normal(size=(32, 4)))
    zero_bias = tf.zeros((4,), "float64")
    outputs, grads = [], []
    for w in (kernel, a * kernel):
        with tf.GradientTape() as tape:
            tape.watch(w)
            y = _dense_bn(u, w, zero_bias, gamma, beta, epsilon)
            loss = tf.reduce_sum(upstream * y)
        outputs.append(y)
        grads.append(tape.gradient(loss, w))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grads[1], grads[0] / a, rtol=1e-8, atol=1e-10)


def test_batch_statistics_as_gamma_and_beta_give_the_identity(rng):
    x = tf.constant(rng.normal(5.0, 2.0, size=(16, 3)))
    epsilon = 1e-3
    mean = np.mean(x, axis=0, keepdims=True)
    variance = np.var(x, axis=0, keepdims=True)
    gamma = tf.constant(np.sqrt(variance + epsilon))
    beta = tf.constant(mean)
    np.testing.assert_allclose(_analytic(x, gamma, beta, [0], epsilon), x, rtol=1e-12)
