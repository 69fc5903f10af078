"""keras_bn: Batch Normalization for Keras 3 with an analytic backward pass."""

__version__ = "0.1.0"

from keras_bn.layers import BatchNormalization  # noqa: E402

__all__ = ["BatchNormalization", "__version__"]
