"""Session-wide test set-up.

oneDNN is switched on (see below), and two logical CPU devices are created
before anything touches TensorFlow, so the synchronized-BN tests can run a real
`MirroredStrategy` on this machine.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU kernels run NCHW (channels_first) convolutions only through
# oneDNN, which TF 2.21 turns on by default only on CPUs with AVX-512. On an AMD
# EPYC without it, every channels_first fold test fails with "The Conv2D op
# currently only supports the NHWC tensor format on the CPU" before folding is
# even reached. Turning oneDNN on makes the suite independent of the CPU model.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def mixed_precision():
    """Yields a setter for the global dtype policy and restores it afterwards."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)
