"""One BN training step, side by side: keras_bn, Keras' layer, TF's fused kernel.

A step is the forward pass in training mode, the backward pass to the input,
γ and β, and the moving-statistics update. Each implementation runs eagerly,
as a `tf.function`, and under XLA (`jit_compile=True`); times are medians and
every ratio is against the fused kernel run eagerly, measured in the same run.

Example:

    keras-bn bench layer --repeats 10
"""

from __future__ import annotations

import argparse
import json

import keras
import numpy as np
import tensorflow as tf

from keras_bn.bench.timing import format_table, median_ms
from keras_bn.layers import BatchNormalization

DEFAULT_SHAPES = ["64,28,28,64", "256,14,14,256", "1024,512"]
MODES = {"eager": None, "graph": False, "xla": True}
MOMENTUM = 0.99


def _layer_step(layer):
    def step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(upstream * y)
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    return step


def _fused_step(channels):
    """tf.nn.fused_batch_norm with its own gradient kernel and in-kernel EMA."""
    gamma = tf.Variable(tf.ones([channels]))
    beta = tf.Variable(tf.zeros([channels]))
    moving_mean = tf.Variable(tf.zeros([channels]))
    moving_variance = tf.Variable(tf.ones([channels]))

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
                epsilon=1e-3,
                is_training=True,
                exponential_avg_factor=1.0 - MOMENTUM,
            )
            loss = tf.reduce_sum(up_4d * y)
        moving_mean.assign(mean)
        moving_variance.assign(variance)
        return tape.gradient(loss, [as_4d, gamma, beta])

    return step


def _build(kind: str, shape: tuple[int, ...]):
    if kind == "fused":
        return _fused_step(shape[-1])
    cls = BatchNormalization if kind == "keras_bn" else keras.layers.BatchNormalization
    layer = cls(momentum=MOMENTUM)
    layer.build(shape)
    return _layer_step(layer)


def run(shapes: list[tuple[int, ...]], repeats: int, modes: list[str]) -> list[dict]:
    """Times every implementation × mode × shape; returns one row each."""
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        x = tf.constant(rng.normal(size=shape).astype("float32"))
        upstream = tf.constant(rng.normal(size=shape).astype("float32"))
        times = {}
        for kind in ("keras_bn", "keras", "fused"):
            for mode in modes:
                step = _build(kind, shape)
                if MODES[mode] is not None:
                    step = tf.function(step, jit_compile=MODES[mode])
                times[kind, mode] = median_ms(
                    lambda s=step, a=x, u=upstream: s(a, u), repeats=repeats
                )
        reference = times.get(("fused", "eager")) or next(iter(times.values()))
        for (kind, mode), ms in times.items():
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "implementation": kind,
                    "mode": mode,
                    "ms": ms,
                    "vs fused eager": ms / reference,
                    "vs keras same mode": ms / times["keras", mode],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keras-bn bench layer",
        description=__doc__.split("\n\n")[0],
        epilog="example: keras-bn bench layer --shapes 64,28,28,64 1024,512 --repeats 10",
    )
    parser.add_argument(
        "--shapes", nargs="+", default=DEFAULT_SHAPES, help="comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    shapes = [tuple(int(n) for n in s.split(",")) for s in args.shapes]
    rows = run(shapes, args.repeats, args.modes)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        columns = [
            "shape",
            "implementation",
            "mode",
            "ms",
            "vs fused eager",
            "vs keras same mode",
        ]
        print(format_table(rows, columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
