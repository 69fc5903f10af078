"""Int8 TFLite and QDQ ONNX files of QAT models, judged by the exact gate."""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.export import (
    ParityError,
    load_runtime,
    to_tflite,
)
from keras_bn.export.quantized import convert_quantized_tflite
from keras_bn.quantization import sync_input_steps
from keras_bn.quantization.gate import (
    MAX_STEPS,
    SATURATING_OUTPUT_BOUNDS,
    allowed_steps,
    output_step,
    step_report,
)
from tests.helpers.folding import set_statistics
from tests.helpers.qat_files import judge_int8_files, trained_qat
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


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


SATURATING = {
    "softmax": softmax,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
}

MODELS = {
    "sequential_softmax": sequential_model,
    "residual_concat": residual_concat_model,
    "depthwise_dense": depthwise_dense_model,
}


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
    judge_int8_files(qat, x, tmp_path)


def test_int8_input_and_output(rng, tmp_path):
    qat, x = trained_qat(depthwise_dense_model, "per_channel", rng)
    path = tmp_path / "m.tflite"
    path.write_bytes(convert_quantized_tflite(qat, int8_io=True))
    runtime = load_runtime(path)
    assert runtime.input["dtype"] == np.int8 and runtime.output["dtype"] == np.int8
    sync_input_steps(qat)  # after `fit`, as the exporters do
    report = step_report(qat(x, training=False).numpy(), runtime(x), output_step(qat))
    assert report.passed, report.describe()


def test_a_file_off_its_simulation_is_refused(rng, tmp_path, monkeypatch):
    qat, x = trained_qat(depthwise_dense_model, "per_channel", rng)
    # A file converted before the head's kernel changed by 10%, as a wrong
    # weight scale would: the gate names it, nothing is written.
    flatbuffer = convert_quantized_tflite(qat)
    kernel = qat.layers[-1].linear.kernel
    kernel.assign(kernel.numpy() * 1.1)
    import keras_bn.export.tflite as tflite_module

    monkeypatch.setattr(
        tflite_module, "convert_quantized_tflite", lambda model: flatbuffer
    )
    with pytest.raises(ParityError, match="quantization-aware model simulates"):
        to_tflite(qat, tmp_path / "m.tflite", inputs=x)
    assert not (tmp_path / "m.tflite").exists()


def test_gate_catches_a_wrong_scale(rng):
    qat, x = trained_qat(depthwise_dense_model, "per_channel", rng)
    simulated = qat(x, training=False).numpy()
    step = output_step(qat)
    assert not step_report(simulated, simulated * 1.05, step).passed
    assert step_report(simulated, simulated + step, step).passed


@pytest.mark.parametrize("name, function", SATURATING.items())
def test_saturating_bounds_hold_for_inputs_one_step_off(name, function, rng):
    # Independent of the derivation: the worst of many sign patterns of
    # one-step input errors, in float64, never moves an output further.
    for input_step in (1e-3, 0.05, 0.3):
        z = rng.normal(scale=4.0, size=(200, 6))
        y = function(z)
        # A known value off by `h` (the simulation's rounding) widens it.
        h = 0.01
        known = np.clip(y + rng.uniform(-h, h, size=y.shape), -1, 1)
        bound = SATURATING_OUTPUT_BOUNDS[name](known, input_step, h)
        for _ in range(50):
            moved = function(z + input_step * rng.choice([-1.0, 1.0], size=z.shape))
            assert np.all(np.abs(moved - y) <= bound * (1 + 1e-9) + 1e-15)


def test_a_softmax_output_gets_its_own_allowance(rng):
    qat, x = trained_qat(sequential_model, "per_channel", rng)
    simulated = qat(x, training=False).numpy()
    step = output_step(qat)
    logits = qat.layers[-3].output_quantizer  # the Dense block before the softmax
    logit_step = (logits.range_max.numpy() - logits.range_min.numpy()) / 255.0
    allowed = allowed_steps(qat, simulated)
    assert step == pytest.approx(1 / 256) and allowed.shape == simulated.shape
    # At most the softmax's largest slope (1/2) times the logit step, plus
    # the one step of rounding; confident outputs keep less room.
    assert np.all(allowed >= MAX_STEPS)
    assert allowed.max() <= MAX_STEPS + np.ceil(0.5 * logit_step / step)
    assert allowed.min() < allowed.max()
    logits_only, x = trained_qat(depthwise_dense_model, "per_channel", rng)
    assert allowed_steps(logits_only, logits_only(x).numpy()) == MAX_STEPS


def test_each_output_is_judged_by_its_own_allowance():
    simulated = np.zeros((1, 3))
    allowed = np.array([[1, 3, 1]])
    report = step_report(simulated, np.array([[0.0, 3.0, 1.0]]), 1.0, allowed)
    assert report.passed and report.allowed == 3 and report.max_excess == 0
    report = step_report(simulated, np.array([[2.0, 0.0, 0.0]]), 1.0, allowed)
    assert not report.passed and report.max_excess == 1


def test_export_tolerance_also_bounds_the_error_against_the_float_model(rng, tmp_path):
    # A float model's int8 file passes the exact gate against its
    # post-training simulation; a tolerance the caller gives bounds its error
    # against the float model as well: refused below it, written above.
    model = depthwise_dense_model()
    set_statistics(model, rng)
    x = rng.normal(size=(64, 6, 6, 3)).astype("float32")
    with pytest.raises(ParityError):
        to_tflite(
            model,
            tmp_path / "a.tflite",
            quantize="int8",
            representative_data=x,
            tolerance=1e-9,
        )
    report = to_tflite(
        model,
        tmp_path / "b.tflite",
        quantize="int8",
        representative_data=x,
        tolerance=0.5,
    )
    assert report.parity.tolerance == 0.5 and report.parity.passed
    assert report.parity.rule == "exact_gate" and report.parity.steps["passed"]
