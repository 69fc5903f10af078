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

    python -m keras_bn.bench.fold --models MobileNetV2 ResNet50 --batches 1 32
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf

from keras_bn.bench.timing import format_table, interleaved_median_ms
from keras_bn.folding import fold_batchnorm

MODELS = {
    "MobileNetV2": keras.applications.MobileNetV2,
    "ResNet50": keras.applications.ResNet50,
}
MODES = {"graph": False, "xla": True}
VERSIONS = ("unfolded", "folded", "bn-free")


def build(name: str, size: int, seed: int = 0) -> keras.Model:
    """The network with `weights=None` and random, non-trivial BN statistics."""
    model = MODELS[name](weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = tuple(layer.moving_mean.shape)
            layer.moving_mean.assign(rng.normal(0.0, 0.1, size=shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=shape))
            layer.beta.assign(rng.normal(0.0, 0.1, size=shape))
    return model


def without_batchnorm(model: keras.Model) -> keras.Model:
    """The same graph with every BN an `Identity`: what folding can reach."""

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.Identity):
            return layer(args[0])  # BN calls carry `training`/`mask`
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=clone, call_function=call)


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
                steps = {}
                for version, network in versions.items():
                    run = tf.function(
                        lambda x, m=network: m(x, training=False),
                        jit_compile=MODES[mode],
                    )
                    steps[version] = lambda r=run, x=x: r(x)
                ms = interleaved_median_ms(steps, repeats=repeats, warmup=2)
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        "mode": mode,
                        **{f"{v} ms": ms[v] for v in VERSIONS},
                        "folded/unfolded": ms["folded"] / ms["unfolded"],
                        "folded/bn-free": ms["folded"] / ms["bn-free"],
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keras-bn bench fold",
        description=__doc__.split("\n\n")[0],
        epilog="example: python -m keras_bn.bench.fold --batches 1 32 --repeats 10",
    )
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS)
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size < 32 or min(args.batches) < 1:
        parser.error(
            "--repeats and --batches must be positive and --size at least 32. "
            f"Received: repeats={args.repeats}, batches={args.batches}, size={args.size}"
        )
    fold_row = fold_seconds(args.size)
    rows = latency_rows(args.models, args.batches, args.modes, args.size, args.repeats)
    if args.json:
        print(json.dumps({"fold": fold_row, "latency": rows}, indent=1))
        return 0
    print(format_table([fold_row], list(fold_row)))
    print()
    columns = ["model", "batch", "mode", *(f"{v} ms" for v in VERSIONS)]
    print(format_table(rows, [*columns, "folded/unfolded", "folded/bn-free"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
