"""TensorFlow: `tf.custom_gradient`, XLA-compiled stages, `tf.distribute` sums.

Speed: the layer's work is four stages (the local moments, the
normalization, the backward sums Σdy and Σdy·x̂, and `dx`), each an
XLA-compiled `tf.function`, one per input rank. A plain `tf.function`
(Keras' default on a CPU) or an eager call would otherwise run every
elementwise op as its own kernel over the whole tensor; compiled, each stage
is one or two fused loops. Inside an XLA-compiled caller the stages are
inlined. With `synchronized=True` they run uncompiled: all-reduces sit
between them, and TF 2.21 compiles no collectives on CPU under XLA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf

__all__ = [
    "assert_broadcastable",
    "combine_replicas",
    "compile_stage",
    "cross_replica_sum",
    "with_gradient",
]

# One compiled function per stage and rank: `reduce_retracing` then relaxes
# only the sizes (a new batch size does not retrace), never the rank.
COMPILE = {"jit_compile": True, "reduce_retracing": True, "autograph": False}


@functools.cache
def compile_stage(stage: Callable, rank: int) -> Callable:
    """`stage` as an XLA-compiled `tf.function` for inputs of rank `rank`."""
    del rank  # part of the cache key only
    return tf.function(stage, **COMPILE)


def with_gradient(forward: Callable, backward: Callable, x, gamma, beta, consts):
    """`forward` with the closed-form gradient `backward` (`keras_bn.backends`' contract)."""

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        def grad(dy):
            return backward(dy, x, gamma, beta, consts)

        return forward(x, gamma, beta, consts), grad

    return normalize(x, gamma, beta)


def cross_replica_sum(tensors: list) -> list:
    """Sums per-replica tensors over all replicas of the current strategy.

    Outside a replica context (no strategy, or cross-replica code) the batch
    is the local batch and the tensors come back unchanged.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return list(tensors)
    return list(ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors)))


def combine_replicas(count, shift, offset, m2):
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


def assert_broadcastable(small, target, message: str):
    """`small`, after a run-time check that its shape broadcasts to `target`'s.

    A `tf.function` traced with unknown sizes cannot check them when traced;
    without this the mismatch surfaces as TensorFlow's "Incompatible shapes"
    from whichever op meets it first (or not at all, where nothing
    broadcasts). `small` must have `target`'s rank; each of its sizes must be
    1 or `target`'s.

    Args:
        small: the tensor to check (a mask with its trailing axis).
        target: the tensor it must broadcast to.
        message: the error's text, naming the layer and the rule.

    Returns:
        `small`, depending on the check.

    Raises:
        tf.errors.InvalidArgumentError: when run, with `message` and both
            shapes, if a size differs. (XLA drops run-time assertions: a
            jit-compiled function fails when compiled, with XLA's message.)
    """
    small_shape, target_shape = tf.shape(small), tf.shape(target)
    fits = tf.reduce_all(
        tf.logical_or(tf.equal(small_shape, 1), tf.equal(small_shape, target_shape))
    )
    check = tf.debugging.Assert(
        fits, [message, "Received: shapes", small_shape, "and", target_shape]
    )
    with tf.control_dependencies([check]):
        return tf.identity(small)
