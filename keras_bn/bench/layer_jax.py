"""One BN training step on JAX, side by side: keras_bn, Keras' layer, Flax's nnx.BatchNorm.

`keras-bn bench layer --backend jax`. A step is the forward pass in training
mode, the backward pass to the input, γ and β, and the moving-statistics
update, compiled whole by `jax.jit` as Keras' JAX trainer and Flax's
`nnx.jit` compile it. The Keras layers run through `stateless_call` under
`jax.value_and_grad`; Flax's layer through `nnx.split`/`nnx.merge` (its
defaults otherwise, `use_fast_variance=True` included). The three are timed
interleaved in the same run (medians), so the ratios hold on a shared
machine even when the absolute times do not. The issue's goals read off the
two ratio columns: `keras_bn / keras` ≤ 0.8 and `keras_bn / flax` ≤ 1.0.

Example:

    keras-bn bench layer --backend jax --repeats 10 --dtypes float32
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np

from keras_bn.bench.layer_cases import EPSILON, MOMENTUM
from keras_bn.layers import BatchNormalization
from keras_bn.timing import interleaved_median_ms

IMPLEMENTATIONS = ("keras_bn", "keras", "flax")
COLUMNS = [
    "shape",
    "axis",
    "dtype",
    "keras_bn ms",
    "keras ms",
    "flax ms",
    "keras_bn / keras",
    "keras_bn / flax",
]


def _keras_step(cls, shape, axis: int, dtype: str) -> Callable:
    policy = "mixed_float16" if dtype == "float16" else "float32"
    layer = cls(axis=axis, momentum=MOMENTUM, epsilon=EPSILON, dtype=policy)
    layer.build(shape)
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, frozen, x, upstream):
        y, frozen = layer.stateless_call(trainable, frozen, x, training=True)
        return jnp.sum(upstream * y.astype(upstream.dtype)), frozen

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 2), has_aux=True))
    return lambda x, upstream: grad(trainable, frozen, x, upstream)


def _flax_step(shape, axis: int, dtype: str) -> Callable:
    from flax import nnx

    layer = nnx.BatchNorm(
        shape[axis],
        axis=axis,
        momentum=MOMENTUM,
        epsilon=EPSILON,
        dtype=jnp.float16 if dtype == "float16" else None,
        rngs=nnx.Rngs(0),
    )
    graphdef, state = nnx.split(layer)

    def step(state, x, upstream):
        model = nnx.merge(graphdef, state)

        def loss(model, x):
            return jnp.sum(upstream * model(x).astype(upstream.dtype))

        value, grads = nnx.value_and_grad(loss, argnums=(0, 1))(model, x)
        return value, grads, nnx.state(model, nnx.BatchStat)

    compiled = jax.jit(step)
    return lambda x, upstream: compiled(state, x, upstream)


def check_jax_backend() -> None:
    """A `ValueError` unless Keras runs on JAX (it reads KERAS_BACKEND at import)."""
    if keras.backend.backend() != "jax":
        raise ValueError(
            "This benchmark times Keras' JAX backend, but Keras was imported with "
            f"the {keras.backend.backend()!r} backend; run it in a fresh process "
            "(`keras-bn bench ... --backend jax`)."
        )


def build_step(implementation: str, shape, axis: int, dtype: str) -> Callable:
    """One jitted training step of `implementation`: (loss, stats), (dparams, dx)."""
    if implementation == "flax":
        return _flax_step(shape, axis, dtype)
    cls = (
        BatchNormalization
        if implementation == "keras_bn"
        else keras.layers.BatchNormalization
    )
    return _keras_step(cls, shape, axis, dtype)


def time_case(shape, axis: int, dtype: str, repeats: int) -> dict[str, float]:
    """Median ms per implementation, every step timed interleaved."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), dtype)
    upstream = jnp.asarray(rng.normal(size=shape), dtype)
    steps = {name: build_step(name, shape, axis, dtype) for name in IMPLEMENTATIONS}
    return interleaved_median_ms(
        {
            name: (lambda s=step: jax.block_until_ready(s(x, upstream)))
            for name, step in steps.items()
        },
        repeats=repeats,
    )


def run(args: argparse.Namespace) -> list[dict]:
    """One row per shape × dtype, with the issue's two ratios."""
    check_jax_backend()
    rows = []
    for shape, axis in args.shapes:
        for dtype in args.dtypes:
            times = time_case(shape, axis, dtype, args.repeats)
            ours = times["keras_bn"]
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "axis": axis,
                    "dtype": dtype,
                    "keras_bn ms": ours,
                    "keras ms": times["keras"],
                    "flax ms": times["flax"],
                    "keras_bn / keras": ours / times["keras"],
                    "keras_bn / flax": ours / times["flax"],
                }
            )
    return rows
