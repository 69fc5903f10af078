"""Load, run and time an exported `.tflite` or `.onnx` file in its own runtime.

This is the one place that knows how to execute an exported file: the parity
check, the demo, the benchmarks and the recipes all go through it, so a file
is run the same way whoever asks. The format is recognised from the file's
content (a TFLite flatbuffer carries the identifier `TFL3` at byte 4; anything
else must parse as an ONNX `ModelProto` with a graph), never from its name.

`load_runtime` returns a `Runtime`: calling it runs float32 inputs through the
file, quantizing int8/uint8 inputs and dequantizing outputs with the file's own
scale and zero point, one slice at a time for a file with a fixed batch size.
`Runtime.bind` prepares one input once so that `Runtime.latency_ms` times the
runtime's own work, not the conversions around it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable

import numpy as np

from keras_bn.timing import median_ms

TFLITE_IDENTIFIER = b"TFL3"
RUNTIME_NAMES = {"tflite": "litert", "onnx": "onnxruntime"}


def detect_format(path: str | os.PathLike) -> str:
    """`"tflite"` or `"onnx"`, recognised from the file's content.

    Args:
        path: The exported file.

    Returns:
        `"tflite"` or `"onnx"`.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is neither a TFLite flatbuffer nor an ONNX model.
    """
    import onnx

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


class Runtime(abc.ABC):
    """A loaded single-input, single-output exported file, ready to run.

    Subclasses load one format; use `load_runtime` to get the right one.

    Attributes:
        path: The file.
        format: `"tflite"` or `"onnx"`.
        name: The runtime (`"litert"` or `"onnxruntime"`).
        input_shape: The file's input shape; `None` or -1 for a free dimension.
    """

    format: str = ""

    def __init__(self, path: str):
        self.path = path
        self.name = RUNTIME_NAMES[self.format]
        self.input_shape: tuple = ()

    @property
    def fixed_batch(self) -> int | None:
        first = self.input_shape[0]
        return first if isinstance(first, int) and first > 0 else None

    def check_inputs(self, x: np.ndarray) -> None:
        """Raises `ValueError` unless `x` fits the file's input shape."""
        shape = self.input_shape
        if len(shape) != x.ndim or any(
            isinstance(d, int) and d > 0 and d != s
            for d, s in zip(shape[1:], x.shape[1:], strict=True)
        ):
            raise ValueError(
                f"The file expects inputs of shape {tuple(shape)}. "
                f"Received: inputs of shape {x.shape}"
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The file's float32 outputs for the float32 inputs `x`, batch first."""
        x = np.asarray(x, np.float32)
        self.check_inputs(x)
        fixed = self.fixed_batch
        if fixed is None or fixed == x.shape[0]:
            return self.bind(x)(finish=True)
        if x.shape[0] % fixed:
            raise ValueError(
                f"The file has a fixed batch size of {fixed}, which does not "
                f"divide the number of inputs. Received: inputs of shape {x.shape}"
            )
        return np.concatenate(
            [self.bind(x[i : i + fixed])(finish=True) for i in range(0, len(x), fixed)]
        )

    @abc.abstractmethod
    def bind(self, x: np.ndarray) -> Callable[..., object]:
        """A call that runs the prepared inputs `x`.

        `call()` only invokes the runtime (what latency measures);
        `call(finish=True)` also returns the dequantized float32 outputs.
        """

    def latency_ms(self, x: np.ndarray, *, repeats: int, warmup: int = 2) -> float:
        """Median milliseconds of one run on `x` (see `keras_bn.timing.median_ms`)."""
        return median_ms(
            self.bind(np.asarray(x, np.float32)), repeats=repeats, warmup=warmup
        )


class TFLiteRuntime(Runtime):
    """A `.tflite` file in LiteRT's interpreter (XNNPACK)."""

    format = "tflite"

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(path)
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        check_one_input_one_output(path, len(inputs), len(outputs), inputs)
        self.input, self.output = inputs[0], outputs[0]
        signature = self.input.get("shape_signature", self.input["shape"])
        self.input_shape = tuple(int(d) for d in signature)

    def bind(self, x: np.ndarray) -> Callable[..., object]:
        interpreter, inp, out = self.interpreter, self.input, self.output
        if tuple(interpreter.get_input_details()[0]["shape"]) != x.shape:
            interpreter.resize_tensor_input(inp["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], quantize(x, inp))

        def call(finish: bool = False):
            interpreter.invoke()
            if finish:
                return dequantize(interpreter.get_tensor(out["index"]), out)
            return None

        return call


class OnnxRuntime(Runtime):
    """An `.onnx` file in an onnxruntime CPU session."""

    format = "onnx"

    def __init__(
        self, path: str, optimize: bool = True, num_threads: int | None = None
    ):
        super().__init__(path)
        self.session = onnx_session(path, optimize=optimize, num_threads=num_threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = [i.name for i in inputs]
        check_one_input_one_output(path, len(inputs), len(outputs), names)
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)

    def bind(self, x: np.ndarray) -> Callable[..., object]:
        session, feed = self.session, {self.input_name: x}

        def call(finish: bool = False):
            y = session.run(None, feed)[0]
            return np.asarray(y, np.float32) if finish else None

        return call


def check_one_input_one_output(path, n_inputs: int, n_outputs: int, inputs) -> None:
    """Raises `ValueError` unless the file has exactly one input and one output."""
    if n_inputs != 1 or n_outputs != 1:
        raise ValueError(
            "Only files with one input and one output can be run. "
            f"Received: {n_inputs} inputs ({inputs}) and {n_outputs} outputs "
            f"in {path!r}"
        )


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """`x` in the dtype of a TFLite tensor, quantized with its scale and zero point."""
    dtype = detail["dtype"]
    if dtype in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
    return np.asarray(x).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """A TFLite tensor's values as float32, dequantized if it is int8 or uint8."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        y = (y.astype(np.float32) - zero_point) * scale
    return np.array(y, dtype=np.float32)


def onnx_session(path: str, optimize: bool = True, num_threads: int | None = None):
    """An onnxruntime CPU session, with graph optimizations all on or all off.

    Many ONNX consumers do not fuse, hence `optimize=False` to measure them.
    """
    import onnxruntime as ort

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


def load_runtime(
    path: str | os.PathLike,
    *,
    optimize: bool = True,
    num_threads: int | None = None,
) -> Runtime:
    """Loads `path` in its runtime, recognising the format from the content.

    Args:
        path: A `.tflite` or `.onnx` file with one input and one output.
        optimize: ONNX only: onnxruntime's graph optimizations all on (default)
            or all off.
        num_threads: Runtime threads (default: the runtime's choice).

    Returns:
        A `Runtime`: `runtime(x)` returns float32 outputs,
        `runtime.latency_ms(x, repeats=...)` the median time of one call.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is neither format, or has several inputs or
            outputs.

    Example:

    >>> runtime = load_runtime("model.tflite")  # doctest: +SKIP
    >>> y = runtime(x)  # doctest: +SKIP
    >>> ms = runtime.latency_ms(x[:1], repeats=50)  # doctest: +SKIP
    """
    path = os.fspath(path)
    if detect_format(path) == "tflite":
        return TFLiteRuntime(path, num_threads=num_threads)
    return OnnxRuntime(path, optimize=optimize, num_threads=num_threads)


def run_file(path: str | os.PathLike, x: np.ndarray, **options) -> np.ndarray:
    """Runs `x` through the file at `path` once (`load_runtime(path)(x)`)."""
    return load_runtime(path, **options)(x)
