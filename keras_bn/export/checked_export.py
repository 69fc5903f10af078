"""The steps every export shares: convert, check against Keras, publish.

`to_tflite` and `to_onnx` differ only in how they validate their own options
and how they convert; everything else — computing the Keras reference on the
parity inputs, the error model's bound, the staged write that publishes only
a checked file, and the report — is this one function, so the two formats
cannot drift apart. Recalibrating and folding happen before, once per export
(`keras_bn.export.prepare.prepare_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_bn.export.parity import keras_outputs, resolve_tolerance
from keras_bn.export.parity_bounds import parity_tolerance
from keras_bn.export.prepare import PreparedModel
from keras_bn.export.quantized import (
    is_quantized_model,
    publish_quantized,
    sync_input_steps,
)
from keras_bn.export.report import ERROR_MODEL, TOLERANCE, ExportReport
from keras_bn.export.staging import publish_checked

# A converter takes the model to convert and returns the function that writes
# the converted file to a (temporary) path.
Converter = Callable[[keras.Model], Callable[[str], None]]


def export_checked(
    prepared: PreparedModel,
    path: str,
    *,
    file_format: str,
    convert: Converter,
    x: np.ndarray,
    quantize: str | None = None,
    details: dict[str, Any] | None = None,
    tolerance: float | None = None,
    simulation: keras.Model | None = None,
    not_simulated: str | None = None,
) -> ExportReport:
    """Converts, checks and publishes one file; the caller validated.

    Args:
        prepared: The model to convert and the reference it must match
            (`prepare_model`).
        path: The validated destination (`keras_bn.staging.validate_destination`).
        file_format: `"tflite"` or `"onnx"`, for the report.
        convert: Converts the model to export; returns a writer.
        x: The validated parity inputs.
        quantize: The quantization, which picks the error model's bound.
        details: Format-specific facts for the report.
        tolerance: The scale-relative bound to hold the file to instead of
            the error model's (`None`). A float model's int8 file with a
            `simulation` is judged by the exact gate *and* this bound on its
            error against the float model; a quantization-aware model's int8
            file by the exact gate whatever it is.
        simulation: The post-training simulation of a float model's int8
            file (`post_training_simulation`); it judges the file by the
            exact gate. A quantization-aware model is its own.
        not_simulated: Why a float model's int8 file has no simulation, for
            the report.

    Returns:
        The `ExportReport` of the published file.

    Raises:
        ParityError: The file does not match the reference; nothing is written.
    """
    reference = None
    if is_quantized_model(prepared.reference):
        simulation, tolerance = prepared.reference, None
    elif simulation is not None:
        reference = prepared.reference
        tolerance = resolve_tolerance(reference, tolerance, quantize)
    if simulation is not None:
        # The simulation must round each bias on its input's current grid.
        sync_input_steps(simulation)
    write = convert(prepared.exported)
    if simulation is not None:
        # The int8 file is judged in steps of its simulation.
        parity, histogram, file_size = publish_quantized(
            path, write, x, simulation, reference, tolerance
        )
    else:
        parity, histogram, file_size = _publish_float_rule(
            prepared.reference, path, write, x, quantize, tolerance, not_simulated
        )
    return ExportReport(
        path=path,
        format=file_format,
        file_size=file_size,
        op_histogram=histogram,
        parity=parity,
        fold_report=prepared.fold_report,
        quantize=quantize,
        details=details or {},
        population=prepared.population,
    )


def _publish_float_rule(model, path, write, x, quantize, tolerance, not_simulated):
    """`publish_checked` under the error model's bound, or the caller's."""
    reference = keras_outputs(model, x)
    if tolerance is None:
        rule, tolerance = ERROR_MODEL, parity_tolerance(model, quantize)
    else:
        rule, tolerance = TOLERANCE, resolve_tolerance(model, tolerance, quantize)
    return publish_checked(
        path,
        write,
        x,
        reference,
        tolerance,
        rule=rule,
        not_simulated=not_simulated,
        model_name=model.name,
    )
