"""The main job end to end: train, fold, export, and measure every artefact.

`run_demo` is what `keras-bn demo` runs. It trains a small CNN whose
normalisation is `keras_bn.BatchNormalization` under XLA (`jit_compile=True`)
on scikit-learn's bundled 8×8 digits (no download) or on a user's `.npz`,
folds it, exports TFLite (float32 and full-integer int8) and ONNX files, and
then evaluates the Keras model, the folded model and each file *in its own
runtime* on the held-out set. The result is one row per artefact: file size,
accuracy, largest output difference from the Keras model, how many
Batch Normalization operations survive, and latency at batch 1.

"BN ops left" in a file counts `BatchNormalization` / `FusedBatchNorm*`
operators plus the elementwise `Mul`/`Add`/`Sub` operators beyond those of the
same network exported with every BN replaced by a pass-through
(`keras_bn.export.without_batchnorm`): a BN that the converter only half
folded leaves exactly such a scale-and-shift behind. For a Keras model it
counts BatchNormalization layers and `ChannelAffine` layers (the inference form
of a BN that could not be folded).

Nothing here prints; progress is reported through `on_stage` and Keras
callbacks, and the command line draws it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import keras_bn
from keras_bn.bench.timing import median_ms
from keras_bn.folding import ChannelAffine, FoldReport, fold_batchnorm

__all__ = [
    "DEMO_STAGES",
    "Dataset",
    "DemoResult",
    "DemoRow",
    "bn_layers_left",
    "bn_ops_left",
    "build_model",
    "load_dataset",
    "run_demo",
]

DEFAULT_EPOCHS = 8
DEFAULT_OUT = Path("export") / "out"
BATCH_SIZE = 32
# Medians over this many batch-1 calls (after two warm-up calls): enough for a
# stable median at well under a second per artefact.
LATENCY_REPEATS = 50
SEED = 0

DEMO_STAGES = (
    "load data",
    "train",
    "fold",
    "export TFLite float32",
    "export TFLite int8",
    "export ONNX",
    "export BN-free reference",
    "evaluate",
)

BATCHNORM_OP_TYPES = (
    "BatchNormalization",
    "FusedBatchNorm",
    "FusedBatchNormV2",
    "FusedBatchNormV3",
)
ELEMENTWISE_OP_TYPES = ("MUL", "ADD", "SUB", "Mul", "Add", "Sub")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, C) float32 and integer labels, split for the demo."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


@dataclasses.dataclass(frozen=True)
class DemoRow:
    """One artefact of the demo, measured on the held-out set.

    Attributes:
        format: what was measured (`"Keras"`, `"Keras folded"`,
            `"TFLite float32"`, `"TFLite int8"`, `"ONNX float32"`).
        path: the file it was loaded from or written to.
        file_size: bytes on disk.
        accuracy: top-1 accuracy on the held-out set.
        max_error: `max |y - y_keras|` over every held-out output (softmax
            probabilities), 0 for the Keras model itself.
        bn_ops_left: Batch Normalization operations left (module docstring).
        latency_ms: median time of one batch-1 inference, in milliseconds.
    """

    format: str
    path: str
    file_size: int
    accuracy: float
    max_error: float
    bn_ops_left: int
    latency_ms: float


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """Everything `run_demo` produced.

    Attributes:
        rows: one `DemoRow` per artefact, in the order above.
        dataset: name and sizes of the data (`"digits"` or the `.npz` path).
        history: Keras' training history (loss and accuracy per epoch).
        fold_report: what folding did with each BatchNormalization layer.
        exports: the `ExportReport` of each exported file.
    """

    rows: list[DemoRow]
    dataset: dict
    history: dict
    fold_report: FoldReport
    exports: list


def load_dataset(path: str | os.PathLike | None = None) -> Dataset:
    """The digits split (80/20, stratified) or the arrays of a user's `.npz`.

    Args:
        path: `None` for scikit-learn's bundled digits, or an `.npz` file with
            `x_train`, `y_train`, `x_test`, `y_test`: images `(N, H, W)` or
            `(N, H, W, C)` of any real dtype (used as float32, as given) and
            integer class labels `(N,)` from 0.

    Returns:
        A `Dataset`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not an `.npz` archive, misses an array, or an
            array has the wrong rank, dtype or length.
    """
    if path is None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[..., None]
        x_train, x_test, y_train, y_test = train_test_split(
            x, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
        )
        return Dataset("digits", x_train, y_train, x_test, y_test)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No data file at {path!r}.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"The data file must be a NumPy .npz archive. Received: {path!r} ({e})"
        ) from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            "The data file must be a NumPy .npz archive with x_train, y_train, "
            f"x_test, y_test; it holds a single array. Received: {path!r}"
        )
    with archive:
        missing = [
            k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive
        ]
        if missing:
            raise ValueError(
                f"The data file must hold x_train, y_train, x_test and y_test. "
                f"Missing: {missing}. Received arrays: {sorted(archive.files)} "
                f"in {path!r}"
            )
        arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or not np.issubdtype(x.dtype, np.number) or len(x) == 0:
            raise ValueError(
                f"`x_{split}` must be a non-empty numeric array of images "
                f"(N, H, W) or (N, H, W, C). Received: shape {x.shape}, "
                f"dtype {x.dtype} in {path!r}"
            )
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError(
                f"`y_{split}` must be non-negative integer class labels of shape "
                f"(N,). Received: shape {y.shape}, dtype {y.dtype} in {path!r}"
            )
        if len(x) != len(y):
            raise ValueError(
                f"`x_{split}` and `y_{split}` must have the same length. "
                f"Received: {len(x)} images and {len(y)} labels in {path!r}"
            )
        arrays[f"x_{split}"] = x.astype(np.float32)
        arrays[f"y_{split}"] = y.astype(np.int64)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            "`x_train` and `x_test` must have the same image shape. Received: "
            f"{arrays['x_train'].shape[1:]} and {arrays['x_test'].shape[1:]} in {path!r}"
        )
    return Dataset(path, **arrays)


def build_model(
    input_shape: Sequence[int], num_classes: int, name: str = "digits_cnn"
) -> keras.Model:
    """A small CNN with three `keras_bn.BatchNormalization` layers.

    The convolutions have no bias (the BN's β replaces it); the hidden Dense
    layer keeps Keras' default bias, as most models do: with the analytic
    gradient it receives exactly zero gradient and stays put
    (notebooks/2_bias_before_bn.ipynb), and folding absorbs it. The moving
    statistics use `momentum=0.9`: an epoch of the digits is 45 steps, after
    which Keras' default 0.99 would still carry 0.99**45 ≈ 64% of the initial
    values (notebooks/4_train_vs_inference.ipynb).
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            layers.Conv2D(16, 3, padding="same", use_bias=False),
            keras_bn.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            keras_bn.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64),
            keras_bn.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name=name,
    )


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def bn_layers_left(model: keras.Model) -> int:
    """BatchNormalization and `ChannelAffine` layers in `model`, nested included."""
    return sum(
        isinstance(layer, keras.layers.BatchNormalization | ChannelAffine)
        for layer in _all_layers(model)
    )


def bn_ops_left(histogram: dict[str, int], reference: dict[str, int]) -> int:
    """BN operators in an exported graph, given the BN-free graph's histogram."""

    def elementwise(h):
        return sum(h.get(op, 0) for op in ELEMENTWISE_OP_TYPES)

    batchnorm = sum(histogram.get(op, 0) for op in BATCHNORM_OP_TYPES)
    return batchnorm + max(0, elementwise(histogram) - elementwise(reference))


def _keras_latency(model: keras.Model, sample: np.ndarray) -> float:
    call = tf.function(lambda x: model(x, training=False))
    x = tf.constant(sample)
    return median_ms(lambda: call(x), repeats=LATENCY_REPEATS)


def _runtime_latency(run: Callable[[np.ndarray], np.ndarray], sample) -> float:
    return median_ms(lambda: run(sample), repeats=LATENCY_REPEATS)


def _tflite_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def run(x):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def _onnx_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    from keras_bn.export.parity import onnx_session

    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def run_demo(
    out_dir: str | os.PathLike = DEFAULT_OUT,
    *,
    epochs: int = DEFAULT_EPOCHS,
    data: str | os.PathLike | None = None,
    on_stage: Callable[[str], None] | None = None,
    fit_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> DemoResult:
    """Trains, folds, exports and evaluates the demo CNN.

    Writes into `out_dir` (created if missing): `<name>.keras` (trained),
    `<name>_folded.keras`, `<name>.tflite`, `<name>_int8.tflite` and
    `<name>.onnx`, where `<name>` is `digits_cnn` or the `.npz` file's stem
    followed by `_cnn`. Every export is parity-checked against the Keras model
    on the held-out images before it is written (`keras_bn.export`).

    Args:
        out_dir: directory for the files.
        epochs: training epochs (at least 1).
        data: `None` for the bundled digits, or an `.npz` (see `load_dataset`).
        on_stage: called with each name of `DEMO_STAGES` as that stage starts.
        fit_callbacks: Keras callbacks for training (progress bars).

    Returns:
        A `DemoResult`.

    Raises:
        ValueError: `epochs` < 1, or bad data (see `load_dataset`).
        FileNotFoundError: `data` does not exist.
        keras_bn.export.ParityError: an exported file does not match.

    Example:

    ```python
    result = run_demo("export/out", epochs=2)
    for row in result.rows:
        print(row.format, row.accuracy)
    ```
    """
    from keras_bn.export import to_onnx, to_tflite, without_batchnorm
    from keras_bn.export.parity import run_onnx, run_tflite

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            f"`epochs` must be an integer ≥ 1. Received: epochs={epochs!r}"
        )

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)

    stage("load data")
    dataset = load_dataset(data)
    name = "digits_cnn" if data is None else f"{Path(data).stem}_cnn"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    stage("train")
    keras.utils.set_random_seed(SEED)
    model = build_model(dataset.x_train.shape[1:], dataset.num_classes, name=name)
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=True,
    )
    history = model.fit(
        dataset.x_train,
        dataset.y_train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=list(fit_callbacks),
    )
    model_path = out / f"{name}.keras"
    model.save(model_path)

    stage("fold")
    folded, fold_report = fold_batchnorm(
        model, data=dataset.x_test[:64], return_report=True
    )
    folded_path = out / f"{name}_folded.keras"
    folded.save(folded_path)

    stage("export TFLite float32")
    tflite = to_tflite(model, out / f"{name}.tflite", inputs=dataset.x_test)
    stage("export TFLite int8")
    int8 = to_tflite(
        model,
        out / f"{name}_int8.tflite",
        quantize="int8",
        representative_data=dataset.x_train,
    )
    stage("export ONNX")
    onnx = to_onnx(model, out / f"{name}.onnx", inputs=dataset.x_test)

    stage("export BN-free reference")
    bn_free = without_batchnorm(model)
    with tempfile.TemporaryDirectory(prefix="keras_bn_demo_") as tmp:
        reference = {
            "tflite": to_tflite(bn_free, Path(tmp) / "bn_free.tflite", fold=False),
            "onnx": to_onnx(bn_free, Path(tmp) / "bn_free.onnx", fold=False),
        }
        reference = {k: r.op_histogram for k, r in reference.items()}

    stage("evaluate")
    x, y = dataset.x_test, dataset.y_test
    sample = x[:1]
    expected = model.predict(x, batch_size=256, verbose=0)
    measured = [
        (
            "Keras",
            model_path,
            expected,
            bn_layers_left(model),
            _keras_latency(model, sample),
        ),
        (
            "Keras folded",
            folded_path,
            folded.predict(x, batch_size=256, verbose=0),
            bn_layers_left(folded),
            _keras_latency(folded, sample),
        ),
    ]
    for label, report, run, runner in (
        ("TFLite float32", tflite, run_tflite, _tflite_runner),
        ("TFLite int8", int8, run_tflite, _tflite_runner),
        ("ONNX float32", onnx, run_onnx, _onnx_runner),
    ):
        measured.append(
            (
                label,
                Path(report.path),
                run(report.path, x),
                bn_ops_left(report.op_histogram, reference[report.format]),
                _runtime_latency(runner(report.path), sample),
            )
        )
    rows = [
        DemoRow(
            format=label,
            path=str(path),
            file_size=os.path.getsize(path),
            accuracy=float(np.mean(outputs.argmax(-1) == y)),
            max_error=float(np.max(np.abs(outputs - expected))),
            bn_ops_left=int(left),
            latency_ms=float(latency),
        )
        for label, path, outputs, left, latency in measured
    ]
    return DemoResult(
        rows=rows,
        dataset={
            "name": dataset.name,
            "train": len(dataset.y_train),
            "test": len(dataset.y_test),
            "input_shape": list(dataset.x_train.shape[1:]),
            "classes": dataset.num_classes,
        },
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        fold_report=fold_report,
        exports=[tflite, int8, onnx],
    )
