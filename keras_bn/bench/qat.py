"""Quantization-aware training against post-training quantization, measured on int8 files.

`run_qat_study` trains a MobileNetV2-style network (inverted residuals,
depthwise convolutions, ReLU6, BN everywhere) on the bundled digits, then
measures held-out accuracy of

- the float model (Keras),
- post-training int8, per channel and per tensor: `quantize_model` with
  ranges calibrated on the training images and no training step,
- quantization-aware int8, per channel and per tensor: `fine_tune` on the
  training images, BN statistics frozen after the first epochs,

each int8 model measured on its TFLite file and on its ONNX file, which are
also judged against the model by the exact gate
(`keras_bn.quantization.gate`). The cost of a QAT epoch against a float
epoch is timed in the same run. With a prune fraction the float model's
weakest expansion channels are zeroed first (`prune_expansion_channels`), which
makes per-tensor PTQ collapse. docs/quantization.md shows the tables and the
commands that made them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import keras
import numpy as np

import keras_bn
from keras_bn.data import Dataset, digits
from keras_bn.defaults import EXPORT_FORMATS, WEIGHT_GRANULARITIES
from keras_bn.export import load_runtime, to_onnx, to_tflite
from keras_bn.quantization import fine_tune, quantize_model
from keras_bn.quantization.training import bn_freeze_epoch

__all__ = [
    "COLUMNS",
    "QatRow",
    "QatStudy",
    "mobilenet_style",
    "prune_expansion_channels",
    "run",
    "run_qat_study",
]

COLUMNS = [
    "model",
    "keras %",
    "tflite %",
    "onnx %",
    "tflite steps",
    "onnx steps",
    "qat/float epoch",
]

BATCH_SIZE = 32

# Name suffixes of each inverted block's expansion and depthwise convolutions
# (their BNs add "_bn"), by which `prune_expansion_channels` finds them.
EXPAND = "_expand"
DEPTHWISE = "_depthwise"


def mobilenet_style(
    input_shape, num_classes: int, width: int = 16, epsilon: float = 1e-3
) -> keras.Model:
    """A small MobileNetV2: stem, three inverted residual blocks, head; BN everywhere.

    Each block expands with a 1×1 convolution (×4), filters with a 3×3
    depthwise convolution, projects with a linear 1×1 convolution, and adds
    the input back when the shapes allow (Sandler et al. 2018).
    """
    layers = keras.layers

    def conv_bn(
        x, filters, kernel=1, strides=1, relu6=True, depthwise=False, name=None
    ):
        bn_name = None if name is None else name + "_bn"
        if depthwise:
            x = layers.DepthwiseConv2D(
                kernel, strides, padding="same", use_bias=False, name=name
            )(x)
        else:
            x = layers.Conv2D(
                filters,
                kernel,
                strides,
                padding="same",
                use_bias=False,
                name=name,
            )(x)
        x = keras_bn.BatchNormalization(momentum=0.9, epsilon=epsilon, name=bn_name)(x)
        return layers.ReLU(6.0)(x) if relu6 else x

    def inverted_residual(x, filters, strides, block):
        y = conv_bn(x, 4 * x.shape[-1], name=f"block{block}{EXPAND}")
        y = conv_bn(
            y, None, 3, strides, depthwise=True, name=f"block{block}{DEPTHWISE}"
        )
        y = conv_bn(y, filters, relu6=False)
        if strides == 1 and x.shape[-1] == filters:
            y = layers.Add()([x, y])
        return y

    inputs = keras.Input(tuple(input_shape))
    x = conv_bn(inputs, width, 3)
    x = inverted_residual(x, width, 1, 1)
    x = inverted_residual(x, 2 * width, 2, 2)
    x = inverted_residual(x, 2 * width, 1, 3)
    x = conv_bn(x, 4 * width)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="mobilenet_style")


def prune_expansion_channels(model: keras.Model, fraction: float) -> list[np.ndarray]:
    """Zeroes the smallest-L1 `fraction` of each inverted block's expansion channels.

    Mask-style structured pruning, in place: the channel's 1×1 filter and its
    BN's γ and β are set to zero, so the channel outputs exactly 0 (as if it
    were removed) while the layers keep their shapes. Its depthwise
    convolution then sees a constant 0, and once the BN statistics are
    re-estimated (`keras_bn.population_statistics`) the depthwise BN's
    variance of that channel is 0, so folding scales its still nonzero
    depthwise weights by γ/√ε: the per-tensor failure Nagel et al. (2019)
    describe for channels that die in training. Removing the channels
    instead would leave nothing to collapse.

    Args:
        model: a `mobilenet_style` model.
        fraction: share of each block's expansion channels, in `[0, 1)`;
            rounded to a whole number of channels.

    Returns:
        The pruned channel indices, one array per block, in block order.

    Raises:
        ValueError: `fraction` outside `[0, 1)`, or `model` has no expansion
            convolution.
    """
    check_prune_fraction(fraction)
    convolutions = [layer for layer in model.layers if layer.name.endswith(EXPAND)]
    if not convolutions:
        raise ValueError(
            f"Model {model.name!r} has no layer named '*{EXPAND}' (a "
            "`mobilenet_style` block's expansion convolution) to prune."
        )
    pruned = []
    for convolution in convolutions:
        kernel = keras.ops.convert_to_numpy(convolution.kernel)
        l1 = np.abs(kernel).sum(axis=tuple(range(kernel.ndim - 1)))
        channels = np.argsort(l1, kind="stable")[: round(fraction * l1.size)]
        kernel[..., channels] = 0
        convolution.kernel.assign(kernel)
        bn = model.get_layer(convolution.name + "_bn")
        for variable in (bn.gamma, bn.beta):
            values = keras.ops.convert_to_numpy(variable)
            values[channels] = 0
            variable.assign(values)
        pruned.append(channels)
    return pruned


def check_prune_fraction(fraction: float) -> None:
    """Raises ValueError unless `0 <= fraction < 1`."""
    if not 0 <= fraction < 1:
        raise ValueError(
            f"The prune fraction must be in [0, 1). Received: prune_fraction={fraction}"
        )


@dataclasses.dataclass
class QatRow:
    """One model of the study: its accuracy in Keras and in its two files."""

    name: str
    keras_accuracy: float
    tflite_accuracy: float | None = None
    onnx_accuracy: float | None = None
    tflite_steps: dict | None = None
    onnx_steps: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class QatStudy:
    """The rows, the settings, and the QAT/float epoch cost ratio."""

    rows: list[QatRow]
    epoch_cost_ratio: float
    settings: dict

    def table(self) -> str:
        """The accuracy table in Markdown."""
        lines = [
            "| model | Keras | TFLite file | ONNX file | file vs simulation (TFLite; ONNX) |",
            "|---|---|---|---|---|",
        ]
        for row in self.rows:

            def cell(value):
                return "—" if value is None else f"{100 * value:.2f}%"

            gate = "—"
            if row.tflite_steps is not None:
                gate = (
                    f"≤ {row.tflite_steps['max_steps']} step; "
                    f"≤ {row.onnx_steps['max_steps']} step"
                )
            lines.append(
                f"| {row.name} | {cell(row.keras_accuracy)} | {cell(row.tflite_accuracy)} "
                f"| {cell(row.onnx_accuracy)} | {gate} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "rows": [row.to_dict() for row in self.rows],
            "epoch_cost_ratio": self.epoch_cost_ratio,
            "settings": self.settings,
        }


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each training epoch."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _timed_epoch(model, data: Dataset) -> float:
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    return time.perf_counter() - start


def _compile(model, learning_rate):
    # The metric as `fine_tune` compiles it, so that the epoch costs compare.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _measure_files(row: QatRow, model, data: Dataset, directory: str) -> None:
    """Exports the TFLite and ONNX files of `model` (exact gate) and runs them."""
    stem = os.path.join(directory, row.name.replace(" ", "_"))
    reports = {
        "tflite": to_tflite(
            model, stem + ".tflite", quantize="int8", inputs=data.x_test
        ),
        "onnx": to_onnx(model, stem + ".onnx", inputs=data.x_test),
    }
    for file_format in EXPORT_FORMATS:
        outputs = load_runtime(reports[file_format].path)(data.x_test)
        setattr(row, f"{file_format}_accuracy", accuracy(outputs, data.y_test))
        setattr(row, f"{file_format}_steps", reports[file_format].parity.steps)


def run_qat_study(
    epochs: int = 15,
    qat_epochs: int = 10,
    freeze_bn_after: int | None = 3,
    seed: int = 0,
    data: Dataset | None = None,
    width: int = 16,
    learning_rate: float = 1e-2,
    epsilon: float = 1e-5,
    prune_fraction: float = 0.0,
) -> QatStudy:
    """Trains the float model, then measures PTQ and QAT at both granularities.

    Args:
        epochs: float training epochs.
        qat_epochs: QAT fine-tuning epochs.
        freeze_bn_after: QAT epochs before the BN statistics freeze (`None`:
            all but the last, `fine_tune`'s default); the epochs after it
            train on exactly the inference map (docs/quantization.md
            measures the choice).
        seed: seeds Keras (weights, shuffling).
        data: the dataset; default the bundled digits.
        width: the network's base width.
        learning_rate: Adam's learning rate for the float training.
        epsilon: the BN layers' ε. The default, PyTorch's 1e-5, lets channels
            that died in training keep a variance near zero, so that their
            folded depthwise weights are scaled up to 200× the others (the
            per-tensor failure of MobileNetV2, Nagel et al. 2019); with
            Keras' 1e-3 and a gentler training the spread stays below 4×.
        prune_fraction: if above 0, after the float training this share of
            each block's expansion channels is pruned
            (`prune_expansion_channels`) and the BN statistics are
            re-estimated on the training images; the study then quantizes
            the pruned model, and its rows follow a "float pruned" row.

    Returns:
        A `QatStudy`.

    Raises:
        ValueError: `freeze_bn_after` outside `[0, qat_epochs]`, or
            `prune_fraction` outside `[0, 1)`, before any training.
    """
    bn_freeze_epoch(qat_epochs, freeze_bn_after)  # a bad value fails before training
    check_prune_fraction(prune_fraction)
    keras.utils.set_random_seed(seed)
    data = digits() if data is None else data
    model = mobilenet_style(data.x_train.shape[1:], data.num_classes, width, epsilon)
    _compile(model, learning_rate)
    model.fit(
        data.x_train, data.y_train, batch_size=BATCH_SIZE, epochs=epochs - 1, verbose=0
    )
    float_epoch = _timed_epoch(model, data)
    rows = [QatRow("float", _accuracy(model, data))]
    if prune_fraction > 0:
        prune_expansion_channels(model, prune_fraction)
        keras_bn.population_statistics(model, data.x_train, verbose=0)
        rows.append(QatRow("float pruned", _accuracy(model, data)))
    quantized_rows, qat_epoch = _quantized_rows(
        model, data, qat_epochs, freeze_bn_after
    )
    return QatStudy(
        rows=rows + quantized_rows,
        epoch_cost_ratio=qat_epoch / float_epoch,
        settings={
            "epochs": epochs,
            "qat_epochs": qat_epochs,
            "freeze_bn_after": freeze_bn_after,
            "seed": seed,
            "width": width,
            "learning_rate": learning_rate,
            "epsilon": epsilon,
            "prune_fraction": prune_fraction,
            "batch_size": BATCH_SIZE,
            "train": len(data.y_train),
            "test": len(data.y_test),
        },
    )


def _quantized_rows(
    model, data: Dataset, qat_epochs: int, freeze_bn_after: int | None
) -> tuple[list[QatRow], float]:
    """PTQ then QAT rows at each granularity, and the fastest QAT epoch in seconds."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rows, qat_seconds = [], []
    with tempfile.TemporaryDirectory() as directory:
        for granularity in WEIGHT_GRANULARITIES:
            ptq = quantize_model(
                model, weights=granularity, calibration_data=data.x_train
            )
            rows.append(_row(f"PTQ {granularity}", ptq, data, directory))
            timer = EpochTimer()
            result = fine_tune(
                model,
                data.x_train,
                data.y_train,
                epochs=qat_epochs,
                freeze_bn_after_epochs=freeze_bn_after,
                weights=granularity,
                loss=loss,
                batch_size=BATCH_SIZE,
                callbacks=[timer],
            )
            qat_seconds.append(min(timer.seconds))
            rows.append(_row(f"QAT {granularity}", result.model, data, directory))
    return rows, min(qat_seconds)


def _accuracy(model, data: Dataset) -> float:
    return accuracy(model.predict(data.x_test, verbose=0), data.y_test)


def _row(name, model, data, directory) -> QatRow:
    row = QatRow(name, _accuracy(model, data))
    _measure_files(row, model, data, directory)
    return row


def run(args) -> list[dict]:
    """The study as table rows: accuracy per model and file, then the epoch cost.

    Raises:
        ValueError: `--freeze-bn-after` above `--qat-epochs`, or
            `--prune-fraction` not below 1 (before training).
    """
    if args.freeze_bn_after > args.qat_epochs:
        raise ValueError(
            "--freeze-bn-after must be at most --qat-epochs. Received: "
            f"--freeze-bn-after {args.freeze_bn_after} with --qat-epochs "
            f"{args.qat_epochs}"
        )
    if args.prune_fraction >= 1:
        raise ValueError(
            "--prune-fraction must be below 1. Received: --prune-fraction "
            f"{args.prune_fraction}"
        )
    study = run_qat_study(
        epochs=args.epochs,
        qat_epochs=args.qat_epochs,
        freeze_bn_after=args.freeze_bn_after,
        seed=args.seed,
        learning_rate=args.learning_rate,
        epsilon=args.epsilon,
        prune_fraction=args.prune_fraction,
    )

    def percent(value):
        return None if value is None else round(100 * value, 2)

    rows = []
    for row in study.rows:
        entry = {
            "table": "held-out accuracy",
            "model": row.name,
            "keras %": percent(row.keras_accuracy),
            "tflite %": percent(row.tflite_accuracy),
            "onnx %": percent(row.onnx_accuracy),
        }
        for file_format in EXPORT_FORMATS:
            steps = getattr(row, f"{file_format}_steps")
            if steps is not None:
                entry[f"{file_format} steps"] = steps["summary"]
        rows.append(entry)
    rows.append(
        {"table": "training cost", "qat/float epoch": round(study.epoch_cost_ratio, 2)}
    )
    return rows
