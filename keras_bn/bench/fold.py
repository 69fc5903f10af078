"""Folding Batch Normalization: how long it takes, and what inference gains.

Two measurements in one run:

- fold time: `fold_batchnorm` on ResNet50 (224x224), with and without the
  verification pass (target: under 5 s on a 2-core CPU);
- inference latency of each network in three versions: as built
  (`unfolded`), after `fold_batchnorm` (`folded`), and rebuilt with every BN
  replaced by a pass-through (`bn-free`: the limit folding can reach). Each
  runs in a `tf.function`, with and without XLA, at each batch size. The
  three versions are timed interleaved (one call of each per round) so
  machine noise hits them alike; times are medians.

Example:

    keras-bn bench fold --models MobileNetV2 ResNet50 --batches 1 32
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from keras_bn.bench.arguments import FOLD_MODES as MODES
from keras_bn.export import without_batchnorm
from keras_bn.folding import fold_batchnorm
from keras_bn.models import stand_in_application
from keras_bn.timing import interleaved_median_ms, latency_columns

VERSIONS = ("unfolded", "folded", "bn-free")
COLUMNS = [
    "model",
    "batchnorm",
    "folded",
    "fold s",
    "fold+verify s",
    "batch",
    "mode",
    *(f"{v} ms" for v in VERSIONS),
    "folded/unfolded",
    "folded/bn-free",
]


def build(name: str, size: int, seed: int = 0) -> keras.Model:
    """The network with `weights=None` and seeded stand-in BN statistics."""
    return stand_in_application(name, (size, size, 3), seed=seed)


def fold_seconds(size: int) -> dict:
    """Wall time of `fold_batchnorm` on ResNet50, with and without verification."""
    model = build("ResNet50", size)
    fold_batchnorm(model, verify=False)  # first call pays one-off tracing
    start = time.perf_counter()
    fold_batchnorm(model, verify=False)
    unverified = time.perf_counter() - start
    start = time.perf_counter()
    _, report = fold_batchnorm(model, return_report=True)
    verified = time.perf_counter() - start
    return {
        "table": "fold time",
        "model": "ResNet50",
        "batchnorm": len(report),
        "folded": len(report.folded),
        "fold s": unverified,
        "fold+verify s": verified,
    }


def latency_rows(
    names: list[str], batches: list[int], modes: list[str], size: int, repeats: int
) -> list[dict]:
    """Median latency of unfolded / folded / BN-free versions, with ratios."""
    rows = []
    for name in names:
        model = build(name, size)
        versions = {
            "unfolded": model,
            "folded": fold_batchnorm(model),
            "bn-free": without_batchnorm(model),
        }
        for batch in batches:
            x = tf.constant(
                np.random.default_rng(1).normal(size=(batch, size, size, 3)),
                dtype=tf.float32,
            )
            for mode in modes:
                ms = time_versions(versions, x, MODES[mode], repeats)
                rows.append(
                    {
                        "table": "inference latency",
                        "model": name,
                        "batch": batch,
                        "mode": mode,
                        **latency_columns(
                            {v: ms[v] for v in VERSIONS},
                            (("folded", "unfolded"), ("folded", "bn-free")),
                        ),
                    }
                )
    return rows


def time_versions(versions: dict, x, jit_compile: bool, repeats: int) -> dict:
    """Interleaved median ms of each version's `tf.function` on `x`."""
    steps = {}
    for version, network in versions.items():
        call = tf.function(
            lambda x, m=network: m(x, training=False), jit_compile=jit_compile
        )
        steps[version] = lambda c=call, x=x: c(x)
    return interleaved_median_ms(steps, repeats=repeats, warmup=2)


def run(args: argparse.Namespace) -> list[dict]:
    """The fold-time row, then one latency row per model, batch and mode."""
    fold_row = fold_seconds(args.size)
    rows = latency_rows(args.models, args.batches, args.modes, args.size, args.repeats)
    return [fold_row, *rows]
