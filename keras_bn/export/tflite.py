"""Export a Keras model to TFLite (LiteRT), checked before it is written.

The model goes through `tf.lite.TFLiteConverter.from_keras_model`, which saves
the model with its variables and converts that. `from_concrete_functions`
without the trackable object that owns the variables keeps `VAR_HANDLE` /
`READ_VARIABLE` ops whose variables are never initialised in the interpreter,
so the file runs but computes with zeros; it is not used here.

Keras 3's SavedModel export prints "Saved artifact at ..." to stdout during the
conversion; library code never prints, so that output is captured and dropped.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_bn.export.checked_export import export_checked
from keras_bn.export.parity_bounds import check_quantize
from keras_bn.export.prepare import (
    PreparedModel,
    input_spec,
    parity_inputs,
    prepare_model,
    split_int8_data,
)
from keras_bn.export.quantized import (
    check_quantize_for,
    convert_quantized_tflite,
    is_quantized_model,
    post_training_simulation,
)
from keras_bn.export.report import ExportReport
from keras_bn.staging import validate_destination

# Calibration records each tensor's range over its samples; a held-out sample
# exceeds the range of n exchangeable calibration samples with probability
# 1/(n + 1) (order statistics) and then saturates. 500 samples left the digits
# CNN's held-out outliers at 4.5e-2; all 1,150 brought them under 1.2e-2.
# Above the cap, calibration costs one interpreter call per sample (TFLite's
# own) or more Keras batches (the post-training simulation) for little gain,
# so an evenly spaced subset is taken, the same for both.
MAX_CALIBRATION_SAMPLES = 2000


def calibration_subset(data: np.ndarray) -> np.ndarray:
    """At most `MAX_CALIBRATION_SAMPLES` of `data`, evenly spaced."""
    step = -(-len(data) // MAX_CALIBRATION_SAMPLES)
    return data[::step]


def convert_to_tflite(
    model: keras.Model,
    quantize: str | None = None,
    representative_data: np.ndarray | None = None,
) -> bytes:
    """The TFLite flatbuffer of `model`, optionally quantized."""
    if is_quantized_model(model):
        return convert_quantized_tflite(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        calibration = calibration_subset(representative_data)

        def representative_dataset():
            for sample in calibration:
                yield [sample[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        # Full-integer: every op in int8, conversion fails rather than falling
        # back to float. Inputs and outputs stay float32 (the file quantizes at
        # its entry and dequantizes at its exit) so it is a drop-in replacement.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # Inputs stay float32 on purpose, so the converter's warning that no
        # input statistics were given does not apply.
        warnings.filterwarnings(
            "ignore", message="Statistics for quantized inputs were expected"
        )
        return converter.convert()


def validate_quantize(model, quantize, representative_data) -> None:
    """Checks `quantize` and `representative_data` go together.

    Raises:
        ValueError: For an unknown `quantize`, calibration data without int8,
            or int8 without calibration data.
    """
    check_quantize(quantize)
    if quantize != "int8" and representative_data is not None:
        raise ValueError(
            "`representative_data` calibrates int8 quantization and is only "
            f"used with quantize='int8'. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: a float32 array of "
            "typical inputs (batch first) to calibrate activation ranges. "
            "Received: representative_data=None"
        )


def _writer(flatbuffer: bytes):
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)

    return write


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    fold: bool = True,
    quantize: str | None = None,
    representative_data: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    population_data: Any = None,
    tolerance: float | None = None,
) -> ExportReport:
    """Folds `model`'s BatchNormalization layers and writes a TFLite file.

    The model is converted with `tf.lite.TFLiteConverter.from_keras_model`,
    written to a hidden temporary file next to `path`, run with LiteRT's
    interpreter and compared with the *original* Keras model; only if it
    passes its rule is it renamed to `path`. The caller's model is never
    modified.

    The rule (`report.parity.rule`): a float32 or float16 file must be
    within the scale-relative bound of `keras_bn.export.parity_bounds` (or
    `tolerance`). An int8 file is converted from its simulation and must be
    within the exact gate of `keras_bn.quantization.gate` against it: a
    quantization-aware model is its own; for a float model it is the
    post-training simulation, `quantize_model` per channel calibrated on
    `representative_data` with no training step. Its error against the float
    model is reported, and bounded only by a `tolerance` you give. A float
    model `quantize_model` cannot simulate (a layer without int8 rules) is
    calibrated by TFLite's converter instead and judged by the float bound;
    `report.parity.not_simulated` says why (docs/quantization.md).

    Args:
        model: A Keras model with one float32 input whose non-batch dimensions
            are known, and one output.
        path: Destination, ending in `.tflite`, in an existing directory.
        fold: Fold BatchNormalization layers first (default).
        quantize: `None` (float32), `"float16"` (weights stored in float16,
            half the size) or `"int8"` (full-integer post-training
            quantization, per channel; inputs and outputs stay float32).
        representative_data: Required for, and only accepted with, `"int8"`:
            typical inputs, batch first, that calibrate the ranges (at most
            2000, evenly spaced).
        inputs: Inputs for the parity check. Defaults to 8 seeded
            standard-normal samples. For int8 they must be data calibration
            did not see (`x_test`); without them (or given the same array as
            `representative_data`) every fifth sample of `representative_data`
            is held out from calibration to judge parity
            (`keras_bn.export.prepare.split_int8_data`, the rule
            `check_parity` applies too).
        population_data: Batches (an array, a `tf.data.Dataset` or an
            iterable, as `keras_bn.population_statistics` takes them) on which
            the population statistics are re-estimated on a copy of `model`
            before folding; the file then carries them, and parity is checked
            against that recalibrated copy. `model` itself is untouched.
        tolerance: The scale-relative bound the file must meet, instead of
            `keras_bn.export.parity_bounds'`. For a float model's int8 file,
            a bound on its error against the float model, judged together
            with the exact gate (your task's requirement; without it a
            correct lossy file is never refused). Not used for a
            quantization-aware model's file (the exact gate alone).

    Returns:
        An `ExportReport`. For int8, `report.parity.steps` is the exact
        gate's step histogram, and `report.parity.max_rel_error` and
        `top1_agreement` (the fraction of samples whose predicted class
        matches) compare the file with the model you gave.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
        ValueError: For a bad extension, quantize value, missing or misshapen
            representative data, or a model with several inputs, a
            non-float32 dtype or an unknown input dimension.
        FileNotFoundError: If the destination directory does not exist.
        ParityError: If the converted file does not pass its rule (or an
            int8 file exceeds `tolerance`); no file is left behind.

    Example:

    >>> report = to_tflite(model, "out/model.tflite")  # doctest: +SKIP
    >>> report.parity.max_rel_error < report.parity.tolerance  # doctest: +SKIP
    True
    """
    path = validate_destination(path, ".tflite")
    calibration, x = tflite_inputs(model, quantize, representative_data, inputs)
    prepared = prepare_model(model, fold=fold, population_data=population_data)
    return write_tflite(prepared, path, quantize, calibration, x, tolerance)


def tflite_inputs(
    model: keras.Model,
    quantize: str | None,
    representative_data: np.ndarray | None,
    inputs: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Validated `(calibration, parity inputs)` for a TFLite file of `model`.

    Raises:
        TypeError, ValueError: as `to_tflite` (the model, `quantize`, data).
    """
    input_spec(model)
    if is_quantized_model(model):
        check_quantize_for(model, quantize)
        # Nothing is calibrated: any inputs judge the file, data first.
        return None, parity_inputs(
            model, representative_data if inputs is None else inputs
        )
    validate_quantize(model, quantize, representative_data)
    if quantize == "int8":
        split = split_int8_data(model, representative_data, inputs)
        return split.calibration, split.held_out
    return None, parity_inputs(model, inputs)


def write_tflite(
    prepared: PreparedModel,
    path: str,
    quantize: str | None,
    calibration: np.ndarray | None,
    x: np.ndarray,
    tolerance: float | None = None,
) -> ExportReport:
    """Converts the prepared model to a checked TFLite file at `path`.

    A float model's int8 file is converted from its post-training
    simulation and judged by the exact gate against it; without one (the
    reason is reported), from TFLite's own calibration under a float bound.
    """
    quantize = check_quantize_for(prepared.reference, quantize)
    simulation = not_simulated = None
    if quantize == "int8" and not is_quantized_model(prepared.reference):
        simulation, not_simulated = post_training_simulation(
            prepared.reference, calibration_subset(calibration)
        )

    def convert(exported: keras.Model):
        if simulation is not None:
            return _writer(convert_quantized_tflite(simulation))
        return _writer(convert_to_tflite(exported, quantize, calibration))

    return export_checked(
        prepared,
        path,
        file_format="tflite",
        convert=convert,
        x=x,
        quantize=quantize,
        details={"tensorflow": tf.__version__},
        tolerance=tolerance,
        simulation=simulation,
        not_simulated=not_simulated,
    )
