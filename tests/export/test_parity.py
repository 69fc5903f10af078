"""`check_parity` on files made by anyone; format detection; op histograms."""

import contextlib
import io
import os

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
import tf2onnx

from keras_bn.export import (
    check_parity,
    detect_format,
    load_runtime,
    op_histogram,
    run_file,
)
from tests.helpers.export import build_pattern, pattern_inputs
from tests.tolerances import EXPORT_FLOAT32_RTOL


@pytest.fixture(scope="module")
def model():
    return build_pattern("conv2d_bn", seed=3)


@pytest.fixture(scope="module")
def foreign_tflite(model, tmp_path_factory):
    """A file written by tf.lite directly, not by keras_bn."""
    path = tmp_path_factory.mktemp("foreign") / "plain.tflite"
    with contextlib.redirect_stdout(io.StringIO()):
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="module")
def foreign_onnx(model, tmp_path_factory):
    """A file written by tf2onnx directly, with a fixed batch of 2."""
    path = tmp_path_factory.mktemp("foreign") / "plain.onnx"
    spec = [tf.TensorSpec((2, *model.input_shape[1:]), tf.float32)]
    function = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=spec, opset=17, output_path=str(path)
    )
    return path


def test_parity_of_a_foreign_tflite_file(model, foreign_tflite):
    x = pattern_inputs(model, seed=5, batch=3)
    report = check_parity(model, foreign_tflite, x)
    expected = np.abs(run_file(foreign_tflite, x) - model(x).numpy()).max()
    assert report.format == "tflite" and report.runtime == "litert"
    assert report.max_abs_error == pytest.approx(expected)
    assert report.max_rel_error <= EXPORT_FLOAT32_RTOL
    assert report.input_shape == (3, 12, 12, 3)
    assert report.tolerance is None and report.passed is None


def test_parity_of_a_foreign_onnx_file_with_fixed_batch(model, foreign_onnx):
    # Default inputs are 8 rows; the file takes 2 at a time.
    report = check_parity(model, foreign_onnx)
    assert report.format == "onnx" and report.input_shape[0] == 8
    assert report.max_rel_error <= EXPORT_FLOAT32_RTOL


def test_format_is_read_from_content_not_name(model, foreign_tflite, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(foreign_tflite.read_bytes())
    assert detect_format(renamed) == "tflite"
    assert check_parity(model, renamed).max_rel_error <= EXPORT_FLOAT32_RTOL


@pytest.mark.parametrize(
    "content",
    [b"", b"not a model at all\n", bytes(range(256)) * 4, b"\x08\x07"],
    ids=["empty", "text", "binary", "onnx-header-only"],
)
def test_a_file_that_is_not_a_model_raises(model, tmp_path, content):
    path = tmp_path / "fake.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="neither a TFLite flatbuffer"):
        check_parity(model, path)


def test_a_missing_file_raises(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="No exported model"):
        check_parity(model, tmp_path / "absent.tflite")


def test_inputs_of_the_wrong_shape_raise(model, foreign_tflite):
    with pytest.raises(ValueError, match=r"Received: inputs of shape \(2, 5, 5, 3\)"):
        check_parity(model, foreign_tflite, np.zeros((2, 5, 5, 3), np.float32))


def test_a_file_for_another_model_raises(foreign_onnx):
    other = build_pattern("dense_bn")
    with pytest.raises(ValueError, match="expects inputs of shape"):
        check_parity(other, foreign_onnx)


def test_op_histograms_are_read_from_the_files(foreign_tflite, foreign_onnx):
    # TF 2.21's converter fuses the BN into CONV_2D and the ReLU into its
    # activation. tf2onnx 1.17 wraps the NHWC Conv in two Transposes and, the
    # conv having a non-zero bias, leaves the unfolded BN as Mul + Add.
    assert op_histogram(foreign_tflite) == {"CONV_2D": 1}
    assert op_histogram(foreign_onnx) == {
        "Transpose": 2,
        "Conv": 1,
        "Mul": 1,
        "Add": 1,
        "Relu": 1,
    }
    assert sum(op_histogram(foreign_onnx).values()) == len(
        onnx.load(foreign_onnx).graph.node
    )


def test_onnx_runs_the_same_with_and_without_graph_optimizations(model, foreign_onnx):
    x = pattern_inputs(model, batch=4)
    on = run_file(foreign_onnx, x)
    off = load_runtime(foreign_onnx, optimize=False)(x)
    scale = np.abs(model(x).numpy()).max()
    assert np.abs(on - off).max() / scale <= EXPORT_FLOAT32_RTOL


def test_int8_io_file_is_quantized_and_dequantized(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_pattern("dense_bn", seed=4)
    x = pattern_inputs(model, batch=64)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in x)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "int8_io.tflite"
    with contextlib.redirect_stdout(io.StringIO()):
        path.write_bytes(converter.convert())
    report = check_parity(model, path, x)
    # Without dequantizing, int8 codes would be compared with float outputs
    # and the error would be of the order of the codes themselves (~100).
    assert report.max_rel_error < 0.1
    assert os.path.getsize(path) > 0


def test_check_parity_judges_by_the_tolerance_it_is_given(model, foreign_onnx):
    from keras_bn.export import parity_tolerance

    x = pattern_inputs(model, batch=2)
    unjudged = check_parity(model, foreign_onnx, inputs=x)
    assert unjudged.tolerance is None and unjudged.passed is None
    judged = check_parity(model, foreign_onnx, inputs=x, tolerance="error_model")
    assert judged.tolerance == parity_tolerance(model)
    assert judged.passed is True
    strict = check_parity(model, foreign_onnx, inputs=x, tolerance=0.0)
    assert strict.passed is (strict.max_rel_error == 0.0)
    loose = check_parity(
        model, foreign_onnx, inputs=x, tolerance="error_model", quantize="int8"
    )
    assert loose.tolerance == parity_tolerance(model, "int8")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"tolerance": "tight"}, TypeError),
        ({"tolerance": -1.0}, ValueError),
        ({"quantize": "int4"}, ValueError),
    ],
)
def test_check_parity_rejects_a_bad_tolerance_or_quantize(
    model, foreign_onnx, kwargs, error
):
    with pytest.raises(error):
        check_parity(model, foreign_onnx, **kwargs)


def test_large_inputs_reference_is_computed_a_few_samples_at_a_time(monkeypatch):
    # Slicing bounds the reference's memory; it must not change the outputs
    # beyond the rounding of a different batch size.
    from keras_bn.export import parity

    calls = []

    def record(t):
        calls.append(int(t.shape[0]))
        return t

    model = keras.Sequential(
        [
            keras.Input((40, 40, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.Lambda(record),
            keras.layers.ReLU(),
        ]
    )
    x = np.random.default_rng(0).standard_normal((5, 40, 40, 3)).astype(np.float32)
    monkeypatch.setattr(parity, "REFERENCE_SLICE_ELEMENTS", 2 * 40 * 40 * 3)
    calls.clear()
    sliced = parity.keras_outputs(model, x)
    sliced_calls = list(calls)
    expected = np.asarray(model(x, training=False), dtype=np.float64)
    assert sliced_calls == [2, 2, 1]
    scale = np.abs(expected).max()
    assert np.abs(sliced - expected).max() <= EXPORT_FLOAT32_RTOL * scale
