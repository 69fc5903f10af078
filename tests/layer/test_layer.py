"""keras_bn.BatchNormalization against keras.layers.BatchNormalization and NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from tests import tolerances as tol
from tests.helpers.layers import assert_close, bn_pair, random_bn_weights, train_step
from tests.helpers.reference import batchnorm_inference, batchnorm_train

PARITY_CASES = {
    "dense": dict(shape=(16, 5), kwargs={}),
    "channels_last": dict(shape=(4, 5, 5, 3), kwargs={}),
    "channels_first": dict(shape=(4, 3, 5, 5), kwargs={"axis": 1}),
    "sequence": dict(shape=(6, 7, 4), kwargs={}),
    "no_center": dict(shape=(16, 5), kwargs={"center": False}),
    "no_scale": dict(shape=(16, 5), kwargs={"scale": False}),
    "momentum": dict(shape=(16, 5), kwargs={"momentum": 0.5, "epsilon": 1e-5}),
    "renorm": dict(shape=(4, 5, 5, 3), kwargs={"renorm": True, "renorm_momentum": 0.9}),
    "renorm_clipped": dict(
        shape=(16, 5),
        kwargs={
            "renorm": True,
            "renorm_clipping": {"rmax": 1.2, "rmin": 0.8, "dmax": 0.3},
        },
    ),
}


@pytest.mark.parametrize("case", PARITY_CASES)
def test_training_matches_keras(rng, case):
    shape, kwargs = PARITY_CASES[case]["shape"], PARITY_CASES[case]["kwargs"]
    ours, theirs = bn_pair(rng, shape, **kwargs)
    x = tf.constant(rng.normal(1.5, 2.0, shape), "float32")
    upstream = tf.constant(rng.normal(size=shape), "float32")
    for a, b in zip(
        train_step(ours, x, upstream), train_step(theirs, x, upstream), strict=True
    ):
        assert_close(a, b)
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        assert a.name == b.name
        assert_close(a.numpy(), b.numpy())


@pytest.mark.parametrize("case", PARITY_CASES)
def test_inference_matches_keras(rng, case):
    shape, kwargs = PARITY_CASES[case]["shape"], PARITY_CASES[case]["kwargs"]
    ours, theirs = bn_pair(rng, shape, **kwargs)
    x = tf.constant(rng.normal(1.5, 2.0, shape), "float32")
    assert_close(ours(x, training=False), theirs(x, training=False))
    # A frozen layer runs in inference mode even when training=True, as Keras'.
    ours.trainable = theirs.trainable = False
    assert_close(ours(x, training=True), theirs(x, training=True))


def test_weights_transfer_both_ways(rng):
    ours, theirs = bn_pair(rng, (8, 4), renorm=True)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    assert [w.name for w in ours.weights[:4]] == [
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    ]
    fresh = keras.layers.BatchNormalization(renorm=True)
    fresh.build((8, 4))
    fresh.set_weights(ours.get_weights())
    for a, b in zip(fresh.get_weights(), ours.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(ours, keras.layers.BatchNormalization)


def test_list_axis_normalizes_over_the_other_axes(rng):
    shape = (6, 3, 4, 5)
    layer = keras_bn.BatchNormalization(axis=[1, 3], momentum=0.0, epsilon=1e-3)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    y = layer(tf.constant(x), training=True).numpy()
    expected, mean, variance = batchnorm_train(x, (0, 2), 1e-3)
    assert layer.gamma.shape == (3, 5)
    assert_close(y, expected)
    # momentum 0: the moving statistics are this batch's.
    assert_close(layer.moving_variance.numpy(), variance[0, :, 0, :])


# -- layer-level gradient checks in float64 ------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"center": False}, {"scale": False}, {"axis": 1}],
    ids=["default", "no_center", "no_scale", "channels_first"],
)
def test_layer_gradient_matches_finite_differences_float64(rng, kwargs):
    shape = (4, 3, 3, 2) if "axis" not in kwargs else (4, 2, 3, 3)
    layer = keras_bn.BatchNormalization(dtype="float64", **kwargs)
    layer.build(shape)
    layer.set_weights(random_bn_weights(layer, rng))
    x = tf.constant(rng.normal(size=shape))
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: layer(x, training=True), [x]
    )
    assert np.max(np.abs(theoretical[0] - numerical[0])) <= tol.GRADIENT_CHECK_FLOAT64


def test_masked_sequence_gradient_matches_finite_differences_float64(rng):
    layer = keras_bn.BatchNormalization(dtype="float64")
    layer.build((3, 5, 2))
    layer.set_weights(random_bn_weights(layer, rng))
    x = tf.constant(rng.normal(size=(3, 5, 2)))
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]) > 0
    theoretical, numerical = tf.test.compute_gradient(
        lambda x: layer(x, training=True, mask=mask), [x]
    )
    assert np.max(np.abs(theoretical[0] - numerical[0])) <= tol.GRADIENT_CHECK_FLOAT64


# -- moving statistics are protected -----------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_batch_leaves_moving_statistics_unchanged(rng, bad):
    layer = keras_bn.BatchNormalization(renorm=True)
    layer.build((8, 3))
    layer.set_weights(random_bn_weights(layer, rng))
    before = layer.get_weights()
    x = rng.normal(size=(8, 3)).astype("float32")
    x[2, 1] = bad
    layer(tf.constant(x), training=True)
    for a, b in zip(layer.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... and the next finite batch updates them as usual.
    layer(tf.constant(rng.normal(size=(8, 3)), "float32"), training=True)
    assert not np.array_equal(layer.moving_mean.numpy(), before[2])


def test_fully_masked_batch_leaves_moving_statistics_unchanged(rng):
    layer = keras_bn.BatchNormalization()
    layer.build((2, 4, 3))
    layer.set_weights(random_bn_weights(layer, rng))
    before = layer.get_weights()
    y = layer(
        tf.constant(rng.normal(size=(2, 4, 3)), "float32"),
        training=True,
        mask=tf.zeros((2, 4), "bool"),
    )
    assert np.all(np.isfinite(y))
    for a, b in zip(layer.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_moving_variance_stays_non_negative_for_constant_inputs():
    layer = keras_bn.BatchNormalization(momentum=0.0, renorm=True)
    for value in (0.0, 1e4, -3.0):
        layer(tf.fill((16, 2), value), training=True)
        assert np.all(layer.moving_variance.numpy() >= 0)


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"axis": 4}, ValueError, "axis 4 is out of bounds"),
        ({"axis": [1, -1]}, ValueError, "duplicate axes"),
        ({"axis": [0, 1]}, ValueError, "nothing to normalize"),
        ({"axis": 1.5}, TypeError, "axis"),
        ({"momentum": 1.5}, ValueError, "momentum"),
        ({"epsilon": -1e-3}, ValueError, "bn_under_test.*epsilon"),
        (
            {"renorm": True, "renorm_clipping": {"rmid": 1}},
            ValueError,
            "renorm_clipping",
        ),
        ({"virtual_batch_size": 0}, ValueError, "virtual_batch_size"),
        (
            {"virtual_batch_size": 2, "synchronized": True},
            ValueError,
            "cannot be combined",
        ),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        layer = keras_bn.BatchNormalization(name="bn_under_test", **kwargs)
        layer.build((4, 3))


def test_out_of_range_axis_names_the_layer():
    layer = keras_bn.BatchNormalization(axis=3, name="my_bn")
    with pytest.raises(
        ValueError, match="my_bn.*axis 3 is out of bounds.*Received: axis=3"
    ):
        layer(tf.zeros((4, 3)))


def test_unknown_channel_dimension_is_rejected():
    with pytest.raises(ValueError, match="my_bn.*channel dimension.*must be known"):
        keras_bn.BatchNormalization(name="my_bn").build((None, 5, None))


def test_rank_change_between_calls_is_rejected():
    layer = keras_bn.BatchNormalization(name="my_bn")
    layer(tf.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="my_bn.*expected ndim=3, found ndim=2"):
        layer(tf.zeros((2, 3)))


def test_mask_of_the_wrong_rank_is_rejected():
    layer = keras_bn.BatchNormalization(name="my_bn")
    with pytest.raises(ValueError, match="my_bn.*mask must have one dimension less"):
        layer(tf.zeros((2, 4, 3)), training=True, mask=tf.ones((2, 4, 3), "bool"))


def test_use_moving_statistics_normalizes_with_moving_statistics_and_trains_affine(
    rng,
):
    layer = keras_bn.BatchNormalization(use_moving_statistics=True)
    reference = keras.layers.BatchNormalization()
    layer.build((16, 5))
    reference.build((16, 5))
    weights = random_bn_weights(reference, rng)
    layer.set_weights(weights)
    reference.set_weights(weights)
    x = tf.constant(rng.normal(2.0, 3.0, (16, 5)), "float32")
    upstream = tf.constant(rng.normal(size=(16, 5)), "float32")
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(upstream * y)
    d_gamma, d_beta = tape.gradient(loss, [layer.gamma, layer.beta])
    assert_close(y, reference(x, training=False))
    # y = x̂·γ + β with x̂ from the moving statistics: dβ = Σdy, dγ = Σdy·x̂.
    mean, variance = weights[2], weights[3]
    x_hat = batchnorm_inference(x.numpy(), mean, variance, layer.epsilon)
    assert_close(d_beta, upstream.numpy().sum(0))
    assert_close(d_gamma, (upstream.numpy() * x_hat).sum(0))
    for variable, value in zip(layer.non_trainable_weights, weights[2:], strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_use_moving_statistics_round_trips_through_config():
    layer = keras_bn.BatchNormalization(use_moving_statistics=True)
    clone = keras_bn.BatchNormalization.from_config(layer.get_config())
    assert clone.use_moving_statistics is True
