"""Latency and size of exported files: unfolded, folded, and the BN-free limit.

Each model is exported three times to both formats: as it is (the converters
fuse what they can on their own), folded by `keras_bn.folding`, and with every
BatchNormalization replaced by a pass-through (the BN-free network: what a
perfect fold leaves, the limit). Each file runs in LiteRT's interpreter
(XNNPACK) and in onnxruntime with graph optimizations all on and all off (many
ONNX consumers do not fuse), at batch 1 and 32. The three variants of one
runtime and batch are timed interleaved, call by call, so that load drifting on
the machine affects them alike; ratios are against the BN-free file of the same
run. Files are parity-checked by the exporters before they are timed.

Example:

    keras-bn bench export --models mobilenetv2 resnet50 --repeats 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np

from keras_bn.bench.arguments import EXPORT_APPLICATIONS as APPLICATIONS
from keras_bn.bench.arguments import EXPORT_MODELS as MODELS
from keras_bn.defaults import EXPORT_FORMATS
from keras_bn.export import load_runtime, to_onnx, to_tflite, without_batchnorm
from keras_bn.models import stand_in_application
from keras_bn.stand_in_statistics import set_stand_in_statistics
from keras_bn.timing import interleaved_median_ms, latency_columns

VARIANTS = ("unfolded", "folded", "bn_free")
RUNTIMES = ("tflite", "ort_optimized", "ort_unoptimized")
COLUMNS = [
    "model",
    "runtime",
    "format",
    "batch",
    *(f"{v} ms" for v in VARIANTS),
    *(f"{v} KiB" for v in VARIANTS),
    "unfolded/bn_free",
    "folded/bn_free",
    "folded max rel err",
]


def small_cnn(size: int) -> keras.Model:
    """Conv, depthwise, pointwise and Dense, each followed by a BN."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2D(32, 1, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.BatchNormalization()(layers.Dense(10)(x))
    return keras.Model(inputs, x, name="small_cnn")


def build_model(name: str, size: int, seed: int = 0) -> keras.Model:
    """A benchmark model with seeded weights and stand-in BN statistics."""
    keras.utils.set_random_seed(seed)
    if name in APPLICATIONS:
        return stand_in_application(
            APPLICATIONS[name], (size, size, 3), seed=seed, classifier_activation=None
        )
    if name != "small_cnn":
        raise ValueError(f"Unknown model. Expected one of {MODELS}. Received: {name!r}")
    model = small_cnn(size)
    # Default statistics would let a converter drop the BN as an identity.
    set_stand_in_statistics(model, seed=seed)
    return model


def export_variants(model: keras.Model, directory: Path) -> dict:
    """`{(variant, format): ExportReport}` for the three variants."""
    sources = {
        "unfolded": (model, False),
        "folded": (model, True),
        "bn_free": (without_batchnorm(model), False),
    }
    reports = {}
    for variant, (source, fold) in sources.items():
        reports[variant, "tflite"] = to_tflite(
            source, directory / f"{variant}.tflite", fold=fold
        )
        reports[variant, "onnx"] = to_onnx(
            source, directory / f"{variant}.onnx", fold=fold
        )
    return reports


def size_rows(name: str, reports: dict) -> list[dict]:
    """File sizes of the three variants per format, with ratios."""
    rows = []
    for fmt in EXPORT_FORMATS:
        kib = {v: reports[v, fmt].file_size / 1024 for v in VARIANTS}
        rows.append(
            {
                "table": "size",
                "model": name,
                "format": fmt,
                **{f"{v} KiB": kib[v] for v in VARIANTS},
                "unfolded/bn_free": kib["unfolded"] / kib["bn_free"],
                "folded/bn_free": kib["folded"] / kib["bn_free"],
                "folded max rel err": reports["folded", fmt].parity.max_rel_error,
            }
        )
    return rows


def latency_rows(
    name: str, reports: dict, x_by_batch: dict, repeats: int, threads: int
) -> list[dict]:
    """Interleaved median latency of the three variants per runtime and batch."""
    rows = []
    for runtime in RUNTIMES:
        fmt = "tflite" if runtime == "tflite" else "onnx"
        optimize = runtime != "ort_unoptimized"
        loaded = {
            v: load_runtime(
                reports[v, fmt].path, optimize=optimize, num_threads=threads
            )
            for v in VARIANTS
        }
        for batch, x in x_by_batch.items():
            calls = {v: loaded[v].bind(x) for v in VARIANTS}
            ms = interleaved_median_ms(calls, repeats=repeats, warmup=3)
            rows.append(
                {
                    "table": "latency",
                    "model": name,
                    "runtime": runtime,
                    "batch": batch,
                    **latency_columns(
                        {v: ms[v] for v in VARIANTS},
                        (("unfolded", "bn_free"), ("folded", "bn_free")),
                    ),
                }
            )
    return rows


def measure(args: argparse.Namespace, out: Path) -> list[dict]:
    """Latency rows, then size rows, for every model."""
    latency, sizes = [], []
    rng = np.random.default_rng(0)
    for name in args.models:
        model = build_model(name, args.size)
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        reports = export_variants(model, directory)
        sizes += size_rows(name, reports)
        x_by_batch = {
            batch: rng.standard_normal((batch, *model.input_shape[1:])).astype(
                np.float32
            )
            for batch in args.batches
        }
        latency += latency_rows(name, reports, x_by_batch, args.repeats, args.threads)
    return latency + sizes


def run(args: argparse.Namespace) -> list[dict]:
    """Latency rows (`"table": "latency"`), then size rows (`"size"`)."""
    if args.out is not None:
        return measure(args, args.out)
    with tempfile.TemporaryDirectory(prefix="keras_bn_bench_") as tmp:
        return measure(args, Path(tmp))
