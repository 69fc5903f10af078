"""Session-wide test set-up, for the backend this run uses.

The suite runs twice (`make test`): on TensorFlow (the default) every folder
but `tests/jax/`; with `KERAS_BACKEND=jax`, only `tests/jax/`. Keras picks its
backend when it is imported, so one process cannot hold both.

On TensorFlow oneDNN is switched on (see below), and two logical CPU devices
are created before anything touches TensorFlow, so the synchronized-BN tests
can run a real `MirroredStrategy` on this machine. On JAX, XLA is asked for
two host devices for the same reason (`keras.distribution.DataParallel`), and
TensorFlow is never imported.
"""

import os
from pathlib import Path

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
JAX_TESTS = Path(__file__).parent / "jax"

if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
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

if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """`tests/jax/` on JAX only; everything else on TensorFlow only."""
    inside = collection_path == JAX_TESTS or JAX_TESTS in collection_path.parents
    if BACKEND == "jax":
        if inside or collection_path in JAX_TESTS.parents:
            return None
        return True
    return True if inside else None


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def mixed_precision():
    """Yields a setter for the global dtype policy and restores it afterwards."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)
