"""Synchronized BN on two replicas: keras_bn against Keras' `synchronized=True`.

The CPU is split into two logical devices and a `MirroredStrategy` runs one
training step (forward, backward to x, γ, β, moving statistics) per replica.
Keras all-reduces raw sums and lets autodiff differentiate through the
all-reduce; keras_bn all-reduces exact parallel moments forward and two
per-channel vectors backward. Times are medians; the ratio is ours / Keras'.

Logical devices must be configured before TensorFlow starts its runtime, so
run this in a fresh process (`keras-bn bench sync` does).

Example:

    keras-bn bench sync --repeats 10
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

from keras_bn.timing import median_ms

COLUMNS = ["shape", "implementation", "ms", "vs keras"]


def _two_logical_cpus() -> tf.distribute.Strategy:
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError as error:
        if len(tf.config.list_logical_devices("CPU")) < 2:
            raise RuntimeError(
                "The sync benchmark needs two logical CPU devices, which must be "
                "configured before TensorFlow initializes; run it in a fresh process."
            ) from error
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _step_fn(strategy, layer):
    def replica_step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(upstream * layer(x, training=True))
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    @tf.function
    def step(x, upstream):
        return strategy.run(replica_step, args=(x, upstream))

    return step


def time_shapes(shapes: list[tuple[int, ...]], repeats: int) -> list[dict]:
    """Times both implementations per shape; one row each."""
    import keras

    from keras_bn.layers import BatchNormalization

    strategy = _two_logical_cpus()
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        half = shape[0] // 2

        def split(array, half=half):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: array[
                    ctx.replica_id_in_sync_group * half : (
                        ctx.replica_id_in_sync_group + 1
                    )
                    * half
                ]
            )

        x = split(tf.constant(rng.normal(size=shape).astype("float32")))
        upstream = split(tf.constant(rng.normal(size=shape).astype("float32")))
        times = {}
        for name, cls in (
            ("keras_bn", BatchNormalization),
            ("keras", keras.layers.BatchNormalization),
        ):
            with strategy.scope():
                layer = cls(synchronized=True)
                layer.build(shape)
            step = _step_fn(strategy, layer)
            times[name] = median_ms(
                lambda s=step, a=x, u=upstream: s(a, u), repeats=repeats
            )
        for name, ms in times.items():
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "implementation": name,
                    "ms": ms,
                    "vs keras": ms / times["keras"],
                }
            )
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    """One row per shape and implementation."""
    return time_shapes(args.shapes, args.repeats)
