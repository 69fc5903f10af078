"""The closed-form fold formulas equal the unfolded layers, in float64.

Every formula in `keras_bn.folding.weights` is checked against the layers it
replaces, evaluated here by independent NumPy convolutions (sliding windows
and einsum): `BN(layer(x))` or `layer(BN(x))` versus the folded layer on the
same random float64 input.
"""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from keras_bn.folding import weights
from tests.helpers.reference import batchnorm_inference
from tests.tolerances import FOLD_WEIGHTS_FLOAT64_RTOL


def _statistics(rng, channels):
    """Non-trivial BN weights: never the default initializers."""
    return {
        "moving_mean": rng.normal(size=channels),
        "moving_variance": rng.uniform(0.5, 2.0, size=channels),
        "epsilon": 1e-3,
        "gamma": rng.normal(size=channels),
        "beta": rng.normal(size=channels),
    }


def _batchnorm(x, s, axis=-1):
    return batchnorm_inference(
        x,
        s["moving_mean"],
        s["moving_variance"],
        s["epsilon"],
        s["gamma"],
        s["beta"],
        axis,
    )


def _scale_shift(s):
    return weights.batchnorm_scale_shift(
        s["moving_mean"], s["moving_variance"], s["epsilon"], s["gamma"], s["beta"]
    )


def _windows(x, window):
    """`(batch, *out, channels, *window)` valid-padding windows of a channels-last x."""
    spatial = tuple(range(1, 1 + len(window)))
    return sliding_window_view(x, window, axis=spatial)


def conv(x, kernel, bias, groups=1):
    """Unpadded, stride-1 channels-last convolution of any rank, with groups."""
    rank = kernel.ndim - 2
    w = _windows(x, kernel.shape[:rank])  # (b, *out, cin, *window)
    group_in, channels_out = kernel.shape[-2:]
    group_out = channels_out // groups
    outputs = []
    for g in range(groups):
        xg = w[(..., slice(g * group_in, (g + 1) * group_in)) + (slice(None),) * rank]
        kg = kernel[..., g * group_out : (g + 1) * group_out]
        # Move the window axes of xg next to channels to match the kernel.
        xg = np.moveaxis(xg, -1 - rank, -1)  # (b, *out, *window, cin_g)
        outputs.append(
            np.tensordot(
                xg, kg, axes=(list(range(-rank - 1, 0)), list(range(rank + 1)))
            )
        )
    y = np.concatenate(outputs, axis=-1)
    return y if bias is None else y + bias


def depthwise_conv(x, kernel, bias):
    rank = kernel.ndim - 2
    w = _windows(x, kernel.shape[:rank])  # (b, *out, c, *window)
    letters = "hwd"[:rank]
    y = np.einsum(f"...c{letters},{letters}cm->...cm", w, kernel)
    y = y.reshape(*y.shape[:-2], -1)
    return y if bias is None else y + bias


def conv_transpose_1d(x, kernel, bias, stride):
    """Unpadded 1-D transposed convolution; kernel `(k, out, in)`."""
    batch, length, _ = x.shape
    k, channels_out, _ = kernel.shape
    y = np.zeros((batch, (length - 1) * stride + k, channels_out))
    for t in range(length):
        y[:, t * stride : t * stride + k, :] += np.einsum(
            "bi,koi->bko", x[:, t], kernel
        )
    return y if bias is None else y + bias


# Conv1D, Conv2D, grouped Conv2D and Conv3D: (input, kernel, groups).
CONV_CASES = [
    ((2, 9, 4), (3, 4, 6), 1),
    ((2, 7, 6, 4), (3, 2, 4, 6), 1),
    ((2, 7, 6, 4), (3, 3, 2, 6), 2),
    ((2, 5, 5, 5, 3), (2, 3, 2, 3, 4), 1),
]


def assert_close(actual, expected):
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert error <= FOLD_WEIGHTS_FLOAT64_RTOL, error


def test_scale_shift_is_the_inference_formula(rng):
    s = _statistics(rng, 5)
    x = rng.normal(size=(7, 5))
    scale, shift = _scale_shift(s)
    assert_close(x * scale + shift, _batchnorm(x, s))


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("scale_", [True, False])
def test_scale_shift_respects_center_and_scale(rng, center, scale_):
    s = _statistics(rng, 4)
    scale, shift = weights.batchnorm_scale_shift(
        s["moving_mean"],
        s["moving_variance"],
        s["epsilon"],
        gamma=s["gamma"] if scale_ else None,
        beta=s["beta"] if center else None,
    )
    reference = dict(s)
    if not scale_:
        reference["gamma"] = np.ones(4)
    if not center:
        reference["beta"] = np.zeros(4)
    x = rng.normal(size=(3, 4))
    assert_close(x * scale + shift, _batchnorm(x, reference))


def test_scale_shift_rejects_non_positive_variance():
    with pytest.raises(ValueError, match="moving_variance \\+ epsilon"):
        weights.batchnorm_scale_shift(np.zeros(2), np.array([1.0, -1.0]), 1e-3)


def test_fold_rejects_mismatched_channels(rng):
    with pytest.raises(ValueError, match=r"Received: scale.shape=\(3,\)"):
        weights.fold_bn_after_dense(
            rng.normal(size=(4, 5)), None, np.ones(3), np.ones(3)
        )


@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_then_bn(rng, use_bias):
    s = _statistics(rng, 6)
    kernel, bias = rng.normal(size=(5, 6)), rng.normal(size=6) if use_bias else None
    x = rng.normal(size=(8, 5))
    folded_kernel, folded_bias = weights.fold_bn_after_dense(
        kernel, bias, *_scale_shift(s)
    )
    expected = _batchnorm(x @ kernel + (0 if bias is None else bias), s)
    assert_close(x @ folded_kernel + folded_bias, expected)


def test_bn_then_dense(rng):
    s = _statistics(rng, 5)
    kernel, bias = rng.normal(size=(5, 6)), rng.normal(size=6)
    x = rng.normal(size=(8, 5))
    folded_kernel, folded_bias = weights.fold_bn_before_dense(
        *_scale_shift(s), kernel, bias
    )
    assert_close(x @ folded_kernel + folded_bias, _batchnorm(x, s) @ kernel + bias)


@pytest.mark.parametrize("input_shape, kernel_shape, groups", CONV_CASES)
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_then_bn(rng, input_shape, kernel_shape, groups, use_bias):
    channels_out = kernel_shape[-1]
    s = _statistics(rng, channels_out)
    kernel = rng.normal(size=kernel_shape)
    bias = rng.normal(size=channels_out) if use_bias else None
    x = rng.normal(size=input_shape)
    folded = weights.fold_bn_after_conv(kernel, bias, *_scale_shift(s))
    assert_close(
        conv(x, *folded, groups=groups), _batchnorm(conv(x, kernel, bias, groups), s)
    )


@pytest.mark.parametrize("input_shape, kernel_shape, groups", CONV_CASES)
def test_bn_then_conv(rng, input_shape, kernel_shape, groups):
    s = _statistics(rng, input_shape[-1])
    kernel, bias = rng.normal(size=kernel_shape), rng.normal(size=kernel_shape[-1])
    x = rng.normal(size=input_shape)
    folded = weights.fold_bn_before_conv(*_scale_shift(s), kernel, bias, groups=groups)
    assert_close(
        conv(x, *folded, groups=groups), conv(_batchnorm(x, s), kernel, bias, groups)
    )


@pytest.mark.parametrize("multiplier", [1, 3])
@pytest.mark.parametrize("input_shape", [(2, 9, 4), (2, 7, 6, 4)])
def test_depthwise_conv_then_bn(rng, input_shape, multiplier):
    rank = len(input_shape) - 2
    channels = input_shape[-1]
    s = _statistics(rng, channels * multiplier)
    kernel = rng.normal(size=(3,) * rank + (channels, multiplier))
    bias = rng.normal(size=channels * multiplier)
    x = rng.normal(size=input_shape)
    folded = weights.fold_bn_after_depthwise_conv(kernel, bias, *_scale_shift(s))
    assert_close(
        depthwise_conv(x, *folded), _batchnorm(depthwise_conv(x, kernel, bias), s)
    )


@pytest.mark.parametrize("multiplier", [1, 3])
@pytest.mark.parametrize("input_shape", [(2, 9, 4), (2, 7, 6, 4)])
def test_bn_then_depthwise_conv(rng, input_shape, multiplier):
    rank = len(input_shape) - 2
    channels = input_shape[-1]
    s = _statistics(rng, channels)
    kernel = rng.normal(size=(3,) * rank + (channels, multiplier))
    x = rng.normal(size=input_shape)
    folded = weights.fold_bn_before_depthwise_conv(*_scale_shift(s), kernel, None)
    assert_close(
        depthwise_conv(x, *folded), depthwise_conv(_batchnorm(x, s), kernel, None)
    )


def _separable(x, depthwise_kernel, pointwise_kernel, bias):
    return conv(depthwise_conv(x, depthwise_kernel, None), pointwise_kernel, bias)


@pytest.mark.parametrize("input_shape", [(2, 9, 4), (2, 7, 6, 4)])
def test_separable_conv_both_directions(rng, input_shape):
    rank = len(input_shape) - 2
    channels, multiplier, channels_out = input_shape[-1], 2, 5
    depthwise_kernel = rng.normal(size=(3,) * rank + (channels, multiplier))
    pointwise_kernel = rng.normal(
        size=(1,) * rank + (channels * multiplier, channels_out)
    )
    bias = rng.normal(size=channels_out)
    x = rng.normal(size=input_shape)
    reference = _separable(x, depthwise_kernel, pointwise_kernel, bias)

    after = _statistics(rng, channels_out)
    pointwise, folded_bias = weights.fold_bn_after_conv(
        pointwise_kernel, bias, *_scale_shift(after)
    )
    assert_close(
        _separable(x, depthwise_kernel, pointwise, folded_bias),
        _batchnorm(reference, after),
    )

    before = _statistics(rng, channels)
    folded = weights.fold_bn_before_separable_conv(
        *_scale_shift(before), depthwise_kernel, pointwise_kernel, bias
    )
    assert_close(
        _separable(x, *folded),
        _separable(_batchnorm(x, before), depthwise_kernel, pointwise_kernel, bias),
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_transpose_then_bn(rng, stride):
    s = _statistics(rng, 5)
    kernel, bias = rng.normal(size=(3, 5, 4)), rng.normal(size=5)
    x = rng.normal(size=(2, 6, 4))
    folded = weights.fold_bn_after_conv_transpose(kernel, bias, *_scale_shift(s))
    assert_close(
        conv_transpose_1d(x, *folded, stride),
        _batchnorm(conv_transpose_1d(x, kernel, bias, stride), s),
    )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_dtype_is_preserved(rng, dtype):
    s = _statistics(rng, 3)
    kernel = rng.normal(size=(2, 2, 4, 3)).astype(dtype)
    folded_kernel, folded_bias = weights.fold_bn_after_conv(
        kernel, None, *_scale_shift(s)
    )
    assert folded_kernel.dtype == folded_bias.dtype == np.dtype(dtype)
