"""The one float64 NumPy Batch Normalization reference the tests compare against.

Nothing of keras_bn is used. Training mode normalizes with the batch mean and
the biased variance over the reduced axes (NumPy's `mean` and `var`, or their
mask-weighted forms); inference mode with given statistics. Both compute
`(x − mean) / √(variance + ε) · γ + β` in float64.
"""

from __future__ import annotations

import numpy as np


def batch_moments(
    x: np.ndarray, axes: tuple[int, ...], mask_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Batch mean and biased variance over `axes`, float64, reduced axes kept as 1.

    With `mask_weights` (broadcast against `x`), each value counts by its weight,
    as a Keras mask counts it.
    """
    x = np.asarray(x, np.float64)
    if mask_weights is None:
        return x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    w = np.broadcast_to(np.asarray(mask_weights, np.float64), x.shape)
    count = w.sum(axes, keepdims=True)
    mean = (w * x).sum(axes, keepdims=True) / count
    variance = (w * (x - mean) ** 2).sum(axes, keepdims=True) / count
    return mean, variance


def normalize(x, mean, variance, epsilon: float, gamma=1.0, beta=0.0) -> np.ndarray:
    """`(x − mean) / √(variance + ε) · γ + β` in float64; arguments broadcast against x."""
    return (np.asarray(x, np.float64) - mean) / np.sqrt(
        variance + epsilon
    ) * gamma + beta


def batchnorm_train(
    x: np.ndarray,
    axes: tuple[int, ...],
    epsilon: float,
    mask_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode BN with γ = 1, β = 0: (output, mean, variance), float64.

    The statistics keep the reduced axes as size 1, so they broadcast against x.
    """
    mean, variance = batch_moments(x, axes, mask_weights)
    return normalize(x, mean, variance, epsilon), mean, variance


def batchnorm_inference(
    x: np.ndarray, mean, variance, epsilon: float, gamma=1.0, beta=0.0, axis: int = -1
) -> np.ndarray:
    """Inference-mode BN with per-channel vectors laid along `axis`, float64."""
    shape = [1] * np.ndim(x)
    shape[axis] = -1

    def along_axis(v):
        return np.reshape(np.asarray(v, np.float64), shape) if np.ndim(v) else v

    return normalize(
        x,
        along_axis(mean),
        along_axis(variance),
        epsilon,
        along_axis(gamma),
        along_axis(beta),
    )


def layer_inference(layer, x: np.ndarray) -> np.ndarray:
    """A built BN layer's inference output from its variables, float64, channels last."""
    return batchnorm_inference(
        x,
        layer.moving_mean,
        layer.moving_variance,
        layer.epsilon,
        np.asarray(layer.gamma, np.float64) if layer.scale else 1.0,
        np.asarray(layer.beta, np.float64) if layer.center else 0.0,
    )
