"""Closed-form Batch Normalization folds: NumPy in, NumPy out.

In inference a Batch Normalization layer is a per-channel affine map

    y = (x - moving_mean) * gamma / sqrt(moving_variance + epsilon) + beta
      = x * scale + shift,

with `scale = gamma / sqrt(moving_variance + epsilon)` and
`shift = beta - moving_mean * scale`. A linear layer next to it absorbs that
map into its own kernel and bias:

- BN after the linear layer (`W x + b` then BN):
  `W' = W * scale` along the output channels, `b' = b * scale + shift`.
- BN before the linear layer (BN then `W x + b`):
  `W' = W * scale` along the input channels, `b' = b + W · shift`, where
  `W · shift` sums the kernel over everything but the output channel. This is
  exact only when every output sees a full window of real input, i.e. no
  zero padding (the padded zeros are not shifted by BN).

Every function computes in float64 and returns arrays of the kernel's dtype,
so a float32 model loses one rounding per weight and nothing more. Nothing
here knows about Keras; `keras_bn.folding.rules` decides where each formula
applies.

Kernel layouts are Keras': Dense `(in, out)`; convolutions
`(*window, in / groups, out)`; depthwise `(*window, in, depth_multiplier)`
with output channel `c * depth_multiplier + m`; separable convolutions a
depthwise kernel followed by a pointwise `(1, ..., in * depth_multiplier,
out)`; transposed convolutions `(*window, out, in)`.

The derivations, and how these formulas fit the folding engine, are in
docs/folding.md.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "batchnorm_scale_shift",
    "fold_bn_after_conv",
    "fold_bn_after_conv_transpose",
    "fold_bn_after_dense",
    "fold_bn_after_depthwise_conv",
    "fold_bn_before_conv",
    "fold_bn_before_dense",
    "fold_bn_before_depthwise_conv",
    "fold_bn_before_separable_conv",
]


def batchnorm_scale_shift(
    moving_mean: np.ndarray,
    moving_variance: np.ndarray,
    epsilon: float,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The inference form of Batch Normalization as `x * scale + shift`.

    Args:
        moving_mean: population mean, one value per channel.
        moving_variance: population variance, same shape.
        epsilon: the layer's variance epsilon.
        gamma: the learned scale, or `None` for a layer with `scale=False`.
        beta: the learned offset, or `None` for a layer with `center=False`.

    Returns:
        `(scale, shift)` in float64, shaped like `moving_mean`.

    Raises:
        ValueError: if the shapes differ or `moving_variance + epsilon` is not
            positive (the layer itself would produce NaN or Inf).

    Example:

    >>> scale, shift = batchnorm_scale_shift(
    ...     np.array([1.0]), np.array([4.0]), 0.0, gamma=np.array([2.0]))
    >>> scale, shift
    (array([1.]), array([-1.]))
    """
    mean = np.asarray(moving_mean, dtype=np.float64)
    variance = np.asarray(moving_variance, dtype=np.float64)
    if mean.shape != variance.shape:
        raise ValueError(
            "`moving_mean` and `moving_variance` must have the same shape. "
            f"Received: moving_mean.shape={mean.shape}, "
            f"moving_variance.shape={variance.shape}"
        )
    denominator = variance + float(epsilon)
    if not np.all(denominator > 0):
        raise ValueError(
            "`moving_variance + epsilon` must be positive for every channel. "
            f"Received: min(moving_variance + epsilon)={denominator.min()}"
        )
    inv_std = 1.0 / np.sqrt(denominator)
    scale = inv_std if gamma is None else np.asarray(gamma, np.float64) * inv_std
    shift = -mean * scale
    if beta is not None:
        shift = shift + np.asarray(beta, dtype=np.float64)
    _check_shape("gamma", scale, mean.shape)
    _check_shape("beta", shift, mean.shape)
    return scale, shift


def fold_bn_after_conv(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds BN after a convolution (any rank, any `groups`) or a Dense layer.

    The output channel is the kernel's last axis in both layouts (a Dense
    kernel `(in, out)` is a convolution kernel without a window), so one
    formula serves both: `W' = W * scale` along it, `b' = b * scale + shift`.
    Also the fold for a separable convolution: pass its pointwise kernel.

    Args:
        kernel: convolution kernel, `(*window, in / groups, out)`, or Dense
            kernel, `(in, out)`.
        bias: bias `(out,)`, or `None` for `use_bias=False`.
        scale: BN scale from `batchnorm_scale_shift`, `(out,)`.
        shift: BN shift, `(out,)`.

    Returns:
        `(kernel, bias)` of the folded layer, in `kernel`'s dtype.

    Raises:
        ValueError: if `scale`, `shift` or `bias` does not have shape `(out,)`.

    Example:

    >>> kernel, bias = fold_bn_after_conv(
    ...     np.ones((1, 2)), None, np.array([2.0, 3.0]), np.array([0.5, 0.0]))
    >>> kernel, bias
    (array([[2., 3.]]), array([0.5, 0. ]))
    """
    return _fold_output_axis(kernel, bias, scale, shift, axis=-1)


#: Folds `BN(x @ kernel + bias)` into one Dense layer: the same formula as
#: `fold_bn_after_conv`, whose output channel is the kernel's last axis too.
fold_bn_after_dense = fold_bn_after_conv


def fold_bn_after_conv_transpose(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds BN after a transposed convolution into it.

    Args:
        kernel: transposed-convolution kernel, `(*window, out, in)`.
        bias: bias `(out,)`, or `None`.
        scale: BN scale, `(out,)`.
        shift: BN shift, `(out,)`.

    Returns:
        `(kernel, bias)` of the folded layer, in `kernel`'s dtype.
    """
    return _fold_output_axis(kernel, bias, scale, shift, axis=-2)


def fold_bn_after_depthwise_conv(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds BN after a depthwise convolution (any `depth_multiplier`).

    Output channel `c * depth_multiplier + m` comes from kernel slice
    `[..., c, m]`, so the per-output scale is reshaped to `(in, multiplier)`.

    Args:
        kernel: depthwise kernel, `(*window, in, depth_multiplier)`.
        bias: bias `(in * depth_multiplier,)`, or `None`.
        scale: BN scale, `(in * depth_multiplier,)`.
        shift: BN shift, same shape.

    Returns:
        `(kernel, bias)` of the folded layer, in `kernel`'s dtype.
    """
    dtype = kernel.dtype
    channels, multiplier = kernel.shape[-2:]
    _check_scale_shift(scale, shift, channels * multiplier)
    kernel64 = np.asarray(kernel, np.float64) * np.reshape(
        scale, (channels, multiplier)
    )
    bias64 = _bias64(bias, channels * multiplier) * scale + shift
    return kernel64.astype(dtype), bias64.astype(dtype)


def fold_bn_before_conv(
    scale: np.ndarray,
    shift: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds BN before an unpadded convolution (any rank, any `groups`).

    Input channel `c` lies in group `c // (in / groups)` and meets kernel row
    `c % (in / groups)` of that group's output channels only.

    Args:
        scale: BN scale, `(in,)`.
        shift: BN shift, `(in,)`.
        kernel: convolution kernel, `(*window, in / groups, out)`.
        bias: bias `(out,)`, or `None`.
        groups: the convolution's `groups`.

    Returns:
        `(kernel, bias)` of the folded convolution, in `kernel`'s dtype.
    """
    dtype = kernel.dtype
    group_in, channels_out = kernel.shape[-2:]
    _check_scale_shift(scale, shift, group_in * groups)
    group_out = channels_out // groups
    # Per-group input vectors laid out like the kernel's (in / groups, out).
    scale_grid = np.repeat(np.reshape(scale, (groups, group_in)).T, group_out, axis=1)
    shift_grid = np.repeat(np.reshape(shift, (groups, group_in)).T, group_out, axis=1)
    kernel64 = np.asarray(kernel, np.float64)
    bias64 = _bias64(bias, channels_out) + np.sum(
        _window_sum(kernel64) * shift_grid, axis=0
    )
    return (kernel64 * scale_grid).astype(dtype), bias64.astype(dtype)


#: Folds `Dense(BN(x))` (BN over Dense's input features) into the Dense: a
#: Dense kernel `(in, out)` is a convolution kernel with no window and one group.
fold_bn_before_dense = fold_bn_before_conv


def fold_bn_before_depthwise_conv(
    scale: np.ndarray,
    shift: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds BN before an unpadded depthwise convolution.

    Args:
        scale: BN scale, `(in,)`.
        shift: BN shift, `(in,)`.
        kernel: depthwise kernel, `(*window, in, depth_multiplier)`.
        bias: bias `(in * depth_multiplier,)`, or `None`.

    Returns:
        `(kernel, bias)` of the folded layer, in `kernel`'s dtype.
    """
    dtype = kernel.dtype
    channels, multiplier = kernel.shape[-2:]
    _check_scale_shift(scale, shift, channels)
    kernel64 = np.asarray(kernel, np.float64)
    offset = _window_sum(kernel64) * shift[:, None]
    bias64 = _bias64(bias, channels * multiplier) + offset.reshape(-1)
    return (kernel64 * scale[:, None]).astype(dtype), bias64.astype(dtype)


def fold_bn_before_separable_conv(
    scale: np.ndarray,
    shift: np.ndarray,
    depthwise_kernel: np.ndarray,
    pointwise_kernel: np.ndarray,
    bias: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Folds BN before an unpadded separable convolution.

    The scale goes into the depthwise kernel; the shift becomes a constant
    depthwise output, which the pointwise kernel carries into the bias.

    Args:
        scale: BN scale, `(in,)`.
        shift: BN shift, `(in,)`.
        depthwise_kernel: `(*window, in, depth_multiplier)`.
        pointwise_kernel: `(1, ..., in * depth_multiplier, out)`.
        bias: bias `(out,)`, or `None`.

    Returns:
        `(depthwise_kernel, pointwise_kernel, bias)`, in the kernels' dtype.
    """
    dtype = pointwise_kernel.dtype
    depthwise, depthwise_offset = fold_bn_before_depthwise_conv(
        scale, shift, np.asarray(depthwise_kernel, np.float64), None
    )
    pointwise64 = np.asarray(pointwise_kernel, np.float64)
    pointwise_matrix = pointwise64.reshape(pointwise64.shape[-2:])
    bias64 = _bias64(bias, pointwise64.shape[-1]) + depthwise_offset @ pointwise_matrix
    return (
        depthwise.astype(depthwise_kernel.dtype),
        pointwise_kernel.copy(),
        bias64.astype(dtype),
    )


def _fold_output_axis(kernel, bias, scale, shift, axis):
    dtype = kernel.dtype
    channels = kernel.shape[axis]
    _check_scale_shift(scale, shift, channels)
    broadcast = [1] * kernel.ndim
    broadcast[axis] = channels
    kernel64 = np.asarray(kernel, np.float64) * np.reshape(scale, broadcast)
    bias64 = _bias64(bias, channels) * scale + shift
    return kernel64.astype(dtype), bias64.astype(dtype)


def _window_sum(kernel64):
    """The kernel summed over its window: what a constant input meets."""
    return kernel64.sum(axis=tuple(range(kernel64.ndim - 2)))


def _check_scale_shift(scale, shift, channels):
    _check_shape("scale", scale, (channels,))
    _check_shape("shift", shift, (channels,))


def _bias64(bias, channels):
    if bias is None:
        return np.zeros(channels, dtype=np.float64)
    _check_shape("bias", bias, (channels,))
    return np.asarray(bias, dtype=np.float64)


def _check_shape(name, array, expected):
    if np.shape(array) != tuple(expected):
        raise ValueError(
            f"`{name}` must have shape {tuple(expected)} to match the kernel. "
            f"Received: {name}.shape={np.shape(array)}"
        )
