"""Export a Keras model to ONNX through tf2onnx, checked before it is written.

Named `onnx_export` so that `import onnx` inside this package still finds the
ONNX package.

tf2onnx's `from_keras` relies on Keras 2 internals and fails on Keras 3, so the
model is wrapped in a `tf.function` with an explicit input signature (batch
dimension free) and converted with `tf2onnx.convert.from_function`. tf2onnx
1.17 turns tensors the function captures *by value* (e.g. the mean and variance
of a `keras.layers.Normalization` layer, which Keras stores as eager tensors)
into extra graph inputs; they are turned back into initializers here so the
file has exactly one input.

tf2onnx 1.17's `optimize_graph` deep-copies the whole graph, every weight
included, before each optimizer pass (so that a failing pass can be undone)
and drops the copy it replaces. Its nodes and graph point at each other, so
each dropped copy is a reference cycle that only Python's full collection
frees, and that runs after tens of thousands of allocations: on MobileNetV2
at 96×96, the copies of its 26 passes piled up to 0.75 GB. `collecting_cycles`
runs the collector on a clock during the conversion, over the conversion's own
objects only.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
from onnx import numpy_helper

from keras_bn.defaults import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from keras_bn.export.checked_export import export_checked
from keras_bn.export.prepare import (
    PreparedModel,
    input_spec,
    parity_inputs,
    prepare_model,
)
from keras_bn.export.quantized import is_quantized_model, quantize_onnx_weights
from keras_bn.export.report import ExportReport
from keras_bn.staging import validate_destination

# How often cycles are collected during a conversion: one optimizer pass over
# MobileNetV2 takes about 0.1 s and leaves one 40 MB copy behind.
CONVERSION_GC_INTERVAL_S = 0.05


@contextlib.contextmanager
def collecting_cycles(interval_s: float = CONVERSION_GC_INTERVAL_S) -> Iterator[None]:
    """Frees reference cycles made inside the block every `interval_s` seconds.

    A clock, not the collector's allocation counters: a dropped graph copy is
    a few thousand Python objects holding tens of megabytes of NumPy weights,
    so the counters (and CPython's rule of a full collection only once the
    pending objects reach a quarter of the long-lived ones) let dozens pile
    up. Objects that exist on entry are frozen (`gc.freeze`) so each
    collection walks only what the block made; they are unfrozen on exit.
    Freezing is process-wide and `gc.unfreeze` cannot tell our objects from
    anyone else's, so if the caller has frozen objects (`gc.get_freeze_count()
    > 0`) nothing is frozen or unfrozen here: collections then walk more
    objects, but the caller's frozen set is left exactly as it was.
    """
    gc.collect()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    stop = threading.Event()

    def collect() -> None:
        while not stop.wait(interval_s):
            gc.collect()

    collector = threading.Thread(target=collect, name="keras_bn-gc", daemon=True)
    collector.start()
    try:
        yield
    finally:
        stop.set()
        collector.join()
        if freeze:
            gc.unfreeze()
        gc.collect()


def convert_to_onnx(
    model: keras.Model, spec: tf.TensorSpec, opset: int
) -> onnx.ModelProto:
    """The ONNX `ModelProto` of `model`'s inference function, validated."""
    function = tf.function(
        lambda x: model(x, training=False), input_signature=[spec], autograph=False
    )
    concrete = function.get_concrete_function()
    captured = {
        internal.name: external
        for external, internal in concrete.graph.captures
        if external.dtype != tf.resource
    }
    with collecting_cycles():
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=[spec], opset=opset
        )
    graph = proto.graph
    for graph_input in list(graph.input):
        if graph_input.name in captured:
            value = np.asarray(captured[graph_input.name])
            graph.initializer.append(
                numpy_helper.from_array(value, name=graph_input.name)
            )
            graph.input.remove(graph_input)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def to_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    fold: bool = True,
    opset: int = DEFAULT_OPSET,
    inputs: np.ndarray | None = None,
    population_data: Any = None,
    tolerance: float | None = None,
) -> ExportReport:
    """Folds `model`'s BatchNormalization layers and writes an ONNX file.

    The file is converted from a `tf.function` with the model's input signature
    (batch dimension free), validated with `onnx.checker`, written to a hidden
    temporary file next to `path`, run with onnxruntime and compared with the
    *original* Keras model; only if the scale-relative error is within the bound
    of `keras_bn.export.parity_bounds` is it renamed to `path`. The caller's model
    is never modified.

    Args:
        model: A Keras model with one float32 input whose non-batch dimensions
            are known, and one output.
        path: Destination, ending in `.onnx`, in an existing directory. An
            existing file there is replaced only once the new one has passed.
        fold: Fold BatchNormalization layers with
            `keras_bn.folding.fold_batchnorm` first (default). With `False` the
            model is converted as it is.
        opset: ONNX opset, `MIN_OPSET` to `MAX_OPSET` (13 to 18).
        inputs: Float32 inputs for the parity check, batch first. Defaults to
            8 seeded standard-normal samples.
        population_data: Data as `model.fit` takes `x`: the BN statistics
            are re-estimated on it (`keras_bn.with_population_statistics`, on
            a copy; `model` is untouched) before folding, and the file is
            checked against that copy.
        tolerance: The scale-relative bound the file must meet, instead of
            `keras_bn.export.parity_bounds`'. A quantization-aware model's QDQ
            file is judged by the exact int8 gate instead.

    Returns:
        An `ExportReport`: path, file size, op histogram, parity, fold report.

    Raises:
        TypeError: If `model` is not a `keras.Model` or `opset` not an int.
        ValueError: For a bad extension, an opset out of range, or a model with
            several inputs, a non-float32 dtype or an unknown input dimension.
        FileNotFoundError: If the destination directory does not exist.
        ParityError: If the converted file does not match the Keras model; no
            file is left behind.

    Example:

    >>> report = to_onnx(model, "out/model.onnx")  # doctest: +SKIP
    >>> report.count("BatchNormalization")  # doctest: +SKIP
    0
    """
    path = validate_destination(path, ".onnx")
    x = onnx_inputs(model, opset, inputs)
    prepared = prepare_model(model, fold=fold, population_data=population_data)
    return write_onnx(prepared, path, opset, x, tolerance)


def onnx_inputs(
    model: keras.Model, opset: int, inputs: np.ndarray | None
) -> np.ndarray:
    """Checks `opset` and `model`; returns the validated parity inputs.

    Raises:
        TypeError, ValueError: as `to_onnx` (the opset, the model, the inputs).
    """
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"`opset` must be an int. Received: opset={opset!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"`opset` must be between {MIN_OPSET} and {MAX_OPSET} (tf2onnx "
            f"{tf2onnx.__version__}). Received: opset={opset}"
        )
    input_spec(model)
    return parity_inputs(model, inputs)


def write_onnx(
    prepared: PreparedModel,
    path: str,
    opset: int,
    x: np.ndarray,
    tolerance: float | None = None,
) -> ExportReport:
    """Converts the prepared model to a checked ONNX file at `path`."""
    spec = input_spec(prepared.reference)

    def convert(exported: keras.Model):
        proto = convert_to_onnx(exported, spec, opset)
        if is_quantized_model(exported):
            quantize_onnx_weights(proto)  # QDQ ONNX with int8 weights
        return lambda tmp: onnx.save(proto, tmp)

    return export_checked(
        prepared,
        path,
        file_format="onnx",
        convert=convert,
        x=x,
        details={
            "opset": opset,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
        },
        tolerance=tolerance,
    )
