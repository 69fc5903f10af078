"""`keras_bn.export.runtimes`: a file runs as its own runtime runs it, loaded once."""

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_bn.export import load_runtime, run_file, to_onnx, to_tflite
from tests.helpers.export import build_pattern, pattern_inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("runtimes")
    model = build_pattern("conv2d_bn")
    return model, {
        "tflite": to_tflite(model, out / "m.tflite").path,
        "onnx": to_onnx(model, out / "m.onnx").path,
    }


def litert_outputs(path, x):
    interpreter = Interpreter(model_path=path)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def onnxruntime_outputs(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_outputs_are_the_runtimes_own(files, fmt):
    model, paths = files
    x = pattern_inputs(model, batch=5)
    direct = (litert_outputs if fmt == "tflite" else onnxruntime_outputs)(paths[fmt], x)
    runtime = load_runtime(paths[fmt])
    assert runtime.format == fmt
    np.testing.assert_array_equal(runtime(x), direct)
    np.testing.assert_array_equal(run_file(paths[fmt], x), direct)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_one_load_runs_several_batch_sizes_and_times_them(files, fmt):
    model, paths = files
    runtime = load_runtime(paths[fmt])
    x = pattern_inputs(model, batch=4)
    np.testing.assert_array_equal(runtime(x[:1]), runtime(x)[:1])
    assert runtime.latency_ms(x[:1], repeats=3) > 0
    # The bound call ran x[:1]; a full batch afterwards still works.
    assert runtime(x).shape[0] == 4


def test_inputs_of_another_shape_are_rejected_with_the_expected_shape(files):
    _, paths = files
    runtime = load_runtime(paths["onnx"])
    with pytest.raises(ValueError, match="expects inputs of shape"):
        runtime(np.zeros((2, 5, 5, 3), np.float32))
