"""What differs between Keras backends for `keras_bn.ops`: gradients, compiling, replicas.

The mathematics of Batch Normalization is written once, in `keras.ops`, in
`keras_bn.ops`. Three things cannot be: attaching a closed-form gradient to a
function (`tf.custom_gradient` or `jax.custom_vjp`), compiling a stage (an
XLA-compiled `tf.function` on TensorFlow; on JAX the caller's `jax.jit`
compiles everything), and summing over replicas (`tf.distribute`'s
all-reduce; under JAX's `keras.distribution` the program is global, so the
sums already are). Each supported backend has one module here with the same
four functions: `compile_stage`, `with_gradient`, `cross_replica_sum` and
`combine_replicas`. The contract of `with_gradient`, which both keep:

    with_gradient(forward, backward, x, gamma, beta, consts)

returns `forward(x, gamma, beta, consts)`, differentiable in `x`, `gamma` and
`beta` by `backward(dy, x, gamma, beta, consts) -> (dx, dgamma, dbeta)`;
`consts` (a tuple of arrays, or `None`) get no gradient.

The module is imported on first use, so a process on JAX never imports
TensorFlow.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import keras

__all__ = ["SUPPORTED_BACKENDS", "check_supported", "current", "require_tensorflow"]

#: Keras backends keras_bn's layer runs on, and the module that serves each.
SUPPORTED_BACKENDS = {
    "tensorflow": "keras_bn.backends.tensorflow_backend",
    "jax": "keras_bn.backends.jax_backend",
}


def check_supported(what: str = "keras_bn.BatchNormalization") -> str:
    """The name of Keras' backend, or a `ValueError` if keras_bn cannot run on it.

    Args:
        what: what needs the backend, named in the message.

    Returns:
        `keras.backend.backend()`, one of `SUPPORTED_BACKENDS`.

    Raises:
        ValueError: on torch, numpy or openvino, naming the backend and what
            works instead.
    """
    name = keras.backend.backend()
    if name not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"{what} runs on Keras' TensorFlow and JAX backends; this process uses "
            f"the {name!r} backend. Set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow "
            "before Keras is imported, or use keras.layers.BatchNormalization on "
            f"{name}. Received: keras.backend.backend()={name!r}"
        )
    return name


def current() -> ModuleType:
    """The module of `SUPPORTED_BACKENDS` for the running Keras backend."""
    return importlib.import_module(SUPPORTED_BACKENDS[check_supported()])


def require_tensorflow(what: str) -> None:
    """An `ImportError` naming `keras-bn export` unless Keras runs on TensorFlow.

    The TFLite and ONNX converters read TensorFlow graphs, so export works on
    the TensorFlow backend only. A model trained on JAX exports through the
    command line, which always runs on TensorFlow.

    Args:
        what: what needs TensorFlow, named in the message.

    Raises:
        ImportError: on any other Keras backend.
    """
    name = keras.backend.backend()
    if name != "tensorflow":
        raise ImportError(
            f"{what} converts TensorFlow graphs and needs Keras' TensorFlow backend; "
            f"this process uses {name!r}. Save the model (`model.save('m.keras')`) and "
            "run `keras-bn export m.keras`, which runs on TensorFlow whatever "
            f"KERAS_BACKEND says. Received: keras.backend.backend()={name!r}"
        )
