"""The main job end to end: train, fold, export, and measure every artefact.

`run_demo` is what `keras-bn demo` runs. It trains a small CNN whose
normalisation is `keras_bn.BatchNormalization` under XLA (`jit_compile=True`)
on scikit-learn's bundled 8×8 digits (no download) or on a user's `.npz`
(`keras_bn.data`), folds it, exports TFLite (float32 and full-integer int8)
and ONNX files, fine-tunes a quantization-aware copy for one epoch and
writes its int8 file (`keras_bn.quantization`), and then evaluates the Keras model, the folded model and each
file *in its own runtime* on the held-out set. The result is one row per
artefact: file size, accuracy, largest output difference from the Keras model,
how many Batch Normalization operations survive
(`keras_bn.export.op_counts`), and latency at batch 1. It also measures the
trained model's held-out accuracy with its moving averages and with
population statistics re-estimated on the training images
(`keras_bn.with_population_statistics`, Algorithm 2).

Every file goes through `keras_bn.staging` (written next to its
destination, checked, moved into place), and an output directory the demo
had to create is removed again if the demo fails.

The demo is a list of steps (`DEMO_STEPS`), each a function of one
`DemoRun` that holds what the earlier steps produced; the progress stages are
the steps' names. Nothing here prints; progress is reported through
`on_stage` and Keras callbacks, and the command line draws it.
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
from keras_bn.data import Dataset, load_dataset
from keras_bn.defaults import DEMO_EPOCHS, DEMO_OUT
from keras_bn.export import (
    ExportReport,
    bn_layers_left,
    export_files,
    load_runtime,
    to_onnx,
    to_tflite,
    without_batchnorm,
)
from keras_bn.folding import FoldReport, fold_batchnorm
from keras_bn.models import digits_cnn
from keras_bn.quantization import fine_tune
from keras_bn.staging import created_directories, published_together, save_model
from keras_bn.timing import median_ms

__all__ = [
    "DEMO_STAGES",
    "DEMO_STEPS",
    "Dataset",
    "DemoResult",
    "DemoRow",
    "DemoRun",
    "PopulationComparison",
    "build_model",
    "load_dataset",
    "run_demo",
]

BATCH_SIZE = 32
# Medians over this many batch-1 calls (after two warm-up calls): enough for a
# stable median at well under a second per artefact.
LATENCY_REPEATS = 50
SEED = 0
# (stage, row label, format, quantize) of each exported file, in table order.
EXPORTS = (
    ("export TFLite float32", "TFLite float32", "tflite", None),
    ("export TFLite int8", "TFLite int8", "tflite", "int8"),
    ("export ONNX", "ONNX float32", "onnx", None),
)


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
        bn_ops_left: BN layers left in a Keras model, BN operators left in a
            file (`keras_bn.export.op_counts`).
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
class PopulationComparison:
    """The trained model's held-out accuracy, moving averages vs population.

    Attributes:
        moving_average_accuracy: top-1 accuracy with the moving statistics
            that training left (what `model.predict` uses).
        population_accuracy: top-1 accuracy of a copy whose BN statistics
            were re-estimated on the training images (Algorithm 2).
        images: training images the population estimate used.
    """

    moving_average_accuracy: float
    population_accuracy: float
    images: int

    def summary(self) -> str:
        """One line: both accuracies."""
        return (
            f"held-out accuracy with the moving averages "
            f"{self.moving_average_accuracy:.2%}, with population statistics "
            f"(Algorithm 2 on the {self.images} training images) "
            f"{self.population_accuracy:.2%}"
        )


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """Everything `run_demo` produced.

    Attributes:
        rows: one `DemoRow` per artefact, in the order above.
        dataset: name and sizes of the data (`Dataset.describe`).
        history: Keras' training history (loss and accuracy per epoch).
        fold_report: what folding did with each BatchNormalization layer.
        exports: the `ExportReport` of each exported file.
        population: moving-average vs population-statistics accuracy.
    """

    rows: list[DemoRow]
    dataset: dict
    history: dict
    fold_report: FoldReport
    exports: list[ExportReport]
    population: PopulationComparison


#: The demo's network, `keras_bn.models.digits_cnn` (its earlier name here).
build_model = digits_cnn


def keras_latency_ms(model: keras.Model, sample: np.ndarray) -> float:
    """Median ms of one inference call of `model` on `sample`, as a tf.function."""
    call = tf.function(lambda x: model(x, training=False))
    x = tf.constant(sample)
    return median_ms(lambda: call(x), repeats=LATENCY_REPEATS)


@dataclasses.dataclass
class DemoRun:
    """What the demo's steps read and write, in the order they run.

    Attributes:
        out: the directory the files go to.
        data: the user's `.npz`, or `None` for the digits.
        epochs: training epochs.
        fit_callbacks: Keras callbacks for training (progress bars).
        name: the files' stem, `digits_cnn` or `<npz stem>_cnn`.
    """

    out: Path
    data: str | os.PathLike | None
    epochs: int
    fit_callbacks: Sequence[keras.callbacks.Callback] = ()
    name: str = "digits_cnn"
    dataset: Dataset | None = None
    model: keras.Model | None = None
    history: dict = dataclasses.field(default_factory=dict)
    folded: keras.Model | None = None
    fold_report: FoldReport | None = None
    exports: dict[str, ExportReport] = dataclasses.field(default_factory=dict)
    references: dict[str, ExportReport] = dataclasses.field(default_factory=dict)
    rows: list[DemoRow] = dataclasses.field(default_factory=list)
    population: PopulationComparison | None = None

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.name}{suffix}"


def load_data(run: DemoRun) -> None:
    """Loads the data."""
    run.dataset = load_dataset(run.data)
    if run.data is not None:
        run.name = f"{Path(run.data).stem}_cnn"


def train(run: DemoRun) -> None:
    """Trains the CNN under XLA and saves `<name>.keras`."""
    data = run.dataset
    keras.utils.set_random_seed(SEED)
    model = digits_cnn(data.x_train.shape[1:], data.num_classes, name=run.name)
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=True,
    )
    history = model.fit(
        data.x_train,
        data.y_train,
        epochs=run.epochs,
        batch_size=BATCH_SIZE,
        verbose=0,
        callbacks=list(run.fit_callbacks),
    )
    save_model(model, run.path(".keras"))
    run.model = model
    run.history = {k: [float(v) for v in vs] for k, vs in history.history.items()}


def fold(run: DemoRun) -> None:
    """Folds every BN (verified on held-out images) and saves `<name>_folded.keras`."""
    run.folded, run.fold_report = fold_batchnorm(
        run.model, data=run.dataset.x_test[:64], return_report=True
    )
    save_model(run.folded, run.path("_folded.keras"))


def compare_population(run: DemoRun) -> None:
    """Held-out accuracy with the moving averages vs population statistics."""
    data = run.dataset

    def accuracy(model: keras.Model) -> float:
        # One eager call: `predict` would trace (and XLA-compile) a new
        # function for the copy, several seconds for 360 small images.
        outputs = np.asarray(model(data.x_test, training=False))
        return float(np.mean(outputs.argmax(-1) == data.y_test))

    recalibrated, _ = keras_bn.with_population_statistics(
        run.model, data.x_train, verbose=0
    )
    run.population = PopulationComparison(
        moving_average_accuracy=accuracy(run.model),
        population_accuracy=accuracy(recalibrated),
        images=len(data.x_train),
    )


def export_step(label: str, file_format: str, quantize: str | None):
    """The step that writes one file of `EXPORTS`, parity-checked."""

    def export(run: DemoRun) -> None:
        (run.exports[label],) = export_files(
            run.model,
            run.out,
            stem=run.name,
            formats=[file_format],
            quantize=quantize,
            calibration=run.dataset.x_train,
            evaluation=run.dataset.x_test,
        )

    export.__doc__ = f"Writes the {label} file."
    return export


QAT_LABEL = "TFLite int8 QAT"
#: One epoch of quantization-aware fine-tuning: the BN statistics frozen
#: throughout (`fine_tune` frees them for all epochs but the last).
QAT_EPOCHS = 1


def export_qat(run: DemoRun) -> None:
    """Fine-tunes a quantization-aware copy and writes its int8 file (exact gate)."""
    data = run.dataset
    result = fine_tune(
        run.model,
        data.x_train,
        data.y_train,
        epochs=QAT_EPOCHS,
        loss="sparse_categorical_crossentropy",
    )
    (run.exports[QAT_LABEL],) = export_files(
        result.model,
        run.out,
        stem=f"{run.name}_qat",
        formats=["tflite"],
        evaluation=data.x_test,
    )


def export_bn_free_reference(run: DemoRun) -> None:
    """Exports the BN-free network (the op-count reference) to a temporary dir."""
    bn_free = without_batchnorm(run.model)
    with tempfile.TemporaryDirectory(prefix="keras_bn_demo_") as tmp:
        run.references = {
            "tflite": to_tflite(bn_free, Path(tmp) / "bn_free.tflite", fold=False),
            "onnx": to_onnx(bn_free, Path(tmp) / "bn_free.onnx", fold=False),
        }


def evaluate(run: DemoRun) -> None:
    """One row per artefact: outputs and latency from one load of each."""
    x, y = run.dataset.x_test, run.dataset.y_test
    expected = run.model.predict(x, batch_size=256, verbose=0)

    def row(label, path, outputs, left, latency) -> DemoRow:
        return DemoRow(
            format=label,
            path=str(path),
            file_size=os.path.getsize(path),
            accuracy=float(np.mean(outputs.argmax(-1) == y)),
            max_error=float(np.max(np.abs(outputs - expected))),
            bn_ops_left=int(left),
            latency_ms=float(latency),
        )

    for label, model, suffix in (
        ("Keras", run.model, ".keras"),
        ("Keras folded", run.folded, "_folded.keras"),
    ):
        outputs = model.predict(x, batch_size=256, verbose=0)
        latency = keras_latency_ms(model, x[:1])
        run.rows.append(
            row(label, run.path(suffix), outputs, bn_layers_left(model), latency)
        )
    for label, report in run.exports.items():
        runtime = load_runtime(report.path)
        left = report.bn_ops_left(run.references[report.format])
        latency = runtime.latency_ms(x[:1], repeats=LATENCY_REPEATS)
        run.rows.append(row(label, report.path, runtime(x), left, latency))


Steps = tuple[tuple[str, Callable[[DemoRun], None]], ...]
#: The steps that write into the output directory: their files are published
#: together when the last one is written, or none of them.
WRITING_STEPS: Steps = (
    ("load data", load_data),
    ("train", train),
    ("fold", fold),
    ("population statistics", compare_population),
    *((stage, export_step(label, fmt, q)) for stage, label, fmt, q in EXPORTS[:2]),
    ("quantization-aware training", export_qat),
    *((stage, export_step(label, fmt, q)) for stage, label, fmt, q in EXPORTS[2:]),
)
#: Then the steps that read the published files.
DEMO_STEPS: Steps = (
    *WRITING_STEPS,
    ("export BN-free reference", export_bn_free_reference),
    ("evaluate", evaluate),
)
DEMO_STAGES = tuple(name for name, _ in DEMO_STEPS)


def _run_step(run, name, step, on_stage) -> None:
    if on_stage is not None:
        on_stage(name)
    step(run)


def run_demo(
    out_dir: str | os.PathLike = DEMO_OUT,
    *,
    epochs: int = DEMO_EPOCHS,
    data: str | os.PathLike | None = None,
    on_stage: Callable[[str], None] | None = None,
    fit_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> DemoResult:
    """Trains, folds, exports and evaluates the demo CNN.

    Writes into `out_dir` (created if missing, and removed again if the demo
    fails; files already there are replaced only once every new one is
    written and checked, all together): `<name>.keras` (trained),
    `<name>_folded.keras`, `<name>.tflite`, `<name>_int8.tflite`,
    `<name>_qat.tflite` (quantization-aware, judged by the exact int8 gate) and
    `<name>.onnx`, where `<name>` is `digits_cnn` or the `.npz` file's stem
    followed by `_cnn`. Every export is parity-checked against the Keras model
    on the held-out images before it is written (`keras_bn.export`).

    Args:
        out_dir: directory for the files.
        epochs: training epochs (at least 1).
        data: `None` for the bundled digits, or an `.npz` (`keras_bn.data`).
        on_stage: called with each name of `DEMO_STAGES` as that stage starts.
        fit_callbacks: Keras callbacks for training (progress bars).

    Returns:
        A `DemoResult`.

    Raises:
        ValueError: `epochs` < 1, or bad data (see `keras_bn.data`).
        FileNotFoundError: `data` does not exist.
        keras_bn.export.ParityError: an exported file does not match.

    Example:

    ```python
    result = run_demo("export/out", epochs=2)
    for row in result.rows:
        print(row.format, row.accuracy)
    ```
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            f"`epochs` must be an integer ≥ 1. Received: epochs={epochs!r}"
        )
    run = DemoRun(Path(out_dir), data, epochs, fit_callbacks)
    with created_directories(run.out):
        with published_together():
            for name, step in WRITING_STEPS:
                _run_step(run, name, step, on_stage)
        for name, step in DEMO_STEPS[len(WRITING_STEPS) :]:
            _run_step(run, name, step, on_stage)
    return DemoResult(
        rows=run.rows,
        dataset=run.dataset.describe(),
        history=run.history,
        fold_report=run.fold_report,
        exports=list(run.exports.values()),
        population=run.population,
    )
