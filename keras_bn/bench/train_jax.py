"""The small ResNet's training step on JAX, with Keras' BN, keras_bn's and none.

`keras-bn bench train --backend jax`. The network of `keras-bn bench train`
(`keras_bn.bench.resnet`: 32×32×3 inputs, SGD, sparse cross-entropy) is
built three times: with Keras' `BatchNormalization`, with keras_bn's, and
with every BN removed. Each step goes through Keras' JAX train function
(`train_on_batch`, compiled by `jax.jit`, Keras' default on JAX). The models
are timed interleaved (medians); the "BN cost" of a variant is its step minus
the BN-free step: what the BN layers add to training.

Example:

    keras-bn bench train --backend jax --repeats 20
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

from keras_bn.bench.layer_cases import EPSILON, MOMENTUM
from keras_bn.bench.layer_jax import check_jax_backend
from keras_bn.bench.resnet import CLASSES, INPUT_SHAPE, build_resnet
from keras_bn.layers import BatchNormalization
from keras_bn.timing import interleaved_median_ms

VARIANTS = {
    "keras": lambda: keras.layers.BatchNormalization(
        momentum=MOMENTUM, epsilon=EPSILON
    ),
    "keras_bn": lambda: BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON),
    "none": keras.layers.Identity,
}
COLUMNS = ["variant", "step ms", "BN cost ms", "BN cost / keras BN cost"]


def time_steps(batch: int, repeats: int) -> dict[str, float]:
    """Median ms per variant of `train_on_batch`, all interleaved."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=(batch,))
    steps = {}
    for variant, norm in VARIANTS.items():
        model = build_resnet(norm, f"resnet_{variant}")
        model.compile(
            keras.optimizers.SGD(0.01),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        steps[variant] = lambda m=model: m.train_on_batch(x, y)
    return interleaved_median_ms(steps, repeats=repeats)


def run(args: argparse.Namespace) -> list[dict]:
    """One row per variant: the step and what BN adds to it."""
    check_jax_backend()
    times = time_steps(args.batch, args.repeats)
    keras_cost = times["keras"] - times["none"]
    rows = []
    for variant in VARIANTS:
        cost = None if variant == "none" else times[variant] - times["none"]
        rows.append(
            {
                "variant": variant,
                "step ms": times[variant],
                "BN cost ms": cost,
                "BN cost / keras BN cost": None if cost is None else cost / keras_cost,
            }
        )
    return rows
