"""keras_bn.BatchNormalization on Keras' JAX backend: every numerical promise.

Each test asserts against an independent reference: JAX autodiff through a
plain two-pass BN in float64, Keras' own layer on JAX, or NumPy float64
(`tests.helpers.population.bn_train_numpy`). Training calls are compiled by
`jax.jit` as in `fit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import keras_bn
from keras_bn import ops
from tests import tolerances as tol
from tests.helpers.population import bn_train_numpy
from tests.jax.helpers import assert_close, bn_pair, train_step


def _reference_train(x, gamma, beta, axes, epsilon, weights=None, r=None, d=None):
    """Two-pass BN left to autodiff: no shift, no custom gradient."""
    w = jnp.ones_like(x) if weights is None else weights * jnp.ones_like(x)
    count = jnp.sum(w, axes, keepdims=True)
    mean = jnp.sum(w * x, axes, keepdims=True) / count
    variance = jnp.sum(w * (x - mean) ** 2, axes, keepdims=True) / count
    x_hat = (x - mean) / jnp.sqrt(variance + epsilon)
    if r is not None:
        x_hat = x_hat * r + d
    return x_hat * gamma + beta


def _ours_train(x, gamma, beta, axes, epsilon, weights=None, r=None, d=None):
    stats = ops.moments(x, axes, weights=weights)
    return ops.batch_norm_train(
        x, gamma, beta, stats, axes=axes, epsilon=epsilon, weights=weights, r=r, d=d
    )


GRADIENT_CASES = {
    "dense": ((8, 4), [0], False, False),
    "conv_channels_last": ((2, 3, 3, 4), [0, 1, 2], False, False),
    "conv_channels_first": ((2, 4, 3, 3), [0, 2, 3], False, False),
    "masked_sequence": ((3, 5, 2), [0, 1], True, False),
    "renorm": ((6, 4), [0], False, True),
}


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_gradient_matches_autodiff_float64(case, rng):
    shape, axes, masked, renorm = GRADIENT_CASES[case]
    param_shape = [1 if a in axes else n for a, n in enumerate(shape)]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(2.0, 3.0, shape))
        gamma = jnp.asarray(rng.normal(1.0, 0.5, param_shape))
        beta = jnp.asarray(rng.normal(0.0, 0.5, param_shape))
        upstream = jnp.asarray(rng.normal(size=shape))
        extra = {}
        if masked:
            mask = np.ones(shape[:-1] + (1,))
            mask[0, 3:] = 0
            mask[2, 1:] = 0
            extra["weights"] = jnp.asarray(mask)
        if renorm:
            extra["r"] = jnp.asarray(rng.uniform(0.5, 2.0, param_shape))
            extra["d"] = jnp.asarray(rng.normal(size=param_shape))
        grads = []
        for f in (_ours_train, _reference_train):

            def loss(x, gamma, beta, f=f):
                return jnp.sum(upstream * f(x, gamma, beta, axes, 1e-3, **extra))

            grads.append(jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, gamma, beta))
        for ours, reference in zip(*grads, strict=True):
            assert ours.dtype == jnp.float64
            np.testing.assert_allclose(
                ours,
                reference,
                rtol=tol.GRADIENT_AUTODIFF_FLOAT64_RTOL,
                atol=tol.GRADIENT_AUTODIFF_FLOAT64_ATOL,
            )


LAYER_CASES = {
    "dense": ((16, 5), {}),
    "channels_last": ((4, 3, 3, 6), {}),
    "channels_first": ((4, 6, 3, 3), {"axis": 1}),
    "no_scale_no_center": ((16, 5), {"scale": False, "center": False}),
}


@pytest.mark.parametrize("case", LAYER_CASES)
def test_training_step_matches_keras_layer(case, rng):
    shape, kwargs = LAYER_CASES[case]
    ours, theirs = bn_pair(rng, shape, momentum=0.8, **kwargs)
    x = rng.normal(1.0, 2.0, shape).astype("float32")
    upstream = jnp.asarray(rng.normal(size=shape).astype("float32"))
    results = [train_step(layer, x, upstream) for layer in (ours, theirs)]
    (y, dx, d_params, stats), (y_k, dx_k, d_params_k, stats_k) = results
    assert_close(y, y_k, tol.PARITY_FLOAT32_RTOL)
    assert_close(dx, dx_k, tol.PARITY_FLOAT32_RTOL)
    for ours_grad, keras_grad in zip(d_params, d_params_k, strict=True):
        assert_close(ours_grad, keras_grad, tol.PARITY_FLOAT32_RTOL)
    for ours_stat, keras_stat in zip(stats, stats_k, strict=True):
        assert_close(ours_stat, keras_stat, tol.PARITY_FLOAT32_RTOL)


def test_masked_training_matches_keras_layer(rng):
    shape = (4, 7, 3)
    ours, theirs = bn_pair(rng, shape, momentum=0.5)
    x = rng.normal(size=shape).astype("float32")
    mask = jnp.asarray(rng.uniform(size=shape[:-1]) > 0.3)
    upstream = jnp.asarray(rng.normal(size=shape).astype("float32"))
    ours_step = train_step(ours, x, upstream, mask=mask)
    keras_step = train_step(theirs, x, upstream, mask=mask)
    assert_close(ours_step[0], keras_step[0], tol.PARITY_FLOAT32_RTOL)
    assert_close(ours_step[1], keras_step[1], tol.PARITY_FLOAT32_RTOL)
    for ours_stat, keras_stat in zip(ours_step[3], keras_step[3], strict=True):
        assert_close(ours_stat, keras_stat, tol.PARITY_FLOAT32_RTOL)


def test_large_mean_keeps_variance_and_output(rng):
    x = (1e4 + 0.1 * rng.normal(size=(64, 8))).astype("float32")
    layer = keras_bn.BatchNormalization(momentum=0.0)
    layer.build(x.shape)
    y, _, _, (_, moving_variance) = train_step(layer, x, jnp.ones(x.shape))
    reference = np.asarray(x, np.float64)
    variance = reference.var(0)
    expected = (reference - reference.mean(0)) / np.sqrt(variance + layer.epsilon)
    np.testing.assert_allclose(
        moving_variance, variance, rtol=tol.LARGE_MEAN_VARIANCE_RTOL
    )
    np.testing.assert_allclose(y, expected, atol=tol.LARGE_MEAN_OUTPUT_ATOL)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_batch_leaves_moving_statistics_alone(bad, rng):
    layer = keras_bn.BatchNormalization(momentum=0.5, renorm=True)
    layer.build((8, 3))
    layer.set_weights(bn_pair(rng, (8, 3), renorm=True)[1].get_weights())
    before = [np.asarray(v) for v in layer.non_trainable_variables]
    x = rng.normal(size=(8, 3)).astype("float32")
    x[2, 1] = bad
    _, _, _, after = train_step(layer, x, jnp.ones(x.shape))
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_ghost_batches_with_a_partial_last_group(rng):
    layer = keras_bn.BatchNormalization(virtual_batch_size=4, momentum=0.0)
    layer.build((10, 3))
    layer.set_weights(bn_pair(rng, (10, 3))[1].get_weights())
    x = rng.normal(2.0, 1.5, (10, 3)).astype("float32")
    y, _, _, (moving_mean, moving_variance) = train_step(layer, x, jnp.ones(x.shape))
    expected, groups = bn_train_numpy(layer, x)
    counts = np.array([count for _, _, count in groups])  # per group and channel
    assert list(counts[:, 0]) == [4.0, 4.0, 2.0]
    means = np.stack([mean for mean, _, _ in groups])
    variances = np.stack([variance for _, variance, _ in groups])
    assert_close(y, expected, tol.PARITY_FLOAT32_RTOL)
    assert_close(moving_mean, (counts * means).sum(0) / 10, tol.PARITY_FLOAT32_RTOL)
    assert_close(
        moving_variance, (counts * variances).sum(0) / 10, tol.PARITY_FLOAT32_RTOL
    )


def test_unbiased_moving_variance(rng):
    layer = keras_bn.BatchNormalization(momentum=0.0, unbiased_moving_variance=True)
    x = rng.normal(size=(6, 2, 3)).astype("float32")
    layer.build(x.shape)
    _, _, _, (_, moving_variance) = train_step(layer, x, jnp.ones(x.shape))
    m = 12
    expected = np.asarray(x, np.float64).reshape(-1, 3).var(0) * m / (m - 1)
    assert_close(moving_variance, expected, tol.PARITY_FLOAT32_RTOL)


def test_renorm_matches_keras_layer_over_steps(rng):
    kwargs = {
        "renorm": True,
        "renorm_clipping": {"rmax": 1.5, "rmin": 0.7, "dmax": 0.5},
        "momentum": 0.6,
        "renorm_momentum": 0.7,
    }
    ours, theirs = bn_pair(rng, (16, 4), **kwargs)
    for _ in range(3):
        x = rng.normal(0.5, 2.0, (16, 4)).astype("float32")
        upstream = jnp.asarray(rng.normal(size=x.shape).astype("float32"))
        for layer in (ours, theirs):
            y, dx, _, updated = train_step(layer, x, upstream)
            for variable, value in zip(
                layer.non_trainable_variables, updated, strict=True
            ):
                variable.assign(value)
            layer.last = (y, dx)
        assert_close(ours.last[0], theirs.last[0], tol.PARITY_FLOAT32_RTOL)
    for mine, keras_value in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        assert_close(mine, keras_value, tol.PARITY_FLOAT32_RTOL)


def test_integer_inputs_are_normalized_in_float32(rng):
    layer = keras_bn.BatchNormalization()
    x = rng.integers(-50, 50, (12, 3)).astype("int32")
    y = layer(x, training=True)
    assert y.dtype == jnp.float32
    assert_close(y, layer(x.astype("float32"), training=True), tol.PARITY_FLOAT32_RTOL)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy, rng, mixed_precision):
    x = rng.normal(1.0, 2.0, (8, 4, 4, 3)).astype("float32")
    reference = keras_bn.BatchNormalization()
    expected = reference(x, training=True)
    mixed_precision(policy)
    layer = keras_bn.BatchNormalization()
    layer.build(x.shape)
    y, dx, _, _ = train_step(layer, x, jnp.ones(x.shape, "float32"))
    compute = policy.split("_")[1]
    assert y.dtype == compute and dx.dtype == "float32"
    assert all(v.dtype == "float32" for v in layer.weights)
    tolerance = tol.HALF_PRECISION_ATOL[compute]
    np.testing.assert_allclose(np.asarray(y, "float32"), expected, atol=tolerance)


def test_synchronized_is_accepted_and_changes_nothing(rng):
    x = rng.normal(size=(8, 3)).astype("float32")
    layer = keras_bn.BatchNormalization(synchronized=True)
    assert layer.get_config()["synchronized"] is True
    plain = keras_bn.BatchNormalization()
    np.testing.assert_array_equal(layer(x, training=True), plain(x, training=True))


def test_config_weights_and_saving_round_trip(tmp_path, rng):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras_bn.BatchNormalization(virtual_batch_size=4, renorm=True),
        ]
    )
    theirs = keras.layers.BatchNormalization(renorm=True)
    theirs.build((None, 5))
    assert [w.path.split("/")[-1] for w in model.layers[0].weights] == [
        w.path.split("/")[-1] for w in theirs.weights
    ]
    model.layers[0].set_weights(bn_pair(rng, (4, 5), renorm=True)[1].get_weights())
    path = tmp_path / "bn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[0], keras_bn.BatchNormalization)
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    x = rng.normal(size=(6, 5)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))
