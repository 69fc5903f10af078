"""Which files an export writes and which data calibrates or checks them.

The command line and any script that exports "the usual set" of files go
through `export_files`, so the naming (`<stem>.tflite`, `<stem>_int8.tflite`,
`<stem>.onnx`) and the data rule are decided once: float files are checked
on the evaluation split; int8 is calibrated on the calibration split (its
post-training simulation, judged by the exact gate) and checked on data it
did not see, the evaluation split or, without one, a
held-out part of the calibration data (`keras_bn.export.prepare.
split_int8_data`, the rule `check_parity(..., calibration=)` applies too).

A multi-file export checks everything before it writes anything, and
publishes all its files or none.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_bn.defaults import DEFAULT_OPSET, EXPORT_FORMATS
from keras_bn.export.onnx_export import onnx_inputs, write_onnx
from keras_bn.export.prepare import prepare_model
from keras_bn.export.report import ExportReport
from keras_bn.export.tflite import tflite_inputs, write_tflite
from keras_bn.staging import published_together, validate_destination


def export_path(
    directory: str | os.PathLike,
    stem: str,
    file_format: str,
    quantize: str | None = None,
) -> Path:
    """`directory/<stem>[_<quantize>].<file_format>`.

    Example:

    >>> export_path("out", "digits_cnn", "tflite", "int8").as_posix()
    'out/digits_cnn_int8.tflite'
    """
    if file_format not in EXPORT_FORMATS:
        raise ValueError(
            f"`file_format` must be one of {EXPORT_FORMATS}. "
            f"Received: file_format={file_format!r}"
        )
    suffix = f"_{quantize}" if quantize else ""
    return Path(directory) / f"{stem}{suffix}.{file_format}"


@dataclasses.dataclass(frozen=True)
class PlannedFile:
    """One file of an export, every input of it checked: where, and on what.

    Attributes:
        file_format: `"tflite"` or `"onnx"`.
        path: The validated destination.
        x: The validated parity inputs.
        calibration: The int8 calibration inputs (TFLite int8 only).
    """

    file_format: str
    path: str
    x: np.ndarray
    calibration: np.ndarray | None = None

    def write(
        self, prepared, quantize: str | None, opset: int, tolerance: float | None = None
    ) -> ExportReport:
        """Converts, checks and stages this file (`export_checked`)."""
        if self.file_format == "tflite":
            return write_tflite(
                prepared, self.path, quantize, self.calibration, self.x, tolerance
            )
        return write_onnx(prepared, self.path, opset, self.x, tolerance)


def plan_files(
    model: keras.Model,
    directory: str | os.PathLike,
    stem: str,
    formats: Sequence[str],
    quantize: str | None,
    calibration: np.ndarray | None,
    evaluation: np.ndarray | None,
    opset: int,
) -> list[PlannedFile]:
    """Checks every format's destination and inputs; converts nothing.

    Raises:
        ValueError: For an unknown format, `quantize` with ONNX only, or any
            input check of `to_tflite` / `to_onnx` (opset, shapes, data).
    """
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"`formats` must be a non-empty subset of {EXPORT_FORMATS}. "
            f"Received: formats={list(formats)}"
        )
    if quantize and "tflite" not in formats:
        raise ValueError(
            f"`quantize` applies to TFLite only. Received: quantize={quantize!r} "
            f"with formats={list(formats)}"
        )
    plans = []
    for file_format in formats:
        if file_format == "tflite":
            path = export_path(directory, stem, "tflite", quantize)
            int8 = quantize == "int8"
            int8_calibration, x = tflite_inputs(
                model, quantize, calibration if int8 else None, evaluation
            )
        else:
            path = export_path(directory, stem, "onnx")
            int8_calibration, x = None, onnx_inputs(model, opset, evaluation)
        path = validate_destination(path, f".{file_format}")
        plans.append(PlannedFile(file_format, path, x, int8_calibration))
    return plans


def export_files(
    model: keras.Model,
    directory: str | os.PathLike,
    *,
    stem: str,
    formats: Sequence[str] = EXPORT_FORMATS,
    quantize: str | None = None,
    calibration: np.ndarray | None = None,
    evaluation: np.ndarray | None = None,
    fold: bool = True,
    opset: int = DEFAULT_OPSET,
    population_data: Any = None,
    on_format: Callable[[str], None] | None = None,
    tolerance: float | None = None,
) -> list[ExportReport]:
    """Exports `model` to each format in `directory`: all files, or none.

    Every input check of every format (destinations, opset, data shapes)
    runs before the first conversion. Each file is then converted and
    parity-checked under a temporary name, and the files are moved into
    place together once all of them passed
    (`keras_bn.staging.published_together`): a failure of any leaves every
    file of `directory` as it was.

    Args:
        model: The Keras model.
        directory: An existing directory.
        stem: The files' base name (see `export_path`).
        formats: Any of `"tflite"`, `"onnx"`, in the order to write them.
        quantize: TFLite only: `None`, `"float16"` or `"int8"`.
        calibration: Typical inputs (`x_train`); calibrate int8 (required
            for it).
        evaluation: Parity inputs (`x_test`; default: seeded normal for
            float files, a held-out part of `calibration` for int8). May be
            the same array as `calibration`.
        fold: Fold BatchNormalization layers first.
        opset: The ONNX opset.
        population_data: Batches on which the population statistics are
            re-estimated (on a copy) before folding; estimated and folded once,
            every format is converted from the same folded model.
        on_format: Called with each format as its export starts (progress).
        tolerance: The scale-relative bound every float file must meet
            instead of `keras_bn.export.parity_bounds`'; for an int8 file of
            a float model, a bound on its error against the float model,
            judged with the exact gate against its post-training simulation
            (`to_tflite`); a quantization-aware model's files are judged by
            the exact gate alone.

    Returns:
        One `ExportReport` per format.

    Raises:
        ValueError: For an unknown format, `quantize` with ONNX only, or the
            errors of `to_tflite` / `to_onnx`; nothing is written.
        keras_bn.export.ParityError: A file does not match; none is written.
    """
    plans = plan_files(
        model, directory, stem, formats, quantize, calibration, evaluation, opset
    )
    # Recalibrate and fold once, for every format.
    prepared = prepare_model(model, fold=fold, population_data=population_data)
    reports = []
    with published_together():
        for plan in plans:
            if on_format is not None:
                on_format(plan.file_format)
            reports.append(plan.write(prepared, quantize, opset, tolerance))
    return reports
