"""Data parallel on JAX: two devices compute what one device computes on the whole batch.

Keras' `DataParallel` jits one global program that XLA partitions (SPMD), so a
reduction over the batch axis spans both devices' shards. This proves it for
keras_bn's layer and its `jax.custom_vjp` backward: outputs, input gradients,
γ/β gradients and moving statistics on two CPU devices (tests/conftest.py asks
XLA for them) equal one device's on the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import keras_bn
from tests import tolerances as tol
from tests.jax.helpers import assert_close, bn_pair, train_step


@pytest.fixture
def data_parallel():
    devices = jax.devices("cpu")
    assert len(devices) == 2, "tests/conftest.py asks XLA for two CPU devices"
    distribution = keras.distribution.DataParallel(devices=devices)
    yield distribution
    keras.distribution.set_distribution(None)


@pytest.mark.parametrize("synchronized", [False, True])
def test_layer_on_two_devices_equals_one_device(data_parallel, synchronized, rng):
    shape = (8, 4, 4, 3)
    x = rng.normal(1.0, 2.0, shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    single, _ = bn_pair(rng, shape, momentum=0.5)
    expected = train_step(single, x, jnp.asarray(upstream))
    with data_parallel.scope():
        layer = keras_bn.BatchNormalization(momentum=0.5, synchronized=synchronized)
        layer.build(shape)
        layer.set_weights(single.get_weights())
        layout = data_parallel.get_data_layout(shape)
        sharded_x = keras.distribution.distribute_tensor(jnp.asarray(x), layout)
        sharded_upstream = keras.distribution.distribute_tensor(
            jnp.asarray(upstream), layout
        )
        y, dx, d_params, stats = train_step(layer, sharded_x, sharded_upstream)
    assert len(y.sharding.device_set) == 2
    assert_close(y, expected[0], tol.PARITY_FLOAT32_RTOL)
    assert_close(dx, expected[1], tol.PARITY_FLOAT32_RTOL)
    for ours, reference in zip(d_params, expected[2], strict=True):
        assert_close(ours, reference, tol.PARITY_FLOAT32_RTOL)
    for ours, reference in zip(stats, expected[3], strict=True):
        assert_close(ours, reference, tol.PARITY_FLOAT32_RTOL)


def _model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras_bn.BatchNormalization(momentum=0.0, synchronized=True),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
        ]
    )


def test_fit_under_data_parallel_uses_global_batch_statistics(data_parallel, rng):
    x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    single = _model()
    weights = single.get_weights()
    # momentum 0: after one step the moving mean is the batch's mean.
    whole_batch_mean = np.asarray(single.layers[0](x)).mean((0, 1, 2))
    results = []
    for distribution in (None, data_parallel):
        keras.distribution.set_distribution(distribution)
        model = _model()
        model.set_weights(weights)
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append(model.get_weights())
    keras.distribution.set_distribution(None)
    assert_close(model.layers[1].moving_mean, whole_batch_mean, tol.PARITY_FLOAT32_RTOL)
    for one, two in zip(*results, strict=True):
        assert_close(two, one, tol.PARITY_FLOAT32_RTOL)
