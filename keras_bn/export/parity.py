"""Compare an exported file with the Keras model it should reproduce.

`check_parity` works on any single-input, single-output TFLite or ONNX file,
whoever made it: `keras_bn.export.runtimes` recognises the format from the
file's content and runs it. The comparison is scale-relative,
`max|y_file - y_keras| / max|y_keras|`, the quantity the error model in
`keras_bn.export.parity_bounds` bounds; the policy of which bound applies
(float32, float16, int8) lives here and in the error model, not in callers.

The Keras reference is computed on the CPU (see docs/error-model.md, "Not covered").
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from keras_bn.export import runtimes
from keras_bn.export.parity_bounds import check_quantize, parity_tolerance
from keras_bn.export.prepare import parity_inputs, split_int8_data
from keras_bn.export.report import ERROR_MODEL, TOLERANCE, ParityReport
from keras_bn.folding.verification import scale_relative_error

# `check_parity(..., tolerance=FROM_ERROR_MODEL)` judges the file against the
# bound the error model derives for the model and its quantization.
FROM_ERROR_MODEL = ERROR_MODEL


# Input elements per eager call of the reference. An eager call of a
# functional model holds every intermediate activation until it returns
# (hundreds of times the input for MobileNetV2: 0.55 GB for 8 images at
# 224×224), so large inputs go through a few samples at a time; small ones
# (the digits, 8×8) still go in one call.
REFERENCE_SLICE_ELEMENTS = 2**17


def keras_outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's inference outputs, computed on the CPU in float32."""
    per_sample = max(1, int(np.prod(x.shape[1:])))
    step = max(1, REFERENCE_SLICE_ELEMENTS // per_sample)
    with tf.device("/CPU:0"):
        outputs = [
            np.asarray(
                model(tf.constant(x[i : i + step]), training=False), dtype=np.float32
            )
            for i in range(0, len(x), step)
        ]
    return np.concatenate(outputs)


def compare(
    path: str,
    file_format: str,
    input_shape: tuple[int, ...],
    reference: np.ndarray,
    outputs: np.ndarray,
    tolerance: float | None = None,
) -> ParityReport:
    """Scale-relative comparison of a file's outputs with the Keras outputs.

    Args:
        path: The file the outputs came from (for the report).
        file_format: `"tflite"` or `"onnx"`.
        input_shape: The shape of the inputs both were run on.
        reference: The Keras model's outputs.
        outputs: The file's outputs.
        tolerance: The bound to judge by, or `None` for no verdict.

    Returns:
        A `ParityReport`.

    Raises:
        ValueError: If the output shapes differ.
    """
    if outputs.shape != reference.shape:
        raise ValueError(
            f"The file's output shape {outputs.shape} differs from the Keras "
            f"model's {reference.shape}. Received: path={path!r}"
        )
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    max_rel = scale_relative_error(max_abs, scale)
    top1 = None
    if reference.ndim == 2 and reference.shape[1] > 1:
        top1 = float(np.mean(reference.argmax(1) == outputs.argmax(1)))
    return ParityReport(
        path=path,
        format=file_format,
        runtime=runtimes.RUNTIME_NAMES[file_format],
        input_shape=tuple(int(d) for d in input_shape),
        max_abs_error=max_abs,
        max_rel_error=float(max_rel),
        reference_scale=scale,
        top1_agreement=top1,
        tolerance=tolerance,
    )


def resolve_tolerance(
    model: keras.Model, tolerance: float | str | None, quantize: str | None
) -> float | None:
    """The bound `check_parity` judges by: given, from the error model, or none."""
    check_quantize(quantize)
    if tolerance == FROM_ERROR_MODEL:
        return parity_tolerance(model, quantize)
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise TypeError(
            f"`tolerance` must be a number, {FROM_ERROR_MODEL!r} or None. "
            f"Received: tolerance={tolerance!r}"
        )
    if not tolerance >= 0:
        raise ValueError(f"`tolerance` must be ≥ 0. Received: tolerance={tolerance}")
    return float(tolerance)


def check_parity(
    model: keras.Model,
    exported_path: str | os.PathLike,
    inputs: np.ndarray | None = None,
    tolerance: float | str | None = None,
    quantize: str | None = None,
    calibration: np.ndarray | None = None,
) -> ParityReport:
    """Runs an exported file and measures how far it is from `model`.

    The file may come from anywhere (this package, `tf.lite`, `torch.onnx`,
    ...); it must take the model's input layout. A large error is never
    raised: the report says how large it is and, given a tolerance, whether it
    passes (`report.passed`).

    Args:
        model: The Keras model the file should reproduce.
        exported_path: A `.tflite` or `.onnx` file, recognised by content.
        inputs: Float32 array, batch first. Defaults to 8 seeded
            standard-normal samples of the model's input shape.
        tolerance: The scale-relative bound to judge by: a number,
            `"error_model"` for the bound `keras_bn.export.parity_bounds` derives
            for `model` and `quantize`, or `None` (default) for no verdict
            (`report.passed` is then `None`).
        quantize: The file's quantization (`None`, `"float16"`, `"int8"`),
            which picks the error model's bound.
        calibration: The data an int8 file was calibrated on (`x_train`).
            Parity is then judged on the samples the export judged
            (`keras_bn.export.prepare.split_int8_data`): on `inputs` when they
            are other data, else on the held-out part of `calibration`.
            Without it, `inputs` are taken as held out. Float files are
            judged on `inputs` whatever it is, as `export_files` judges them,
            so a caller can pass a data file's arrays unchanged.

    Returns:
        A `ParityReport` with the maximum absolute and scale-relative error;
        its `rule` says which bound judged the file (`"error_model"`,
        `"tolerance"`, or `None`). The exact int8 gate needs the file's
        simulation and is the exporters' (docs/quantization.md).

    Raises:
        FileNotFoundError: If `exported_path` does not exist.
        ValueError: If the file is not a TFLite or ONNX model, its input or
            output shape does not match the model's, or `quantize` is unknown.

    Example:

    >>> report = check_parity(model, "model.tflite", tolerance="error_model")  # doctest: +SKIP
    >>> report.passed  # doctest: +SKIP
    True
    """
    path = os.fspath(exported_path)
    runtime = runtimes.load_runtime(path)
    bound = resolve_tolerance(model, tolerance, quantize)
    if quantize == "int8" and calibration is not None:
        x = split_int8_data(model, calibration, inputs).held_out
    else:
        x = parity_inputs(model, inputs)
    reference = keras_outputs(model, x)
    report = compare(path, runtime.format, x.shape, reference, runtime(x), bound)
    # A file from anywhere has no simulation here: a float rule judges it.
    rule = None if bound is None else TOLERANCE
    return dataclasses.replace(
        report, rule=ERROR_MODEL if tolerance == FROM_ERROR_MODEL else rule
    )
