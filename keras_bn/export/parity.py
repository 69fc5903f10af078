"""Run an exported file in its runtime and compare it with the Keras model.

`check_parity` works on any single-input, single-output TFLite or ONNX file,
whoever made it: the format is recognised from the file's content (a TFLite
flatbuffer carries the identifier `TFL3` at byte 4; anything else must parse as
an ONNX `ModelProto` with a graph), never from its name alone. Files with a
fixed batch dimension are run one slice at a time; int8 and uint8 inputs and
outputs are quantized and dequantized with the file's own scale and zero point.

The Keras reference is computed on the CPU (see `error_model`, "Not covered").
"""

from __future__ import annotations

import collections
import os

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
from ai_edge_litert import schema_py_generated as tflite_schema
from ai_edge_litert.interpreter import Interpreter

from keras_bn.export.prepare import input_spec
from keras_bn.export.report import ParityError, ParityReport
from keras_bn.export.staging import staged_file

TFLITE_IDENTIFIER = b"TFL3"
DEFAULT_PARITY_BATCH = 8
DEFAULT_PARITY_SEED = 0

_TFLITE_OP_NAMES = {
    value: name
    for name, value in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}


def detect_format(path: str | os.PathLike) -> str:
    """`"tflite"` or `"onnx"`, recognised from the file's content.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is neither a TFLite flatbuffer nor an ONNX model.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No exported model at {path!r}.")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise ValueError(
            "The file is neither a TFLite flatbuffer (no 'TFL3' identifier) nor "
            f"an ONNX model (it does not parse: {e}). Received: path={path!r}"
        ) from e
    if len(proto.graph.node) == 0 or len(proto.graph.output) == 0:
        raise ValueError(
            "The file is neither a TFLite flatbuffer (no 'TFL3' identifier) nor "
            "an ONNX model (it parses, but holds no graph). "
            f"Received: path={path!r}"
        )
    return "onnx"


def op_histogram(path: str | os.PathLike) -> dict[str, int]:
    """Operator type → count, read from the file (not from a runtime's plan)."""
    path = os.fspath(path)
    if detect_format(path) == "onnx":
        graph = onnx.load(path, load_external_data=False).graph
        return dict(collections.Counter(node.op_type for node in graph.node))
    with open(path, "rb") as f:
        model = tflite_schema.Model.GetRootAs(f.read(), 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Builtin codes above 127 live in BuiltinCode; DeprecatedBuiltinCode
        # holds the older ones (schema v3a), hence the max.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite_schema.BuiltinOperator.CUSTOM:
            codes.append(code.CustomCode().decode())
        else:
            codes.append(_TFLITE_OP_NAMES.get(builtin, str(builtin)))
    histogram = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            histogram[codes[subgraph.Operators(o).OpcodeIndex()]] += 1
    return dict(histogram)


def default_inputs(
    model: keras.Model,
    batch: int = DEFAULT_PARITY_BATCH,
    seed: int = DEFAULT_PARITY_SEED,
) -> np.ndarray:
    """Seeded standard-normal inputs of the model's input shape."""
    spec = input_spec(model)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *spec.shape[1:])).astype(np.float32)


def keras_outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's inference outputs, computed on the CPU in float32."""
    with tf.device("/CPU:0"):
        return np.asarray(model(tf.constant(x), training=False), dtype=np.float32)


def _run_in_slices(run, x: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    if fixed_batch is None or fixed_batch == x.shape[0]:
        return run(x)
    if x.shape[0] % fixed_batch:
        raise ValueError(
            f"The file has a fixed batch size of {fixed_batch}, which does not "
            f"divide the number of inputs. Received: inputs of shape {x.shape}"
        )
    return np.concatenate(
        [run(x[i : i + fixed_batch]) for i in range(0, x.shape[0], fixed_batch)]
    )


def run_tflite(path: str, x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Runs a single-input, single-output TFLite file on `x` with LiteRT."""
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    inputs, outputs = (
        interpreter.get_input_details(),
        interpreter.get_output_details(),
    )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Parity checks support files with one input and one output. "
            f"Received: {len(inputs)} inputs and {len(outputs)} outputs in {path!r}"
        )
    inp, out = inputs[0], outputs[0]
    signature = inp.get("shape_signature", inp["shape"])
    if tuple(signature[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"The file expects inputs of shape {tuple(signature)}. "
            f"Received: inputs of shape {x.shape}"
        )
    fixed_batch = None if signature[0] == -1 else int(signature[0])

    def run(chunk):
        if tuple(interpreter.get_input_details()[0]["shape"]) != chunk.shape:
            interpreter.resize_tensor_input(inp["index"], chunk.shape)
        interpreter.allocate_tensors()
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zero_point = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            chunk = np.clip(np.round(chunk / scale) + zero_point, info.min, info.max)
        interpreter.set_tensor(inp["index"], chunk.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        return np.array(y, dtype=np.float32)

    return _run_in_slices(run, x, fixed_batch)


def onnx_session(
    path: str, optimize: bool = True, num_threads: int | None = None
) -> ort.InferenceSession:
    """An onnxruntime CPU session, with graph optimizations all on or all off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path: str, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    """Runs a single-input, single-output ONNX file on `x` with onnxruntime."""
    session = onnx_session(path, optimize=optimize)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Parity checks support files with one input and one output. "
            f"Received: {len(inputs)} inputs ({[i.name for i in inputs]}) and "
            f"{len(outputs)} outputs in {path!r}"
        )
    shape = inputs[0].shape
    if len(shape) != x.ndim or any(
        isinstance(d, int) and d != s
        for d, s in zip(shape[1:], x.shape[1:], strict=True)
    ):
        raise ValueError(
            f"The file expects inputs of shape {tuple(shape)}. "
            f"Received: inputs of shape {x.shape}"
        )
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    name = inputs[0].name
    return _run_in_slices(
        lambda chunk: np.asarray(session.run(None, {name: chunk})[0], np.float32),
        x,
        fixed_batch,
    )


def compare(
    path: str,
    file_format: str,
    input_shape: tuple[int, ...],
    reference: np.ndarray,
    outputs: np.ndarray,
    tolerance: float | None = None,
) -> ParityReport:
    """Scale-relative comparison of a file's outputs with the Keras outputs."""
    if outputs.shape != reference.shape:
        raise ValueError(
            f"The file's output shape {outputs.shape} differs from the Keras "
            f"model's {reference.shape}. Received: path={path!r}"
        )
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else np.inf)
    top1 = None
    if reference.ndim == 2 and reference.shape[1] > 1:
        top1 = float(np.mean(reference.argmax(1) == outputs.argmax(1)))
    return ParityReport(
        path=path,
        format=file_format,
        runtime="litert" if file_format == "tflite" else "onnxruntime",
        input_shape=tuple(int(d) for d in input_shape),
        max_abs_error=max_abs,
        max_rel_error=float(max_rel),
        reference_scale=scale,
        top1_agreement=top1,
        tolerance=tolerance,
    )


def publish_checked(
    path: str,
    fmt: str,
    write,
    x: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
) -> tuple[ParityReport, dict[str, int]]:
    """Writes a file next to `path`, checks it, and only then moves it in place.

    Args:
        path: the destination.
        fmt: `"tflite"` or `"onnx"`; picks the runtime.
        write: called with the temporary path; writes the file there.
        x: the inputs to run.
        reference: the Keras model's outputs on `x`.
        tolerance: the scale-relative bound the file must meet.

    Returns:
        The `ParityReport` and the file's op histogram.

    Raises:
        ParityError: the file disagrees with the model; nothing is left behind.
    """
    run = run_tflite if fmt == "tflite" else run_onnx
    with staged_file(path) as tmp:
        write(tmp)
        parity = compare(path, fmt, x.shape, reference, run(tmp, x), tolerance)
        if not parity.passed:
            raise ParityError(parity, path)
        histogram = op_histogram(tmp)
    return parity, histogram


def check_parity(
    model: keras.Model,
    exported_path: str | os.PathLike,
    inputs: np.ndarray | None = None,
) -> ParityReport:
    """Runs an exported file and measures how far it is from `model`.

    The file may come from anywhere (this package, `tf.lite`, `torch.onnx`,
    ...); it must take the model's input layout. Nothing is raised for a large
    error: the report says how large it is, and `keras_bn.export.error_model`
    says how large it may be.

    Args:
        model: The Keras model the file should reproduce.
        exported_path: A `.tflite` or `.onnx` file, recognised by content.
        inputs: Float32 array, batch first. Defaults to 8 seeded
            standard-normal samples of the model's input shape.

    Returns:
        A `ParityReport` with the maximum absolute and scale-relative error.

    Raises:
        FileNotFoundError: If `exported_path` does not exist.
        ValueError: If the file is not a TFLite or ONNX model, or its input or
            output shape does not match the model's.

    Example:

    >>> report = check_parity(model, "model.tflite")  # doctest: +SKIP
    >>> report.max_rel_error < 1e-4  # doctest: +SKIP
    True
    """
    path = os.fspath(exported_path)
    file_format = detect_format(path)
    x = default_inputs(model) if inputs is None else _as_inputs(model, inputs)
    reference = keras_outputs(model, x)
    run = run_tflite if file_format == "tflite" else run_onnx
    return compare(path, file_format, x.shape, reference, run(path, x))


def _as_inputs(model: keras.Model, inputs) -> np.ndarray:
    spec = input_spec(model)
    x = np.asarray(inputs)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"`inputs` must be floating point. Received: inputs of dtype {x.dtype}"
        )
    if tuple(x.shape[1:]) != tuple(spec.shape[1:]) or x.shape[0] == 0:
        raise ValueError(
            f"`inputs` must have shape (batch, {', '.join(map(str, spec.shape[1:]))}) "
            f"with batch ≥ 1. Received: inputs of shape {x.shape}"
        )
    return x.astype(np.float32)
