"""Helpers for the quantization tests: an independent NumPy float64 int8 simulation.

The references here never call keras_bn.quantization: BN folds come from
`keras_bn.folding.weights` (float64, tested on their own), rounding is
written out in NumPy as TFLite documents it, and the linear operation is
Keras' own layer in float64.
"""

import numpy as np

from keras_bn.folding import weights as fold_weights


def round_half_to_even(x):
    return np.round(x)  # NumPy and tf.round both round half to even


def weight_step(kernel, reduce_axes, granularity):
    """`max|w| / 127` per output channel (flattened) or for the whole kernel."""
    kernel = np.asarray(kernel, np.float64)
    if granularity == "per_tensor":
        largest = np.max(np.abs(kernel), keepdims=True).reshape(1)
    else:
        largest = np.max(np.abs(kernel), axis=tuple(reduce_axes)).reshape(-1)
    return np.where(largest > 0, largest / 127.0, 1.0)


def round_to(values, step):
    """`values` rounded onto the grid of `step` (the int32 bias grid)."""
    return round_half_to_even(np.asarray(values, np.float64) / step) * step


def quantize_kernel(kernel, reduce_axes, granularity):
    """Symmetric narrow-range int8 rounding in float64 (TFLite's weight scheme)."""
    kernel = np.asarray(kernel, np.float64)
    if granularity == "per_tensor":
        largest = np.max(np.abs(kernel))
    else:
        largest = np.max(np.abs(kernel), axis=tuple(reduce_axes), keepdims=True)
    scale = np.where(largest > 0, largest / 127.0, 1.0)
    return np.clip(round_half_to_even(kernel / scale), -127, 127) * scale


def fake_quantize(x, low, high):
    """TensorFlow's FakeQuantWithMinMaxVars (8 bits, nudged so zero is exact)."""
    x = np.asarray(x, np.float64)
    scale = (high - low) / 255.0
    zero_point = np.clip(np.floor(-low / scale + 0.5), 0, 255)
    nudged_low, nudged_high = -zero_point * scale, (255 - zero_point) * scale
    clipped = np.clip(x, nudged_low, nudged_high)
    return np.floor((clipped - nudged_low) / scale + 0.5) * scale + nudged_low


def float64_copy(layer, input_shape, kernels: dict, bias):
    """Keras' own layer in float64, with `kernels` and `bias` as its weights."""
    config = layer.get_config()
    config.update(dtype="float64", use_bias=True, activation="linear", name="reference")
    reference = layer.__class__.from_config(config)
    reference.build(input_shape)
    values = [
        kernels[name]
        for name in ("kernel", "depthwise_kernel", "pointwise_kernel")
        if name in kernels
    ]
    reference.set_weights([*values, bias])
    return reference


def bn_scale_shift(bn):
    return fold_weights.batchnorm_scale_shift(
        bn.moving_mean.numpy(),
        bn.moving_variance.numpy(),
        bn.epsilon,
        gamma=bn.gamma.numpy() if bn.scale else None,
        beta=bn.beta.numpy() if bn.center else None,
    )


def set_bn(bn, rng):
    """Far-from-default statistics and affine parameters on a built BN."""
    c = bn.moving_mean.shape[0]
    bn.moving_mean.assign(rng.normal(size=c))
    bn.moving_variance.assign(rng.uniform(0.3, 3.0, size=c))
    if bn.scale:
        bn.gamma.assign(rng.uniform(0.5, 2.0, size=c) * rng.choice([-1, 1], size=c))
    if bn.center:
        bn.beta.assign(rng.normal(size=c))
