"""Int8 TFLite and QDQ ONNX files of QAT models, judged by the exact gate."""

import collections

import keras
import numpy as np
import onnx
import pytest

import keras_bn
from keras_bn.export import BATCHNORM_OP_TYPES, load_runtime
from keras_bn.export.quantized import (
    convert_quantized_onnx,
    convert_quantized_tflite,
    float_ops,
)
from keras_bn.quantization import quantize_model
from keras_bn.quantization.gate import MAX_STEPS, output_step, step_report
from tests.helpers.folding import set_statistics
from tests.quantization.test_quantize_model import (
    residual_concat_model,
    sequential_model,
)


def depthwise_dense_model():
    """Depthwise-BN-ReLU6 then a Dense-BN-ReLU head and Dense logits (no softmax)."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.DepthwiseConv2D(3, use_bias=False)(inputs)
    x = keras_bn.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8)(x)
    x = keras_bn.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


MODELS = {
    "sequential_softmax": sequential_model,
    "residual_concat": residual_concat_model,
    "depthwise_dense": depthwise_dense_model,
}


def trained_qat(factory, weights, rng):
    model = factory()
    set_statistics(model, rng)
    shape = model.input_shape[1:]
    x = rng.normal(size=(48, *shape)).astype("float32")
    qat = quantize_model(model, weights=weights, calibration_data=x)
    qat.compile("adam", "mse")
    y = rng.normal(size=(48, *model.output_shape[1:]))
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    return qat, rng.normal(size=(32, *shape)).astype("float32")


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("residual_concat", "per_channel"),
        ("residual_concat", "per_tensor"),
        ("sequential_softmax", "per_channel"),
        ("depthwise_dense", "per_tensor"),
    ],
)
def test_tflite_and_onnx_files_are_the_simulation(name, weights, rng, tmp_path):
    qat, x = trained_qat(MODELS[name], weights, rng)
    simulated = qat(x, training=False).numpy()
    step = output_step(qat)
    flatbuffer = convert_quantized_tflite(qat)
    assert float_ops(flatbuffer) == []
    (tmp_path / "m.tflite").write_bytes(flatbuffer)
    proto = convert_quantized_onnx(qat, 17)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert not BATCHNORM_OP_TYPES & set(ops)
    assert (
        ops["QuantizeLinear"] >= 2 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    )
    onnx.save(proto, tmp_path / "m.onnx")
    for suffix in ("tflite", "onnx"):
        report = step_report(simulated, load_runtime(tmp_path / f"m.{suffix}")(x), step)
        assert report.passed, f"{suffix}: {report.describe()}"
        assert report.max_steps <= MAX_STEPS


def test_int8_input_and_output(rng, tmp_path):
    qat, x = trained_qat(depthwise_dense_model, "per_channel", rng)
    path = tmp_path / "m.tflite"
    path.write_bytes(convert_quantized_tflite(qat, int8_io=True))
    runtime = load_runtime(path)
    assert runtime.input["dtype"] == np.int8 and runtime.output["dtype"] == np.int8
    report = step_report(qat(x, training=False).numpy(), runtime(x), output_step(qat))
    assert report.passed, report.describe()


def test_gate_catches_a_wrong_scale(rng):
    qat, x = trained_qat(depthwise_dense_model, "per_channel", rng)
    simulated = qat(x, training=False).numpy()
    step = output_step(qat)
    assert not step_report(simulated, simulated * 1.05, step).passed
    assert step_report(simulated, simulated + step, step).passed
