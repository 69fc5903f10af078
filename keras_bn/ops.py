"""Batch Normalization as backend-neutral functions, with the analytic gradient.

Ioffe & Szegedy (2015), Algorithm 1, over a mini-batch of `m` values per channel:

    mean = 1/m Σ x_i          variance = 1/m Σ (x_i − mean)²
    x̂_i = (x_i − mean) / σ    σ = √(variance + ε)
    y_i = γ·x̂_i + β

and the backward pass written out instead of left to autodiff:

    dβ = Σ dy_i               dγ = Σ dy_i·x̂_i
    dx_i = γ/(m·σ) · (m·dy_i − Σ dy_j − x̂_i·Σ dy_j·x̂_j)

With per-element weights `w` (a Keras mask) `m` becomes `Σ w` and the two sums
in `dx` are weighted by `w_i/Σ w`; with Batch Renormalization (Ioffe 2017) the
output is `γ·(x̂·r + d) + β` with `r`, `d` constants, so `dx` gains a factor `r`
and `dγ = Σ dy·(x̂·r + d)`. Under `tf.distribute` the sums in `dx` are taken
over every replica's batch; `dγ` and `dβ` stay local because the optimizer
sums variable gradients across replicas itself. Under JAX's
`keras.distribution` the program is global and every sum spans all devices.

Numerics: statistics and backward reductions run in float32 (float64 for
float64 inputs) whatever the input dtype. Moments are two-pass and *shifted*:
the data are first moved by a per-channel reference value taken from the batch,
so an input with mean 1e4 and standard deviation 0.1 keeps its variance and
its normalized output to float32 precision, which neither `E[x²] − E[x]²` nor
Keras' `x·inv + (β − mean·inv)` do (tensorflow/tensorflow#117318).

The gradient closure keeps the input `x` (alive anyway) and per-channel
vectors; x̂ is recomputed in the backward pass, which XLA fuses into the
reductions, instead of keeping a second activation-sized tensor.

Backends: the mathematics is written once, in `keras.ops`. What a backend
must do differently (attach the gradient: `tf.custom_gradient` or
`jax.custom_vjp`; compile the four stages: XLA-compiled `tf.function`s on
TensorFlow, the caller's `jax.jit` on JAX; sum over replicas) lives in
`keras_bn.backends`. The stages are the local moments (two passes over `x`),
the normalization (one pass), the backward sums Σdy and Σdy·x̂ (one pass over
`x` and `dy`) and `dx` (one pass).

Nothing here knows about Keras variables; `keras_bn.layers` owns state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from keras_bn import backends

__all__ = [
    "BatchStats",
    "batch_norm_inference",
    "batch_norm_train",
    "bessel_correction",
    "channel_axes",
    "cross_replica_sum",
    "moments",
    "renorm_corrections",
    "statistics_dtype",
    "validate_axis",
]

Tensor = Any  # a backend tensor: tf.Tensor or jax.Array


def validate_axis(axis: int | Sequence[int], owner: str = "") -> int | list[int]:
    """`axis` as an int or a list of ints, or a `TypeError` quoting it.

    Args:
        axis: a layer's `axis` argument: an int or a non-empty list of ints.
        owner: prefix for the message, for example `"Layer 'bn': "`.

    Returns:
        The int, or the axes as a new list.

    Raises:
        TypeError: for a bool, a float, an empty list or a list with a non-int.
    """
    if isinstance(axis, int) and not isinstance(axis, bool):
        return axis
    if (
        isinstance(axis, (list, tuple))
        and axis
        and all(isinstance(a, int) and not isinstance(a, bool) for a in axis)
    ):
        return list(axis)
    raise TypeError(
        f"{owner}`axis` must be an int or a non-empty list of ints. "
        f"Received: axis={axis!r}"
    )


def channel_axes(
    axis: int | Sequence[int], input_shape: Sequence, owner: str = ""
) -> list[int]:
    """The channel axes `axis` names in an input of `input_shape`: sorted, ≥ 0.

    Args:
        axis: an int or a list of ints, negative ones counting from the end.
        input_shape: the input's shape (only its length is read).
        owner: prefix for the messages, for example `"Layer 'bn': "`.

    Returns:
        The axes as sorted non-negative ints.

    Raises:
        ValueError: for an axis out of bounds or an axis named twice.

    Example:

    >>> channel_axes(-1, (8, 5, 3))
    [2]
    """
    rank = len(input_shape)
    axes = [axis] if isinstance(axis, int) else list(axis)
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(
                f"{owner}axis {a} is out of bounds for input shape "
                f"{tuple(input_shape)} (rank {rank}). Received: axis={axis}"
            )
    normalized = sorted(a % rank for a in axes)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{owner}duplicate axes in `axis`. Received: axis={axis}")
    return normalized


def bessel_correction(variance, count):
    """The unbiased variance `variance·m/(m − 1)` of `m = count` values.

    `m − 1` is floored at 1, so a single value (or a weighted count below 2)
    is not divided by zero. NumPy in, NumPy out (float64 stays float64);
    backend tensors in, a tensor out.

    Args:
        variance: the biased (population) variance of the values.
        count: how many values (or their total weight) it was computed from.

    Returns:
        The Bessel-corrected variance, broadcast like `variance * count`.
    """
    if isinstance(count, (int, float, np.ndarray, np.generic)) and isinstance(
        variance, (int, float, np.ndarray, np.generic)
    ):
        return variance * (count / np.maximum(count - 1.0, 1.0))
    return variance * count / keras.ops.maximum(count - 1.0, 1.0)


class BatchStats(NamedTuple):
    """Per-channel statistics of a batch, in `keepdims` shape.

    The mean is stored as `shift + offset`: `shift` is a value taken from the
    data and `offset` the (small) mean of `x − shift`, so `x − shift − offset`
    is computed without the cancellation that `x − mean` suffers when the mean
    is large compared with the spread.
    """

    shift: Tensor
    offset: Tensor
    variance: Tensor
    count: Tensor

    @property
    def mean(self) -> Tensor:
        return self.shift + self.offset


def statistics_dtype(dtype) -> str:
    """The dtype statistics are computed in: float32, or float64 for float64."""
    if keras.backend.standardize_dtype(dtype) == "float64":
        return "float64"
    return "float32"


def cross_replica_sum(tensors: list) -> list:
    """Sums per-replica tensors over all replicas (see `keras_bn.backends`).

    On TensorFlow outside a replica context, and always on JAX (whose
    distributed programs are global), the tensors come back unchanged.
    """
    return backends.current().cross_replica_sum(tensors)


def _first_element(x: Tensor, axes: Sequence[int]) -> Tensor:
    index = tuple(slice(0, 1) if a in axes else slice(None) for a in range(x.ndim))
    return x[index]


def _sorted_axes(x: Tensor, axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(a % x.ndim for a in axes))


def moments(
    x: Tensor,
    axes: Sequence[int],
    *,
    weights: Tensor | None = None,
    synchronized: bool = False,
) -> BatchStats:
    """Shifted two-pass mean and (biased) variance over `axes`.

    Args:
        x: input of any float dtype; computation is in `statistics_dtype`.
        axes: the axes to reduce; the result keeps them with size 1.
        weights: optional non-negative weights broadcastable to `x` (a
            Keras mask with a trailing axis, broadcast along the reduced
            axes).
        synchronized: reduce over every replica of the current
            `tf.distribute` strategy. Per-replica counts, means and centered
            sums of squares are combined with Chan et al.'s parallel formula
            in a single all-reduce, so the result equals the single-device
            moments of the concatenated batch. On JAX it changes nothing.

    Returns:
        A `BatchStats`; `count` is the (weighted) number of values per channel.
    """
    axes = _sorted_axes(x, axes)
    backend = backends.current()
    local = _local_moments
    # All-reduces stay outside XLA: TF 2.21 compiles no CPU collectives.
    if not synchronized:
        local = backend.compile_stage(_local_moments, x.ndim)
    count, shift, offset, m2 = local(x, weights, axes)
    if synchronized:
        count, shift, offset, m2 = backend.combine_replicas(count, shift, offset, m2)
    return BatchStats(shift, offset, ops.divide_no_nan(m2, count), count)


def _local_moments(x, weights, axes):
    """(count, shift, offset, M2) of this replica's batch: the shifted two passes."""
    dtype = statistics_dtype(x.dtype)
    x = ops.cast(x, dtype)
    shift = ops.stop_gradient(_first_element(x, axes))
    centered = x - shift
    if weights is None:
        shape = ops.shape(x)
        size = math.prod(shape[a] for a in axes)
        count = ops.ones_like(shift) * ops.cast(size, dtype)
        local_sum = ops.sum(centered, axes, keepdims=True)
    else:
        weights = ops.cast(weights, dtype)
        count = ops.sum(ops.ones_like(x) * weights, axes, keepdims=True)
        local_sum = ops.sum(centered * weights, axes, keepdims=True)
    offset = ops.divide_no_nan(local_sum, count)
    squared = ops.square(centered - offset)
    if weights is not None:
        squared = weights * squared
    return count, shift, offset, ops.sum(squared, axes, keepdims=True)


def renorm_corrections(
    stats: BatchStats,
    renorm_mean: Tensor,
    renorm_stddev: Tensor,
    epsilon: float,
    *,
    rmin: float | None = None,
    rmax: float | None = None,
    dmax: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Batch Renormalization's `r = σ_B/σ` and `d = (μ_B − μ)/σ`, clipped.

    Both are constants for the backward pass (Ioffe 2017, Algorithm 1), so
    they are returned under `stop_gradient`. `renorm_stddev` is floored at
    `√ε` as Keras does, to avoid a division by zero early in training.
    """
    dtype = keras.backend.standardize_dtype(stats.variance.dtype)
    stddev = ops.sqrt(stats.variance + epsilon)
    renorm_mean = ops.cast(renorm_mean, dtype)
    renorm_stddev = ops.maximum(ops.cast(renorm_stddev, dtype), math.sqrt(epsilon))
    r = stddev / renorm_stddev
    d = (stats.shift - renorm_mean + stats.offset) / renorm_stddev
    if rmin is not None:
        r = ops.maximum(r, rmin)
    if rmax is not None:
        r = ops.minimum(r, rmax)
    if dmax is not None:
        d = ops.clip(d, -dmax, dmax)
    return ops.stop_gradient(r), ops.stop_gradient(d)


def _sum_to(t: Tensor, shape: Sequence[int]) -> Tensor:
    """Reduces a broadcast result back to a parameter's (keepdims) shape."""
    axes = [i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1]
    if not axes:
        return t
    return ops.reshape(ops.sum(t, axes, keepdims=True), shape)


def _stages(rank: int, synchronized: bool) -> list[Callable]:
    """The forward, backward-sums and dx stages, compiled unless synchronized."""
    stages = [_normalize, _backward_sums, _backward_dx]
    # All-reduces stay outside XLA: TF 2.21 compiles no CPU collectives.
    if synchronized:
        return stages
    backend = backends.current()
    return [backend.compile_stage(stage, rank) for stage in stages]


def batch_norm_train(
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    stats: BatchStats,
    *,
    axes: Sequence[int],
    epsilon: float,
    weights: Tensor | None = None,
    r: Tensor | None = None,
    d: Tensor | None = None,
    synchronized: bool = False,
) -> Tensor:
    """Training-mode normalization `γ·(x̂·r + d) + β` with the analytic gradient.

    Args:
        x: the input, any float dtype; the output has the same dtype.
        gamma, beta: scale and offset broadcastable to `x` (keepdims shape).
        stats: `moments(x, axes, weights=..., synchronized=...)` of this `x`.
        axes: the axes the statistics were reduced over.
        epsilon: added to the variance.
        weights: the weights `stats` was computed with, if any. Every element
            is normalized; weights decide which ones shape the statistics.
        r, d: Batch Renormalization corrections (constants), or `None`.
        synchronized: `stats` were reduced across replicas; the backward pass
            then all-reduces its two per-channel sums as well.

    Returns:
        The normalized tensor, whose gradient with respect to `x`, `gamma`
        and `beta` is the closed form in the module docstring. `stats` get no
        gradient: their dependence on `x` is already in `dx`.

    Example:

    >>> x = keras.random.normal((8, 4))
    >>> stats = moments(x, [0])
    >>> y = batch_norm_train(x, ops.ones((1, 4)), ops.zeros((1, 4)), stats,
    ...                      axes=[0], epsilon=1e-3)
    """
    axes = _sorted_axes(x, axes)
    # The statistics' dependence on x is part of the closed-form dx below.
    stats = BatchStats(*(ops.stop_gradient(t) for t in stats))
    dtype = keras.backend.standardize_dtype(stats.variance.dtype)
    # A Python float keeps the variance's dtype; a cast would round ε to float32.
    inv_std = ops.rsqrt(stats.variance + epsilon)
    gamma = ops.cast(gamma, dtype)
    beta = ops.cast(beta, dtype)
    if weights is not None:
        weights = ops.cast(weights, dtype)
    param_shape = tuple(gamma.shape)
    forward_stage, sums_stage, dx_stage = _stages(x.ndim, synchronized)
    backend = backends.current()

    def forward(x, gamma, beta, consts):
        shift, offset, inv_std, _, _, r, d = consts
        return forward_stage(x, (shift, offset), inv_std, gamma, beta, r, d)

    def backward(dy, x, gamma, beta, consts):
        shift, offset, inv_std, count, weights, r, d = consts
        mean = (shift, offset)
        sum_dy, sum_dy_x_hat = sums_stage(dy, x, mean, inv_std, axes)
        total_dy, total_dy_x_hat = sum_dy, sum_dy_x_hat
        if synchronized:
            total_dy, total_dy_x_hat = backend.cross_replica_sum([sum_dy, sum_dy_x_hat])
        scale = gamma * inv_std if r is None else gamma * r * inv_std
        dx = dx_stage(
            dy,
            x,
            mean,
            inv_std,
            scale,
            ops.divide_no_nan(total_dy, count),
            ops.divide_no_nan(total_dy_x_hat, count),
            weights,
        )
        d_gamma = sum_dy_x_hat if r is None else r * sum_dy_x_hat + d * sum_dy
        return dx, _sum_to(d_gamma, param_shape), _sum_to(sum_dy, param_shape)

    consts = (stats.shift, stats.offset, inv_std, stats.count, weights, r, d)
    return backend.with_gradient(forward, backward, x, gamma, beta, consts)


def _x_hat(x, mean, inv_std):
    shift, offset = mean
    # Centered before it is scaled, so a large mean cannot cancel the signal.
    return (ops.cast(x, inv_std.dtype) - shift - offset) * inv_std


def _normalize(x, mean, inv_std, gamma, beta, r, d):
    x_hat = _x_hat(x, mean, inv_std)
    scaled = x_hat if r is None else x_hat * r + d
    return ops.cast(scaled * gamma + beta, x.dtype)


def _backward_sums(dy, x, mean, inv_std, axes):
    """Σdy and Σdy·x̂ over `axes`; x̂ is recomputed, fused into the sums."""
    dy = ops.cast(dy, inv_std.dtype)
    x_hat = _x_hat(x, mean, inv_std)
    return (
        ops.sum(dy, axes, keepdims=True),
        ops.sum(dy * x_hat, axes, keepdims=True),
    )


def _backward_dx(dy, x, mean, inv_std, scale, mean_dy, mean_dy_x_hat, weights):
    """dx = γ·r/σ · (dy − w·(mean(dy) + x̂·mean(dy·x̂))), in x's dtype."""
    x_hat = _x_hat(x, mean, inv_std)
    correction = mean_dy + x_hat * mean_dy_x_hat
    if weights is not None:
        correction = correction * weights
    return ops.cast(scale * (ops.cast(dy, inv_std.dtype) - correction), x.dtype)


def batch_norm_inference(
    x: Tensor,
    mean: Tensor,
    variance: Tensor,
    gamma: Tensor,
    beta: Tensor,
    *,
    epsilon: float,
) -> Tensor:
    """Inference-mode normalization `(x − mean)·γ/√(variance + ε) + β`.

    The input is centered before it is scaled, so a large mean does not
    cancel away the signal (Keras' `x·inv + (β − mean·inv)` does, under XLA
    especially). The gradient is that of an affine map; autodiff is exact.

    Args:
        x: the input, any float dtype; the output has the same dtype.
        mean, variance, gamma, beta: per-channel values broadcastable to `x`.
        epsilon: added to the variance.

    Returns:
        The normalized tensor.
    """
    dtype = statistics_dtype(x.dtype)
    mean, variance, gamma, beta = (
        ops.cast(t, dtype) for t in (mean, variance, gamma, beta)
    )
    scale = gamma * ops.rsqrt(variance + epsilon)
    y = (ops.cast(x, dtype) - mean) * scale + beta
    return ops.cast(y, x.dtype)
