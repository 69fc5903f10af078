"""Batch Normalization as pure TensorFlow functions, with the analytic gradient.

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
sums variable gradients across replicas itself.

Numerics: statistics and backward reductions run in float32 (float64 for
float64 inputs) whatever the input dtype. Moments are two-pass and *shifted*:
the data are first moved by a per-channel reference value taken from the batch,
so an input with mean 1e4 and standard deviation 0.1 keeps its variance and
its normalized output to float32 precision, which neither `E[x²] − E[x]²` nor
Keras' `x·inv + (β − mean·inv)` do (tensorflow/tensorflow#117318).

The gradient closure keeps the input `x` (alive anyway) and per-channel
vectors; x̂ is recomputed in the backward pass, which XLA fuses into the
reductions, instead of keeping a second activation-sized tensor.

Speed: the work is four stages, each an XLA-compiled `tf.function` (one per
input rank, see `compiled`): the local moments (two passes over `x`), the
normalization (one pass), the backward sums Σdy and Σdy·x̂ (one pass over
`x` and `dy`) and `dx` (one pass). A plain `tf.function` (Keras' default on
a CPU) or an eager call would otherwise run every elementwise op as its own
kernel over the whole tensor; compiled, each stage is one or two fused
loops. Inside an XLA-compiled caller the stages are inlined. With
`synchronized=True` they run uncompiled: all-reduces sit between them, and
TF 2.21 compiles no collectives on CPU under XLA, so that combination is
left to TensorFlow's own kernels.

Nothing here knows about Keras variables; `keras_bn.layers` owns state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

# One compiled function per stage and rank: `reduce_retracing` then relaxes
# only the sizes (a new batch size does not retrace), never the rank.
COMPILE = {"jit_compile": True, "reduce_retracing": True, "autograph": False}


@functools.cache
def compiled(stage: Callable, rank: int) -> Callable:
    """`stage` as an XLA-compiled `tf.function` for inputs of rank `rank`."""
    del rank  # part of the cache key only
    return tf.function(stage, **COMPILE)


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

    shift: tf.Tensor
    offset: tf.Tensor
    variance: tf.Tensor
    count: tf.Tensor

    @property
    def mean(self) -> tf.Tensor:
        return self.shift + self.offset


def statistics_dtype(dtype: tf.DType) -> tf.DType:
    """The dtype statistics are computed in: float32, or float64 for float64."""
    dtype = tf.as_dtype(dtype)
    return tf.float64 if dtype == tf.float64 else tf.float32


def cross_replica_sum(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
    """Sums per-replica tensors over all replicas of the current strategy.

    Outside a replica context (no strategy, or cross-replica code) the batch
    is the local batch and the tensors come back unchanged.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return list(tensors)
    return list(ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors)))


def _first_element(x: tf.Tensor, axes: Sequence[int]) -> tf.Tensor:
    index = tuple(
        slice(0, 1) if a in axes else slice(None) for a in range(x.shape.rank)
    )
    return x[index]


def moments(
    x: tf.Tensor,
    axes: Sequence[int],
    *,
    weights: tf.Tensor | None = None,
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
            moments of the concatenated batch.

    Returns:
        A `BatchStats`; `count` is the (weighted) number of values per channel.
    """
    axes = tuple(sorted(a % x.shape.rank for a in axes))
    # All-reduces stay outside XLA: TF 2.21 compiles no CPU collectives.
    local = _local_moments if synchronized else compiled(_local_moments, x.shape.rank)
    stats = local(x, weights, axes)
    if synchronized:
        stats = _combine_replicas(*stats)
    count, shift, offset, m2 = stats
    variance = tf.math.divide_no_nan(m2, count)
    return BatchStats(shift, offset, variance, count)


def _local_moments(x, weights, axes):
    """(count, shift, offset, M2) of this replica's batch: the shifted two passes."""
    dtype = statistics_dtype(x.dtype)
    x = tf.cast(x, dtype)
    shift = tf.stop_gradient(_first_element(x, axes))
    centered = x - shift
    if weights is None:
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), dtype)
        count = tf.ones_like(shift) * count
        local_sum = tf.reduce_sum(centered, axes, keepdims=True)
    else:
        weights = tf.cast(weights, dtype)
        count = tf.reduce_sum(tf.ones_like(x) * weights, axes, keepdims=True)
        local_sum = tf.reduce_sum(centered * weights, axes, keepdims=True)
    offset = tf.math.divide_no_nan(local_sum, count)
    squared = tf.math.squared_difference(centered, offset)
    if weights is not None:
        squared = weights * squared
    return count, shift, offset, tf.reduce_sum(squared, axes, keepdims=True)


def _combine_replicas(count, shift, offset, m2):
    """Chan et al.'s parallel moments over all replicas, in one all-reduce.

    Each replica writes its (count, shift, offset, M2) into its own row of a
    zero tensor; summing those over replicas gathers every row everywhere.
    All replicas then combine the rows in the same order around replica 0's
    shift: mean offsets δ_i = (s_i − s_0) + offset_i stay small, and
    M2 = Σ M2_i + Σ n_i (δ_i − δ)², which no raw sum of squares can match.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return count, shift, offset, m2
    local = tf.stack([count, shift, offset, m2])
    slot = tf.one_hot(
        ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync, dtype=local.dtype
    )
    slot = tf.reshape(slot, [-1] + [1] * local.shape.rank)
    (rows,) = cross_replica_sum([slot * local[None]])
    counts, shifts, offsets, m2s = tf.unstack(rows, axis=1)
    deltas = (shifts - shifts[0]) + offsets
    total = tf.reduce_sum(counts, 0)
    mean_delta = tf.math.divide_no_nan(tf.reduce_sum(counts * deltas, 0), total)
    m2 = tf.reduce_sum(m2s, 0) + tf.reduce_sum(
        counts * tf.square(deltas - mean_delta), 0
    )
    return total, shifts[0], mean_delta, m2


def renorm_corrections(
    stats: BatchStats,
    renorm_mean: tf.Tensor,
    renorm_stddev: tf.Tensor,
    epsilon: float,
    *,
    rmin: float | None = None,
    rmax: float | None = None,
    dmax: float | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch Renormalization's `r = σ_B/σ` and `d = (μ_B − μ)/σ`, clipped.

    Both are constants for the backward pass (Ioffe 2017, Algorithm 1), so
    they are returned under `stop_gradient`. `renorm_stddev` is floored at
    `√ε` as Keras does, to avoid a division by zero early in training.
    """
    dtype = stats.variance.dtype
    stddev = tf.sqrt(stats.variance + epsilon)
    renorm_mean = tf.cast(renorm_mean, dtype)
    renorm_stddev = tf.maximum(
        tf.cast(renorm_stddev, dtype), tf.sqrt(tf.constant(epsilon, dtype))
    )
    r = stddev / renorm_stddev
    d = (stats.shift - renorm_mean + stats.offset) / renorm_stddev
    if rmin is not None:
        r = tf.maximum(r, rmin)
    if rmax is not None:
        r = tf.minimum(r, rmax)
    if dmax is not None:
        d = tf.clip_by_value(d, -dmax, dmax)
    return tf.stop_gradient(r), tf.stop_gradient(d)


def _sum_to(t: tf.Tensor, shape: tf.TensorShape) -> tf.Tensor:
    """Reduces a broadcast result back to a parameter's (keepdims) shape."""
    axes = [i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1]
    return tf.reshape(tf.reduce_sum(t, axes, keepdims=True), shape) if axes else t


def _stages(rank: int, synchronized: bool) -> list[Callable]:
    """The forward, backward-sums and dx stages, XLA-compiled unless synchronized."""
    stages = [_normalize, _backward_sums, _backward_dx]
    # All-reduces stay outside XLA: TF 2.21 compiles no CPU collectives.
    if synchronized:
        return stages
    return [compiled(stage, rank) for stage in stages]


def batch_norm_train(
    x: tf.Tensor,
    gamma: tf.Tensor,
    beta: tf.Tensor,
    stats: BatchStats,
    *,
    axes: Sequence[int],
    epsilon: float,
    weights: tf.Tensor | None = None,
    r: tf.Tensor | None = None,
    d: tf.Tensor | None = None,
    synchronized: bool = False,
) -> tf.Tensor:
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

    >>> x = tf.random.normal((8, 4))
    >>> stats = moments(x, [0])
    >>> y = batch_norm_train(x, tf.ones((1, 4)), tf.zeros((1, 4)), stats,
    ...                      axes=[0], epsilon=1e-3)
    """
    axes = tuple(sorted(a % x.shape.rank for a in axes))
    # The statistics' dependence on x is part of the closed-form dx below.
    stats = BatchStats(*(tf.stop_gradient(t) for t in stats))
    dtype = stats.variance.dtype
    inv_std = tf.math.rsqrt(stats.variance + tf.constant(epsilon, dtype))
    mean = (stats.shift, stats.offset)
    gamma = tf.cast(gamma, dtype)
    beta = tf.cast(beta, dtype)
    if weights is not None:
        weights = tf.cast(weights, dtype)
    param_shape = gamma.shape
    normalize_forward, backward_sums, backward_dx = _stages(x.shape.rank, synchronized)

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        y = normalize_forward(x, mean, inv_std, gamma, beta, r, d)

        def grad(dy):
            sum_dy, sum_dy_x_hat = backward_sums(dy, x, mean, inv_std, axes)
            if synchronized:
                total_dy, total_dy_x_hat = cross_replica_sum([sum_dy, sum_dy_x_hat])
            else:
                total_dy, total_dy_x_hat = sum_dy, sum_dy_x_hat
            scale = gamma * inv_std if r is None else gamma * r * inv_std
            dx = backward_dx(
                dy,
                x,
                mean,
                inv_std,
                scale,
                tf.math.divide_no_nan(total_dy, stats.count),
                tf.math.divide_no_nan(total_dy_x_hat, stats.count),
                weights,
            )
            d_gamma = sum_dy_x_hat if r is None else r * sum_dy_x_hat + d * sum_dy
            return dx, _sum_to(d_gamma, param_shape), _sum_to(sum_dy, param_shape)

        return y, grad

    return normalize(x, gamma, beta)


def _x_hat(x, mean, inv_std):
    shift, offset = mean
    # Centered before it is scaled, so a large mean cannot cancel the signal.
    return (tf.cast(x, inv_std.dtype) - shift - offset) * inv_std


def _normalize(x, mean, inv_std, gamma, beta, r, d):
    x_hat = _x_hat(x, mean, inv_std)
    scaled = x_hat if r is None else x_hat * r + d
    return tf.cast(scaled * gamma + beta, x.dtype)


def _backward_sums(dy, x, mean, inv_std, axes):
    """Σdy and Σdy·x̂ over `axes`; x̂ is recomputed, fused into the sums."""
    dy = tf.cast(dy, inv_std.dtype)
    x_hat = _x_hat(x, mean, inv_std)
    return (
        tf.reduce_sum(dy, axes, keepdims=True),
        tf.reduce_sum(dy * x_hat, axes, keepdims=True),
    )


def _backward_dx(dy, x, mean, inv_std, scale, mean_dy, mean_dy_x_hat, weights):
    """dx = γ·r/σ · (dy − w·(mean(dy) + x̂·mean(dy·x̂))), in x's dtype."""
    x_hat = _x_hat(x, mean, inv_std)
    correction = mean_dy + x_hat * mean_dy_x_hat
    if weights is not None:
        correction = correction * weights
    return tf.cast(scale * (tf.cast(dy, inv_std.dtype) - correction), x.dtype)


def batch_norm_inference(
    x: tf.Tensor,
    mean: tf.Tensor,
    variance: tf.Tensor,
    gamma: tf.Tensor,
    beta: tf.Tensor,
    *,
    epsilon: float,
) -> tf.Tensor:
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
        tf.cast(t, dtype) for t in (mean, variance, gamma, beta)
    )
    scale = gamma * tf.math.rsqrt(variance + tf.constant(epsilon, dtype))
    y = (tf.cast(x, dtype) - mean) * scale + beta
    return tf.cast(y, x.dtype)
