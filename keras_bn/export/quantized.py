"""Int8 files of quantization-aware models: converted from their own ranges, judged exactly.

A model from `keras_bn.quantization.quantize_model` carries its int8
rounding in the graph (`tf.quantization.fake_quant_with_min_max_vars` on
activations, weights already on their int8 grid), so:

- TFLite: `TFLiteConverter` with `optimizations=[DEFAULT]` and no
  representative data writes a fully integer file; nothing is calibrated.
  `tf.lite.OpsSet.TFLITE_BUILTINS_INT8` is not set because TF 2.21 then
  demands a representative dataset; `float_ops` checks the result instead.
- ONNX: tf2onnx turns each activation fake quantization into a
  QuantizeLinear/DequantizeLinear (QDQ) pair and writes the rounded weights
  as float constants; `quantize_onnx_weights` stores each as int8 with its
  scale behind a DequantizeLinear, so that onnxruntime's QDQ fusion runs
  integer kernels on exactly the model's grid (left float, onnxruntime
  requantizes them itself and the outputs drift by two steps).

The file is judged by the exact gate (`keras_bn.quantization.gate`), not by
a float error bound; `publish_quantized` is `publish_checked` with that gate.
No Batch Normalization is folded: the quantized model's inference path holds
none (its BN layers only train).

A float model's post-training int8 file takes the same road:
`post_training_simulation` is `quantize_model` per channel with its ranges
calibrated on the representative data and no training step, the simulation
of the post-training file; that model is converted and the file judged
against it. Where `quantize_model` has no simulation for the model (a layer
without int8 rules, nothing to quantize), the reason is returned and the
exporter falls back to TFLite's own calibration under a float bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import warnings

import keras
import numpy as np
import onnx
import tensorflow as tf
from onnx import helper, numpy_helper

from keras_bn.export import runtimes
from keras_bn.export.op_counts import op_histogram
from keras_bn.export.parity import compare, keras_outputs
from keras_bn.export.report import EXACT_GATE, ParityError, ParityReport
from keras_bn.quantization import (
    check_tflite_int8,
    is_quantized_model,
    quantize_model,
    sync_input_steps,
)
from keras_bn.quantization.gate import allowed_steps, output_step, step_report
from keras_bn.quantization.graph import plan_quantization
from keras_bn.quantization.plans import BlockOptions
from keras_bn.staging import staged_file

__all__ = [
    "INTEGER_EXEMPT_OPS",
    "check_quantize_for",
    "convert_quantized_tflite",
    "float_ops",
    "is_quantized_model",
    "post_training_simulation",
    "publish_quantized",
    "quantize_onnx_weights",
    "sync_input_steps",
]

#: TFLite ops that may have float tensors in a fully integer file: the entry
#: and exit conversions, and shape arithmetic.
INTEGER_EXEMPT_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "SHAPE", "RESHAPE"})
#: The weight granularity of a float model's post-training int8 file, as
#: TFLite's converter quantizes weights (per output channel).
POST_TRAINING_WEIGHTS = "per_channel"
#: `ParityReport.simulation` of each kind of int8 file.
QAT_SIMULATION = "quantization-aware model"
POST_TRAINING = "post-training simulation"
#: ONNX ops whose second input is a weight, and the axis of its output channels.
ONNX_WEIGHT_AXES = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}


def check_quantize_for(model: keras.Model, quantize: str | None) -> str | None:
    """The quantization a file of `model` gets: `"int8"` for a quantization-aware one.

    Raises:
        ValueError: a quantization-aware model asked for float16.
    """
    if not is_quantized_model(model):
        return quantize
    if quantize not in (None, "int8"):
        raise ValueError(
            f"Model '{model.name}' is quantization-aware: its files are int8 "
            f"from its own ranges. Received: quantize={quantize!r}"
        )
    return "int8"


def post_training_simulation(
    model: keras.Model, calibration: np.ndarray
) -> tuple[keras.Model | None, str | None]:
    """The simulation of a float `model`'s post-training int8 file, or why there is none.

    `quantize_model` per channel (as TFLite's converter quantizes weights)
    with its activation ranges calibrated on `calibration` and no training
    step: it rounds what the post-training file rounds, where the file does.

    Args:
        model: The float model to quantize (folded or not: the simulation
            folds its BN layers itself).
        calibration: The representative inputs, batch first.

    Returns:
        `(simulation, None)`, or `(None, reason)` when `quantize_model` has no
        simulation for `model`: the planning error naming the layer (no int8
        rules for it, nothing to quantize, not a Functional/Sequential model)
        or the gate's (an output no quantizer rounds). Only those are caught;
        any other error propagates.
    """
    try:
        plan_quantization(model, BlockOptions(POST_TRAINING_WEIGHTS))
    except (TypeError, ValueError) as error:
        return None, str(error)
    simulation = quantize_model(
        model, weights=POST_TRAINING_WEIGHTS, calibration_data=calibration
    )
    try:
        output_step(simulation)
    except ValueError as error:
        return None, str(error)
    return simulation, None


def publish_quantized(
    path: str,
    write,
    x: np.ndarray,
    simulation: keras.Model,
    reference: keras.Model | None = None,
    tolerance: float | None = None,
) -> tuple[ParityReport, dict[str, int], int]:
    """Writes an int8 file next to `path`; publishes it if the exact gate passes.

    Args:
        path: The destination.
        write: Called with the temporary path; writes the file there.
        x: The inputs to run.
        simulation: The quantized model the file must match within the gate:
            a quantization-aware model, or `post_training_simulation`'s.
        reference: The model the caller gave, for the reported figures
            (`max_rel_error`, `top1_agreement`): a float model's, for its
            post-training file. `None` is `simulation` itself (QAT).
        tolerance: A bound on the scale-relative error against `reference`,
            judged with the gate; `None` judges by the gate alone.

    Returns:
        The `ParityReport` (scale-relative figures and the step histogram),
        the file's op histogram and its size in bytes.

    Raises:
        ParityError: the file is not within the gate (or the tolerance);
            nothing is left behind.
    """
    simulated = keras_outputs(simulation, x)
    expected = simulated if reference is None else keras_outputs(reference, x)
    kind = QAT_SIMULATION if reference is None else POST_TRAINING
    with staged_file(path) as tmp:
        write(tmp)
        file_format = runtimes.detect_format(tmp)
        outputs = runtimes.run_file(tmp, x)
        parity = compare(path, file_format, x.shape, expected, outputs, tolerance)
        steps = step_report(
            simulated,
            outputs,
            output_step(simulation),
            allowed_steps(simulation, simulated),
        )
        parity = dataclasses.replace(
            parity, steps=steps.to_dict(), rule=EXACT_GATE, simulation=kind
        )
        if not parity.passed:
            raise ParityError(parity, path, (reference or simulation).name)
        histogram = op_histogram(tmp)
        file_size = os.path.getsize(tmp)
    return parity, histogram, file_size


def convert_quantized_tflite(model: keras.Model, int8_io: bool = False) -> bytes:
    """The fully integer TFLite flatbuffer of a quantization-aware `model`.

    Args:
        model: a model from `quantize_model`, with trained or calibrated ranges.
        int8_io: int8 input and output tensors (the file's own scales);
            `False` keeps float32 ones (the file quantizes at its entry).

    Raises:
        ValueError: a layer TFLite runs in float32 only (a 3D convolution),
            or an op was left in float (a layer without a range).
    """
    check_tflite_int8(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # The input's range comes from the model's own input quantizer.
        warnings.filterwarnings(
            "ignore", message="Statistics for quantized inputs were expected"
        )
        flatbuffer = converter.convert()
    left = float_ops(flatbuffer)
    if left:
        raise ValueError(
            f"Model '{model.name}': the TFLite converter left ops in float, so the "
            f"file would not be fully integer. Received: float ops {left}"
        )
    return flatbuffer


def float_ops(flatbuffer: bytes) -> list[str]:
    """The ops of a TFLite file that compute in float (none in a fully integer file)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in INTEGER_EXEMPT_OPS:
            continue
        dtypes = {
            tensors[i]["dtype"] for i in (*op["inputs"], *op["outputs"]) if i >= 0
        }
        if np.float32 in dtypes or np.float16 in dtypes:
            found.append(op["op_name"])
    return found


def quantize_onnx_weights(proto: onnx.ModelProto) -> int:
    """Stores every on-grid float weight as int8 behind a DequantizeLinear.

    A weight is stored so only if it is exactly on a symmetric int8 grid,
    per output channel (a per-tensor grid is one too); anything else is left
    as it is. Returns how many weights were converted.
    """
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    converted = 0
    for node in list(graph.node):
        axis = ONNX_WEIGHT_AXES.get(node.op_type)
        if axis is None or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        grid = _int8_grid(weight, axis)
        if grid is None:
            continue
        levels, scale = grid
        name = node.input[1]
        graph.initializer.extend(
            [
                numpy_helper.from_array(levels, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{name}_zero"),
            ]
        )
        dequantize = helper.make_node(
            "DequantizeLinear",
            [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
            [f"{name}_dequantized"],
            **({"axis": axis} if scale.ndim else {}),
        )
        graph.node.insert(list(graph.node).index(node), dequantize)
        node.input[1] = f"{name}_dequantized"
        converted += 1
    used = {i for n in graph.node for i in n.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return converted


def _int8_grid(weight: np.ndarray, axis: int):
    """`(int8 levels, scale)` if `weight` lies on a symmetric int8 grid, else `None`.

    The scale is one per output channel (along `axis`) or, for a per-tensor
    grid, one scalar.
    """
    if weight.dtype != np.float32 or weight.ndim < 2:
        return None
    weight64 = weight.astype(np.float64)
    moved = np.moveaxis(weight64, axis, 0).reshape(weight.shape[axis], -1)
    for largest in (np.abs(moved).max(axis=1), np.abs(weight64).max()):
        scale = np.where(largest > 0, largest / 127.0, 1.0)
        shaped = scale if np.ndim(scale) == 0 else _along(scale, axis, weight.ndim)
        levels = np.rint(weight64 / shaped)
        # On the grid: every weight within float32 rounding of its level.
        if np.max(np.abs(levels * shaped - weight64)) <= 1e-5 * np.max(largest):
            return levels.astype(np.int8), np.asarray(scale, np.float32)
    return None


def _along(vector, axis, rank):
    shape = [1] * rank
    shape[axis] = -1
    return np.reshape(vector, shape)
