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
import json
import tempfile
from pathlib import Path

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_bn.bench.timing import format_table, interleaved_median_ms
from keras_bn.export import to_onnx, to_tflite, without_batchnorm
from keras_bn.export.parity import onnx_session

VARIANTS = ("unfolded", "folded", "bn_free")
RUNTIMES = ("tflite", "ort_optimized", "ort_unoptimized")
APPLICATIONS = {
    "mobilenetv2": "MobileNetV2",
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
}
MODELS = ("small_cnn", *APPLICATIONS)


def _randomize_batchnorm(model: keras.Model, seed: int) -> None:
    # Default statistics (mean 0, variance 1, γ 1, β 0) would let a converter
    # drop the BN as an identity; trained-looking statistics keep it honest.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, n),
                    rng.normal(0.0, 0.1, n),
                    rng.normal(0.0, 0.1, n),
                    rng.uniform(0.5, 2.0, n),
                ]
            )


def build_model(name: str, size: int, seed: int = 0) -> keras.Model:
    """A benchmark model with seeded weights and non-default BN statistics."""
    keras.utils.set_random_seed(seed)
    if name in APPLICATIONS:
        model = getattr(keras.applications, APPLICATIONS[name])(
            weights=None, input_shape=(size, size, 3), classifier_activation=None
        )
    elif name == "small_cnn":
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
        model = keras.Model(inputs, x, name="small_cnn")
    else:
        raise ValueError(f"Unknown model. Expected one of {MODELS}. Received: {name!r}")
    _randomize_batchnorm(model, seed)
    return model


def export_variants(model: keras.Model, directory: Path) -> dict:
    """`{(variant, format): ExportReport}` for the three variants."""
    bn_free = without_batchnorm(model)
    sources = {"unfolded": (model, False), "folded": (model, True)}
    sources["bn_free"] = (bn_free, False)
    reports = {}
    for variant, (source, fold) in sources.items():
        reports[variant, "tflite"] = to_tflite(
            source, directory / f"{variant}.tflite", fold=fold
        )
        reports[variant, "onnx"] = to_onnx(
            source, directory / f"{variant}.onnx", fold=fold
        )
    return reports


def _runner(runtime: str, path: str, x: np.ndarray, threads: int):
    if runtime == "tflite":
        interpreter = Interpreter(model_path=path, num_threads=threads)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        return interpreter.invoke
    session = onnx_session(
        path, optimize=runtime == "ort_optimized", num_threads=threads
    )
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def run(
    models: list[str],
    size: int,
    batches: list[int],
    repeats: int,
    threads: int,
    out: Path,
) -> tuple[list[dict], list[dict]]:
    """Latency rows and size rows for every model."""
    latency, sizes = [], []
    rng = np.random.default_rng(0)
    for name in models:
        model = build_model(name, size)
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        reports = export_variants(model, directory)
        for fmt in ("tflite", "onnx"):
            kib = {v: reports[v, fmt].file_size / 1024 for v in VARIANTS}
            sizes.append(
                {
                    "model": name,
                    "format": fmt,
                    **{f"{v} KiB": kib[v] for v in VARIANTS},
                    "unfolded/bn_free": kib["unfolded"] / kib["bn_free"],
                    "folded/bn_free": kib["folded"] / kib["bn_free"],
                    "folded max rel err": reports["folded", fmt].parity.max_rel_error,
                }
            )
        for runtime in RUNTIMES:
            fmt = "tflite" if runtime == "tflite" else "onnx"
            for batch in batches:
                x = rng.standard_normal((batch, *model.input_shape[1:]))
                x = x.astype(np.float32)
                runs = {
                    v: _runner(runtime, reports[v, fmt].path, x, threads)
                    for v in VARIANTS
                }
                ms = interleaved_median_ms(runs, repeats=repeats, warmup=3)
                latency.append(
                    {
                        "model": name,
                        "runtime": runtime,
                        "batch": batch,
                        **{f"{v} ms": ms[v] for v in VARIANTS},
                        "unfolded/bn_free": ms["unfolded"] / ms["bn_free"],
                        "folded/bn_free": ms["folded"] / ms["bn_free"],
                    }
                )
    return latency, sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keras-bn bench export",
        description=__doc__.split("\n\n")[0],
        epilog="example: keras-bn bench export --models mobilenetv2 --repeats 20",
    )
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=["mobilenetv2", "resnet50"]
    )
    parser.add_argument("--size", type=int, default=96, help="input height/width")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=1, help="runtime threads (1: least noise)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the files here (default: temp)"
    )
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    args = parser.parse_args(argv)
    for name, value in (("size", args.size), ("repeats", args.repeats)):
        if value < 1:
            parser.error(f"--{name} must be at least 1. Received: {value}")
    if args.threads < 1 or min(args.batches) < 1:
        parser.error(
            f"--threads and --batches must be at least 1. Received: "
            f"threads={args.threads}, batches={args.batches}"
        )
    with tempfile.TemporaryDirectory(prefix="keras_bn_bench_") as tmp:
        out = args.out if args.out is not None else Path(tmp)
        latency, sizes = run(
            args.models, args.size, args.batches, args.repeats, args.threads, out
        )
    if args.json:
        print(json.dumps({"latency": latency, "size": sizes}, indent=1))
        return 0
    print(format_table(latency, list(latency[0])))
    print()
    print(format_table(sizes, list(sizes[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
