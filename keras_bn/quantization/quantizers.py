"""Simulated int8 rounding as TFLite does it, in TensorFlow, with the straight-through estimator.

Two kinds of tensors are quantized, as TFLite's integer kernels store them:

- weights: symmetric, narrow range, zero point 0:
  `q = clip(round(w / s), -127, 127)`, `s = max|w| / 127`, with `max|w|`
  taken per output channel (`"per_channel"`) or over the whole kernel
  (`"per_tensor"`);
- activations: asymmetric, 256 levels over a range `[min, max]` that holds
  zero, nudged so that zero is exact: `s = (max - min) / 255`,
  `z = round(-min / s)`, `q = clip(round(x / s) + z, 0, 255)`.

The forward pass computes `dequantize(quantize(x))`; the backward pass is the
straight-through estimator (Bengio et al. 2013): the rounding counts as the
identity, the clipping stops the gradient outside the range.

How each reaches the converters (checked with TF 2.21, tf2onnx 1.17):

- Activations go through `tf.quantization.fake_quant_with_min_max_vars`:
  the TFLite converter reads its `min`/`max` as the tensor's quantization
  (no representative data needed) and tf2onnx turns it into a
  QuantizeLinear/DequantizeLinear pair. `keras.quantizers.fake_quant_with_min_max_vars`
  is written in `keras.ops` on every backend, so neither converter sees it.
- Per-channel weights are rounded onto their grid with ordinary ops; the
  TFLite converter then quantizes the constant kernel per channel by its
  own max-abs rule, which finds exactly this grid again (the largest weight
  is 127 steps). A per-channel `FakeQuantWithMinMaxVarsPerChannel` is not
  usable: its channel axis is the last, which a Dense kernel loses when the
  converter transposes it ("mismatched quantized axes"), and tf2onnx does
  not convert it.
- Per-tensor weights use `fake_quant_with_min_max_vars` over
  `[-128·s, 127·s]` (zero point 0, 256 levels): the converter would
  otherwise requantize the kernel per channel (its
  `_experimental_disable_per_channel` is ignored when the graph holds fake
  quantization), and tf2onnx rejects `narrow_range=True`. No weight reaches
  -128 because the largest magnitude is exactly 127 steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_bn.defaults import WEIGHT_GRANULARITIES

__all__ = [
    "NUM_BITS",
    "activation_scale",
    "fake_quantize",
    "quantize_weights",
    "weight_scale",
]

NUM_BITS = 8
#: Largest weight magnitude in steps: narrow-range int8.
WEIGHT_LEVELS = 127
#: Activation levels minus one: full-range 8 bits.
ACTIVATION_STEPS = 255


def weight_scale(
    kernel: tf.Tensor, reduce_axes: Sequence[int], granularity: str
) -> tf.Tensor:
    """The step `max|w| / 127`, per output channel or for the whole kernel.

    Args:
        kernel: the (folded) kernel.
        reduce_axes: every axis but the output channel's.
        granularity: `"per_channel"` or `"per_tensor"`.

    Returns:
        The step, broadcastable to `kernel`; a channel whose weights are all
        zero gets step 1 (its weights stay zero), not 0.
    """
    magnitude = tf.abs(kernel)
    if granularity == "per_tensor":
        largest = tf.reduce_max(magnitude)
    else:
        largest = tf.reduce_max(magnitude, axis=list(reduce_axes), keepdims=True)
    return tf.where(largest > 0, largest / WEIGHT_LEVELS, tf.ones_like(largest))


def quantize_weights(
    kernel: tf.Tensor, reduce_axes: Sequence[int], granularity: str
) -> tf.Tensor:
    """`kernel` rounded onto its symmetric int8 grid, straight-through gradient.

    Args:
        kernel: the (folded) float kernel.
        reduce_axes: every axis but the output channel's.
        granularity: `"per_channel"` or `"per_tensor"`.

    Returns:
        The dequantized kernel, same shape and dtype; its gradient is the
        identity (no weight lies outside the range it defines).

    Raises:
        ValueError: for an unknown `granularity`.
    """
    if granularity not in WEIGHT_GRANULARITIES:
        raise ValueError(
            f"`weights` must be one of {WEIGHT_GRANULARITIES}. "
            f"Received: weights={granularity!r}"
        )
    scale = tf.stop_gradient(weight_scale(kernel, reduce_axes, granularity))
    if granularity == "per_tensor":
        # TensorFlow's fake quantization is float32 only.
        rounded = tf.quantization.fake_quant_with_min_max_vars(
            tf.cast(kernel, tf.float32),
            tf.cast(-(WEIGHT_LEVELS + 1) * scale, tf.float32),
            tf.cast(WEIGHT_LEVELS * scale, tf.float32),
            NUM_BITS,
        )
        return tf.cast(rounded, kernel.dtype)
    rounded = tf.round(kernel / scale) * scale
    return kernel + tf.stop_gradient(rounded - kernel)


def fake_quantize(
    x: tf.Tensor, range_min: tf.Tensor, range_max: tf.Tensor
) -> tf.Tensor:
    """`x` rounded onto the 256-level grid of `[range_min, range_max]`.

    TensorFlow's `fake_quant_with_min_max_vars`: the range is nudged so that
    zero is one of the levels; values outside are clipped and get no
    gradient. The range gets no gradient here (it is tracked, not learned).
    """
    dtype = x.dtype
    y = tf.quantization.fake_quant_with_min_max_vars(
        tf.cast(x, tf.float32),
        tf.stop_gradient(tf.cast(range_min, tf.float32)),
        tf.stop_gradient(tf.cast(range_max, tf.float32)),
        num_bits=NUM_BITS,
    )
    return tf.cast(y, dtype)


def activation_scale(range_min, range_max) -> float:
    """The step of an activation range, `(max - min) / 255`."""
    return (float(range_max) - float(range_min)) / ACTIVATION_STEPS
