"""`ActivationQuantizer`: where a QAT model rounds an activation, and the range it tracks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from keras_bn.keras_adapter import iter_layers
from keras_bn.quantization.quantizers import fake_quantize

__all__ = ["ActivationQuantizer", "calibrating"]

#: A softmax's int8 output in TFLite has the fixed step 1/256 and zero point
#: -128 (its kernel requires it), i.e. the range [0, 255/256].
SOFTMAX_RANGE = (0.0, 255.0 / 256.0)


@keras.saving.register_keras_serializable(package="keras_bn")
class ActivationQuantizer(keras.layers.Layer):
    """Rounds a tensor onto the int8 grid of its tracked range `[min, max]`.

    A quantization-aware model puts one of these at every tensor its TFLite
    file stores in int8 with its own scale: the input, each block's output,
    residual additions, concatenations, average pooling. The range always
    holds zero (so that zero is exact, as TFLite requires) and is tracked,
    not learned:

    - in training, as an exponential moving average of each batch's min and
      max (the first batch, or the calibration, sets it);
    - inside `calibrating(model)`, as the min and max over every batch seen,
      which is what TFLite's post-training calibration records;
    - in inference it stays fixed, and is what the converters write.

    Args:
        momentum: weight of the old range in the moving average.
        fixed_range: a `(min, max)` that never changes (a softmax's), or
            `None` to track.
        **kwargs: base layer keyword arguments.

    Example:

    >>> quantizer = ActivationQuantizer()
    >>> y = quantizer(x, training=True)  # doctest: +SKIP
    """

    def __init__(self, momentum: float = 0.99, fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(
                f"Layer '{self.name}': `momentum` must be in [0, 1). "
                f"Received: momentum={momentum}"
            )
        if fixed_range is not None and not float(fixed_range[0]) <= 0.0 <= float(
            fixed_range[1]
        ):
            raise ValueError(
                f"Layer '{self.name}': `fixed_range` must hold zero. "
                f"Received: fixed_range={fixed_range}"
            )
        self.momentum = float(momentum)
        self.fixed_range = None if fixed_range is None else tuple(fixed_range)
        self.calibrating = False
        self.supports_masking = True

    def build(self, input_shape):
        low, high = self.fixed_range or (0.0, 0.0)
        initial = {
            "range_min": low,
            "range_max": high,
            "tracked": float(self.fixed_range is not None),
        }
        for name, value in initial.items():
            state = self.add_weight(
                shape=(),
                name=name,
                trainable=False,
                autocast=False,
                initializer=keras.initializers.Constant(value),
            )
            setattr(self, name, state)

    def call(self, inputs, training=None):
        if self.fixed_range is None and (training or self.calibrating):
            self._track(inputs)
        return fake_quantize(inputs, self.range_min, self.range_max)

    def _track(self, inputs) -> None:
        x = tf.cast(inputs, tf.float32)
        low = tf.minimum(tf.reduce_min(x), 0.0)
        high = tf.maximum(tf.reduce_max(x), 0.0)
        old_low = tf.convert_to_tensor(self.range_min)
        old_high = tf.convert_to_tensor(self.range_max)
        if self.calibrating:
            new_low, new_high = tf.minimum(old_low, low), tf.maximum(old_high, high)
        else:
            m = self.momentum
            new_low = old_low * m + low * (1.0 - m)
            new_high = old_high * m + high * (1.0 - m)
        seen = self.tracked > 0
        # A batch with NaN/Inf (a float16 overflow the loss scale will skip)
        # says nothing about the range.
        finite = tf.math.is_finite(low) & tf.math.is_finite(high)
        self.range_min.assign(tf.where(finite, tf.where(seen, new_low, low), old_low))
        self.range_max.assign(
            tf.where(finite, tf.where(seen, new_high, high), old_high)
        )
        self.tracked.assign(tf.where(finite, 1.0, self.tracked))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "fixed_range": None
                if self.fixed_range is None
                else list(self.fixed_range),
            }
        )
        return config


@contextlib.contextmanager
def calibrating(model: keras.layers.Layer) -> Iterator[list[ActivationQuantizer]]:
    """Makes every `ActivationQuantizer` in `model` record min/max over the batches.

    Inside the block, calls of `model` (in inference mode: BN uses its moving
    statistics) widen each quantizer's range to the batch's min and max; the
    ranges start from nothing. A compiled function traced outside the block
    does not see the switch: call the model directly or trace anew.

    Yields:
        The quantizers being calibrated.
    """
    quantizers = [
        layer
        for layer in iter_layers(model)
        if isinstance(layer, ActivationQuantizer) and layer.fixed_range is None
    ]
    for quantizer in quantizers:
        quantizer.tracked.assign(0.0)
        quantizer.calibrating = True
    try:
        yield quantizers
    finally:
        for quantizer in quantizers:
            quantizer.calibrating = False
