"""JAX: `jax.custom_vjp`; compiling and cross-device sums are the caller's `jax.jit`.

Keras compiles a JAX model's whole step with `jax.jit` (`jit_compile=True`
is the default there), and XLA fuses the closed-form backward into it, so a
stage needs no compiling of its own. Under `keras.distribution` (for
example `DataParallel`) Keras jits one global program that XLA partitions
across devices: a reduction over the batch axis is already a reduction over
every device's shard, so the replica sums are the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["combine_replicas", "compile_stage", "cross_replica_sum", "with_gradient"]


def compile_stage(stage: Callable, rank: int) -> Callable:
    """`stage` itself: the caller's `jax.jit` compiles it with everything else."""
    del rank
    return stage


def with_gradient(forward: Callable, backward: Callable, x, gamma, beta, consts):
    """`forward` with the closed-form gradient `backward` (`keras_bn.backends`' contract).

    Every array goes in as an argument, none is closed over, so `jax.grad`,
    `jax.jit` and sharded inputs see a pure function; `consts` get a zero
    cotangent.
    """

    @jax.custom_vjp
    def normalize(x, gamma, beta, consts):
        return forward(x, gamma, beta, consts)

    def normalize_forward(x, gamma, beta, consts):
        return forward(x, gamma, beta, consts), (x, gamma, beta, consts)

    def normalize_backward(residuals, dy):
        x, gamma, beta, consts = residuals
        dx, d_gamma, d_beta = backward(dy, x, gamma, beta, consts)
        return dx, d_gamma, d_beta, jax.tree.map(jnp.zeros_like, consts)

    normalize.defvjp(normalize_forward, normalize_backward)
    return normalize(x, gamma, beta, consts)


def cross_replica_sum(tensors: list) -> list:
    """The tensors unchanged: a jitted program's sums already span every device."""
    return list(tensors)


def combine_replicas(count, shift, offset, m2):
    """The moments unchanged: under `keras.distribution` they are already global."""
    return count, shift, offset, m2
