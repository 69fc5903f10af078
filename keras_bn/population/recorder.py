"""Records each BN layer's training-mode batch moments during one forward pass.

What this relies on from Keras (a training-mode call with `momentum=0` writes
the batch moments, an instance's `call` replaces the class's) is stated and
implemented in `keras_bn.keras_adapter`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from keras_bn.keras_adapter import (
    batch_moments_mode,
    call_for_batch_moments,
    call_replaced,
)
from keras_bn.layers import BatchNormalization
from keras_bn.ops import channel_axes

#: One call of one BN layer: (mean, variance, count, inputs finite).
CallRecord = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]


def all_finite(x: Any) -> tf.Tensor:
    """True when no floating-point tensor in `x` holds NaN or Inf."""
    finite = [
        tf.reduce_all(tf.math.is_finite(tf.cast(leaf, tf.float32)))
        for leaf in tf.nest.flatten(x)
        if tf.as_dtype(leaf.dtype).is_floating
    ]
    return tf.reduce_all(tf.stack([tf.constant(True), *finite]))


def channel_counts(layer: keras.layers.Layer, inputs, mask) -> tf.Tensor:
    """The values each channel of `layer` normalizes over, float64, per channel.

    A mask gains a trailing axis and is broadcast to the input (Keras' rule,
    which `keras_bn.BatchNormalization` follows): behind `Masking` with
    `axis=1` it varies along the channel axis, so each channel has its own
    count, and a channel hidden in a batch counts 0 there.
    """
    inputs = tf.convert_to_tensor(inputs)
    channels = channel_axes(layer.axis, inputs.shape)
    reduced = [a for a in range(inputs.shape.rank) if a not in channels]
    if mask is None:
        weights = tf.ones_like(inputs, tf.float64)
    else:
        mask = tf.cast(tf.cast(mask, tf.bool), tf.float64)
        weights = tf.broadcast_to(mask[..., None], tf.shape(inputs))
    return tf.reshape(tf.reduce_sum(weights, reduced), layer.moving_mean.shape)


class Recorder:
    """Temporarily makes every BN layer record its training-mode batch moments.

    Inside `installed()`, each call of a BN layer runs in training mode and
    appends a `CallRecord` for it; every other layer runs as the model calls
    it. `step_function` is one forward pass returning the records.

    Args:
        layers: the BN layers to record.
        unbiased: whether `keras_bn.BatchNormalization` layers write the
            m/(m−1)-corrected variance (they correct per ghost batch).
    """

    def __init__(self, layers: list[keras.layers.Layer], unbiased: bool):
        self.layers = layers
        self.unbiased = unbiased
        self.records: list[list[CallRecord]] = []

    def _settings(self, layer: keras.layers.Layer) -> dict[str, Any]:
        if not isinstance(layer, BatchNormalization):
            return {}
        # Our layer applies m/(m−1) itself, per ghost batch when it has them.
        return {
            "unbiased_moving_variance": self.unbiased,
            "use_moving_statistics": False,
        }

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Records every BN layer's calls until exit; then restores every layer."""
        with contextlib.ExitStack() as stack:
            for index, layer in enumerate(self.layers):
                stack.enter_context(batch_moments_mode(layer, self._settings(layer)))
                stack.enter_context(
                    call_replaced(layer, self._recording_call(index, layer))
                )
            yield

    def _recording_call(self, index: int, layer: keras.layers.Layer) -> Callable:
        def call(inputs, training=None, mask=None):
            outputs, mean, variance = call_for_batch_moments(layer, inputs, mask)
            count = channel_counts(layer, inputs, mask)
            finite = all_finite(inputs)
            self.records[index].append((mean, variance, count, finite))
            return outputs

        return call

    def step_function(self, model: keras.Model) -> Callable:
        """`step(x) -> (input finite, records per layer)`: one inference pass."""

        def step(x):
            self.records = [[] for _ in self.layers]
            finite = all_finite(x)
            model(x, training=False)
            return finite, self.records

        return step
