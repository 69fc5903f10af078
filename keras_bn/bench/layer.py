"""One BN training step, side by side: keras_bn, Keras' layer, TF's fused kernel.

A step is the forward pass in training mode, the backward pass to the input,
γ and β, and the moving-statistics update. Each implementation runs eagerly,
as a `tf.function` (what `model.fit` compiles on a CPU by default) and under
XLA (`jit_compile=True`); the three are timed interleaved in the same run
(medians), so the ratios hold on a shared machine even when the absolute
times do not. The fused kernel is `tf.compat.v1.nn.fused_batch_norm` with its
in-kernel moving-average update, what tf-keras used by default.

One row per shape × dtype × mode; the issue's targets read off two columns:
`keras_bn / keras` (same mode) and `keras_bn / fused graph` (the fused kernel
in a `tf.function`, the fastest thing tf-keras users had).

Example:

    keras-bn bench layer --repeats 10
    keras-bn bench layer --shapes 64,64,28,28:1 --dtypes float16 --modes xla
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_bn.bench.arguments import LAYER_MODES as MODES
from keras_bn.bench.layer_cases import EPSILON, MOMENTUM
from keras_bn.layers import BatchNormalization
from keras_bn.timing import interleaved_median_ms

IMPLEMENTATIONS = ("keras_bn", "keras", "fused")
COLUMNS = [
    "shape",
    "axis",
    "dtype",
    "mode",
    "keras_bn ms",
    "keras ms",
    "fused ms",
    "keras_bn / keras",
    "keras_bn / fused graph",
]


def _layer_step(layer: keras.layers.Layer) -> Callable:
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(upstream * tf.cast(y, upstream.dtype))
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    return step


def _fused_step(shape: tuple[int, ...], axis: int) -> Callable:
    """fused_batch_norm with its own gradient kernel and in-kernel EMA."""
    channels = shape[axis]
    gamma = tf.Variable(tf.ones([channels]))
    beta = tf.Variable(tf.zeros([channels]))
    moving_mean = tf.Variable(tf.zeros([channels]))
    moving_variance = tf.Variable(tf.ones([channels]))
    channels_first = axis % len(shape) == 1 and len(shape) == 4

    def step(x, upstream):
        as_4d = tf.reshape(x, [-1, 1, 1, channels]) if x.shape.rank == 2 else x
        up_4d = tf.reshape(upstream, tf.shape(as_4d))
        with tf.GradientTape() as tape:
            tape.watch(as_4d)
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                as_4d,
                gamma,
                beta,
                mean=moving_mean,
                variance=moving_variance,
                epsilon=EPSILON,
                is_training=True,
                exponential_avg_factor=1.0 - MOMENTUM,
                data_format="NCHW" if channels_first else "NHWC",
            )
            loss = tf.reduce_sum(up_4d * tf.cast(y, up_4d.dtype))
        moving_mean.assign(mean)
        moving_variance.assign(variance)
        return tape.gradient(loss, [as_4d, gamma, beta])

    return step


def build_step(
    implementation: str, shape: tuple[int, ...], axis: int, dtype: str, mode: str
) -> Callable:
    """One training step of `implementation`, compiled as `mode` says."""
    if implementation == "fused":
        step = _fused_step(shape, axis)
    else:
        cls = (
            BatchNormalization
            if implementation == "keras_bn"
            else keras.layers.BatchNormalization
        )
        policy = "mixed_float16" if dtype == "float16" else "float32"
        layer = cls(axis=axis, momentum=MOMENTUM, epsilon=EPSILON, dtype=policy)
        layer.build(shape)
        step = _layer_step(layer)
    if MODES[mode] is not None:
        step = tf.function(step, jit_compile=MODES[mode])
    return step


def time_case(
    shape: tuple[int, ...], axis: int, dtype: str, modes: list[str], repeats: int
) -> dict[tuple[str, str], float]:
    """Median ms per (implementation, mode), every step timed interleaved."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape).astype(dtype))
    upstream = tf.constant(rng.normal(size=shape).astype(dtype))
    wanted = set(modes) | {"graph"}  # the fused graph step is every row's reference
    steps = {
        (implementation, mode): build_step(implementation, shape, axis, dtype, mode)
        for implementation in IMPLEMENTATIONS
        for mode in MODES
        if mode in wanted
    }
    return interleaved_median_ms(
        {key: (lambda s=step: s(x, upstream)) for key, step in steps.items()},
        repeats=repeats,
    )


def run(args: argparse.Namespace) -> list[dict]:
    """One row per shape × dtype × mode, with the issue's two ratios."""
    rows = []
    for shape, axis in args.shapes:
        for dtype in args.dtypes:
            times = time_case(shape, axis, dtype, args.modes, args.repeats)
            fused_graph = times["fused", "graph"]
            for mode in args.modes:
                ours, keras_ms = times["keras_bn", mode], times["keras", mode]
                rows.append(
                    {
                        "shape": "x".join(map(str, shape)),
                        "axis": axis,
                        "dtype": dtype,
                        "mode": mode,
                        "keras_bn ms": ours,
                        "keras ms": keras_ms,
                        "fused ms": times["fused", mode],
                        "keras_bn / keras": ours / keras_ms,
                        "keras_bn / fused graph": ours / fused_graph,
                    }
                )
    return rows
