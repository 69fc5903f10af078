"""The training step of a small ResNet-style CNN, with four kinds of BN.

The same network (32×32×3 inputs, batch 64, SGD, sparse cross-entropy) is
built four times: with Keras' `BatchNormalization`, with keras_bn's, with a
minimal layer on TF's fused kernel (`tf.compat.v1.nn.fused_batch_norm` and
its gradient kernel, what tf-keras used by default), and with every BN
removed. Each step goes through Keras' compiled train function
(`train_on_batch`), without XLA (Keras' default on a CPU) and with
`jit_compile=True`. The four models are timed interleaved (medians), and the
"BN cost" of a variant is its step minus the BN-free step of the same mode:
what the BN layers add to training.

Example:

    keras-bn bench train --repeats 20
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_bn.bench.arguments import TRAIN_MODES as MODES
from keras_bn.bench.layer_cases import EPSILON, MOMENTUM
from keras_bn.bench.resnet import build_resnet
from keras_bn.layers import BatchNormalization
from keras_bn.timing import interleaved_median_ms

VARIANTS = ("keras", "keras_bn", "fused", "none")
COLUMNS = [
    "mode",
    "variant",
    "step ms",
    "BN cost ms",
    "BN cost / fused BN cost",
]


class FusedBatchNorm(keras.layers.Layer):
    """The least a BN layer on TF's fused kernel needs: NHWC inputs only.

    The moving statistics are updated inside the kernel
    (`exponential_avg_factor`), as tf-keras' fused path did.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros")
        self.moving_mean = self.add_weight(
            shape=(channels,), initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            shape=(channels,), initializer="ones", trainable=False
        )

    def call(self, inputs, training=None):
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            self.gamma,
            self.beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=EPSILON,
            is_training=bool(training),
            exponential_avg_factor=1.0 - MOMENTUM,
        )
        if training:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return y


def _norm_factory(variant: str) -> Callable[[], keras.layers.Layer]:
    if variant == "keras":
        return lambda: keras.layers.BatchNormalization(
            momentum=MOMENTUM, epsilon=EPSILON
        )
    if variant == "keras_bn":
        return lambda: BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON)
    if variant == "fused":
        return FusedBatchNorm
    return keras.layers.Identity


def build_model(variant: str, width: int = 16, seed: int = 0) -> keras.Model:
    """The benchmark's ResNet (`keras_bn.bench.resnet`) with `variant`'s BN."""
    return build_resnet(_norm_factory(variant), f"resnet_{variant}", width, seed)


def time_steps(
    batch: int, repeats: int, modes: list[str]
) -> dict[tuple[str, str], float]:
    """Median ms per (mode, variant) of `train_on_batch`, all interleaved."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(batch,))
    steps = {}
    for mode in modes:
        for variant in VARIANTS:
            model = build_model(variant)
            model.compile(
                keras.optimizers.SGD(0.01),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=MODES[mode],
            )
            steps[mode, variant] = lambda m=model: m.train_on_batch(x, y)
    return interleaved_median_ms(steps, repeats=repeats)


def run(args: argparse.Namespace) -> list[dict]:
    """One row per mode × variant: the step and what BN adds to it."""
    times = time_steps(args.batch, args.repeats, args.modes)
    rows = []
    for mode in args.modes:
        bn_free = times[mode, "none"]
        fused_cost = times[mode, "fused"] - bn_free
        for variant in VARIANTS:
            cost = times[mode, variant] - bn_free
            rows.append(
                {
                    "mode": mode,
                    "variant": variant,
                    "step ms": times[mode, variant],
                    "BN cost ms": None if variant == "none" else cost,
                    "BN cost / fused BN cost": None
                    if variant == "none"
                    else cost / fused_cost,
                }
            )
    return rows
