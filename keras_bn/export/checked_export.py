"""The steps every export shares: fold, convert, check against Keras, publish.

`to_tflite` and `to_onnx` differ only in how they validate their own options
and how they convert; everything else — folding a copy of the model, computing
the Keras reference on the parity inputs, the error model's bound, the staged
write that publishes only a checked file, and the report — is this one
function, so the two formats cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_bn.export.parity import keras_outputs
from keras_bn.export.parity_bounds import parity_tolerance
from keras_bn.export.prepare import model_to_export
from keras_bn.export.report import ExportReport
from keras_bn.export.staging import publish_checked
from keras_bn.population import with_population_statistics

# A converter takes the model to convert and returns the function that writes
# the converted file to a (temporary) path.
Converter = Callable[[keras.Model], Callable[[str], None]]


def export_checked(
    model: keras.Model,
    path: str,
    *,
    file_format: str,
    convert: Converter,
    x: np.ndarray,
    fold: bool,
    quantize: str | None = None,
    details: dict[str, Any] | None = None,
    population_data: Any = None,
) -> ExportReport:
    """Folds, converts, checks and publishes one file; the caller validated.

    Args:
        model: The caller's model (never modified); the parity reference.
        path: The validated destination (`staging.validate_destination`).
        file_format: `"tflite"` or `"onnx"`, for the report.
        convert: Converts the model to export; returns a writer.
        x: The validated parity inputs.
        fold: Fold BatchNormalization layers first.
        quantize: The quantization, which picks the error model's bound.
        details: Format-specific facts for the report.
        population_data: Batches on which population statistics are
            re-estimated (on a copy) before folding; the recalibrated copy is
            then both what is exported and the parity reference.

    Returns:
        The `ExportReport` of the published file.

    Raises:
        ParityError: The file does not match `model`; nothing is written.
    """
    population = None
    if population_data is not None:
        model, population = with_population_statistics(
            model, population_data, verbose=0
        )
    exported, fold_report = model_to_export(model, fold)
    if fold_report is not None:
        fold_report.population = population
    write = convert(exported)
    reference = keras_outputs(model, x)
    tolerance = parity_tolerance(model, quantize)
    parity, histogram = publish_checked(path, write, x, reference, tolerance)
    return ExportReport(
        path=path,
        format=file_format,
        file_size=os.path.getsize(path),
        op_histogram=histogram,
        parity=parity,
        fold_report=fold_report,
        quantize=quantize,
        details=details or {},
        population=population,
    )
