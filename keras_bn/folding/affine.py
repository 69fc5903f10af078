"""`ChannelAffine`: what a Batch Normalization becomes when it cannot be folded."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_bn import ops as channel_ops

__all__ = ["ChannelAffine"]


@keras.saving.register_keras_serializable(package="keras_bn")
class ChannelAffine(keras.layers.Layer):
    """Per-channel `x * scale + shift`, the inference form of Batch Normalization.

    `fold_batchnorm` puts this layer where a Batch Normalization has no
    linear neighbour it can be folded into (after an `Add`, after a layer
    with a built-in activation, ...). It is the same map BN computes in
    inference, `(x - moving_mean) * gamma / sqrt(moving_variance + epsilon)
    + beta`, precomputed as one multiply and one add and without any
    training behaviour, so a folded model holds no Batch Normalization.

    Args:
        axis: the channel axis, or a list of axes, as in Batch
            Normalization; `scale` and `shift` have the shape of the input
            along these axes.
        **kwargs: base layer keyword arguments (`name`, `dtype`).

    Call arguments:
        inputs: a tensor of any rank that has `axis`.

    Example:

    >>> layer = ChannelAffine(axis=-1)
    >>> y = layer(np.ones((2, 3), "float32"))  # scale 1, shift 0 until set
    """

    def __init__(self, axis: int | Sequence[int] = -1, **kwargs):
        super().__init__(**kwargs)
        self.axis = channel_ops.validate_axis(axis, f"Layer '{self.name}': ")
        self.supports_masking = True

    def _axes(self, input_shape) -> list[int]:
        return channel_ops.channel_axes(
            self.axis, input_shape, f"Layer '{self.name}': "
        )

    def build(self, input_shape):
        axes = self._axes(input_shape)
        shape = tuple(input_shape[a] for a in axes)
        if any(d is None for d in shape):
            raise ValueError(
                f"Layer '{self.name}': the channel dimensions must be known. "
                f"Received: input_shape={tuple(input_shape)}, axis={self.axis}"
            )
        self.scale = self.add_weight(
            shape=shape, name="scale", initializer="ones", trainable=False
        )
        self.shift = self.add_weight(
            shape=shape, name="shift", initializer="zeros", trainable=False
        )
        self._broadcast_shape = [
            input_shape[a] if a in axes else 1 for a in range(len(input_shape))
        ]

    def call(self, inputs):
        scale = ops.reshape(ops.cast(self.scale, inputs.dtype), self._broadcast_shape)
        shift = ops.reshape(ops.cast(self.shift, inputs.dtype), self._broadcast_shape)
        return inputs * scale + shift

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config
