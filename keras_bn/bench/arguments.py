"""Every benchmark's flags, TensorFlow-free, so that `keras-bn bench NAME --help`
and its usage errors answer at once.

The benchmark modules import TensorFlow when they are imported; their flags,
defaults and choices live here instead, and each module takes its
`add_arguments` and the values it runs on (`MODES`, `MODELS`, shapes) from
this module. `ADD_ARGUMENTS[NAME]` is the benchmark's `add_arguments`: the
command line parses with it before it imports the benchmark.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from keras_bn.argument_types import non_negative_float, positive_float, positive_int

__all__ = [
    "ADD_ARGUMENTS",
    "BENCHMARK_BACKENDS",
    "EXPORT_APPLICATIONS",
    "EXPORT_MODELS",
    "FOLD_MODELS",
    "FOLD_MODES",
    "LAYER_DEFAULT_DTYPES",
    "LAYER_DEFAULT_SHAPES",
    "LAYER_MODES",
    "SYNC_DEFAULT_SHAPES",
    "TRAIN_MODES",
    "image_size",
    "parse_shape",
    "sync_shape",
]

# `bench layer`: "shape:axis", the axis defaulting to -1; modes map to
# `tf.function(jit_compile=...)`, `None` running eagerly.
LAYER_DEFAULT_SHAPES = ["64,28,28,64", "256,14,14,256", "1024,512", "64,64,28,28:1"]
LAYER_DEFAULT_DTYPES = ["float32", "float16"]
LAYER_MODES = {"eager": None, "graph": False, "xla": True}
# `bench layer` and `bench train`: the Keras backends they run on.
BENCHMARK_BACKENDS = ("tensorflow", "jax")
# `bench train` and `bench fold`: `jit_compile` of each mode.
TRAIN_MODES = {"graph": False, "xla": True}
FOLD_MODES = {"graph": False, "xla": True}
# `bench fold`: keras.applications names.
FOLD_MODELS = ("MobileNetV2", "ResNet50")
# `bench export`: a flag's name → the keras.applications name.
EXPORT_APPLICATIONS = {
    "mobilenetv2": "MobileNetV2",
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
}
EXPORT_MODELS = ("small_cnn", *EXPORT_APPLICATIONS)
# `bench sync`.
SYNC_DEFAULT_SHAPES = [(64, 28, 28, 64), (1024, 512)]


def parse_shape(text: str) -> tuple[tuple[int, ...], int]:
    """`"64,64,28,28:1"` → `((64, 64, 28, 28), 1)`; the axis defaults to -1."""
    dims, _, axis = text.partition(":")
    try:
        return tuple(int(n) for n in dims.split(",")), int(axis or -1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "a shape is comma-separated ints with an optional ':axis'. "
            f"Received: {text!r}"
        ) from None


def image_size(text: str) -> int:
    """An argparse type: an input size of at least 32 (the applications' minimum)."""
    value = positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"must be at least 32. Received: {text!r}")
    return value


def sync_shape(text: str) -> tuple[int, ...]:
    """An argparse type: a comma-separated shape with an even batch ≥ 2."""
    try:
        dims = tuple(int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers. Received: {text!r}"
        ) from None
    if len(dims) < 2 or min(dims) < 1 or dims[0] % 2:
        raise argparse.ArgumentTypeError(
            "must have a batch and at least one more dimension, all positive, "
            f"the batch even (split over two replicas). Received: {text!r}"
        )
    return dims


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """`--backend`: the Keras backend a benchmark runs on (`NAME` or `NAME_jax`)."""
    parser.add_argument(
        "--backend",
        choices=BENCHMARK_BACKENDS,
        default="tensorflow",
        help="Keras backend (jax: under jax.jit, --modes ignored; docs/jax.md)",
    )


def add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench layer`'s flags."""
    add_backend_argument(parser)
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        default=[parse_shape(s) for s in LAYER_DEFAULT_SHAPES],
        help="comma-separated dims, optionally ':axis' (default -1)",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=LAYER_DEFAULT_DTYPES,
        default=LAYER_DEFAULT_DTYPES,
    )
    parser.add_argument(
        "--modes", nargs="+", choices=list(LAYER_MODES), default=list(LAYER_MODES)
    )
    parser.add_argument("--repeats", type=positive_int, default=10)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench train`'s flags."""
    add_backend_argument(parser)
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument(
        "--modes", nargs="+", choices=list(TRAIN_MODES), default=list(TRAIN_MODES)
    )


def add_fold_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench fold`'s flags."""
    parser.add_argument(
        "--models", nargs="+", choices=list(FOLD_MODELS), default=list(FOLD_MODELS)
    )
    parser.add_argument("--batches", nargs="+", type=positive_int, default=[1, 32])
    parser.add_argument(
        "--modes", nargs="+", choices=list(FOLD_MODES), default=list(FOLD_MODES)
    )
    parser.add_argument(
        "--size", type=image_size, default=224, help="input height and width"
    )
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed rounds")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench export`'s flags."""
    parser.add_argument(
        "--models",
        nargs="+",
        choices=EXPORT_MODELS,
        default=["mobilenetv2", "resnet50"],
    )
    parser.add_argument(
        "--size", type=positive_int, default=96, help="input height/width"
    )
    parser.add_argument("--batches", nargs="+", type=positive_int, default=[1, 32])
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="runtime threads (1: least noise)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the files here (default: temp)",
    )


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench sync`'s flags."""
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=sync_shape,
        default=SYNC_DEFAULT_SHAPES,
        help="comma-separated, e.g. 64,28,28,64",
    )
    parser.add_argument("--repeats", type=positive_int, default=10)


def add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench memory`'s flags."""
    parser.add_argument(
        "--sizes", nargs="+", type=image_size, default=[96, 224], help="input sizes"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=8, help="the reference's batch"
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="measurements per size; the largest is kept",
    )


#: `keras-bn bench qat`'s flags: (flag, type, default, help).
QAT_FLAGS = (
    ("--epochs", positive_int, 15, "float training epochs"),
    ("--learning-rate", positive_float, 1e-2, "float training's Adam rate"),
    ("--epsilon", non_negative_float, 1e-5, "the BN layers' epsilon"),
    ("--seed", int, 0, "seed of the float run"),
    ("--prune-fraction", non_negative_float, 0.0, "share of expansion channels pruned"),
    ("--qat-epochs", positive_int, 10, "QAT fine-tuning epochs"),
    ("--freeze-bn-after", positive_int, 3, "epochs before BN freezes (≤ --qat-epochs)"),
)


def add_qat_arguments(parser: argparse.ArgumentParser) -> None:
    """`keras-bn bench qat`'s flags: the study's settings (`QAT_FLAGS`)."""
    for flag, kind, default, text in QAT_FLAGS:
        parser.add_argument(
            flag, type=kind, default=default, help=f"{text} (default: %(default)s)"
        )


ADD_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "layer": add_layer_arguments,
    "train": add_train_arguments,
    "fold": add_fold_arguments,
    "export": add_export_arguments,
    "sync": add_sync_arguments,
    "memory": add_memory_arguments,
    "qat": add_qat_arguments,
}
