"""`to_tflite`: folded files match Keras, carry no BN remnant, quantize safely."""

import os

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_bn.export import (
    ELEMENTWISE_OP_TYPES,
    ParityError,
    run_file,
    runtimes,
    to_tflite,
)
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.export import (
    APPLICATIONS,
    PATTERN_SPREAD,
    PATTERNS,
    build_pattern,
    export_application,
    pattern_inputs,
)
from tests.tolerances import (
    EXPORT_FLOAT16_RTOL,
    EXPORT_FLOAT32_RTOL,
    EXPORT_INT8_ACCURACY_DROP,
)

# What the TFLite converter (TF 2.21) leaves of an *unfolded* BN. Its MLIR
# passes already fuse a constant Mul/Add that follows a CONV_2D,
# DEPTHWISE_CONV_2D, TRANSPOSE_CONV or FULLY_CONNECTED into the weights, so
# only a BN *before* a convolution survives. A count above zero shows the
# remnant check can fail.
UNFOLDED_BN_ARITHMETIC = {
    "conv2d_bn": 0,
    "dense_bn": 0,
    "depthwise_conv2d_bn": 0,
    "conv2d_transpose_bn": 0,
    "conv1d_bn": 0,
    "bn_conv2d_valid": 2,
    "separable_conv2d_bn": 0,
}


@pytest.fixture(scope="module")
def pattern_exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite_patterns")
    exports = {}
    for pattern in PATTERNS:
        model = build_pattern(pattern)
        x = pattern_inputs(model)
        exports[pattern] = {
            "folded": to_tflite(model, out / f"{pattern}.tflite", inputs=x),
            "float16": to_tflite(
                model, out / f"{pattern}_f16.tflite", quantize="float16", inputs=x
            ),
            "unfolded": to_tflite(
                model, out / f"{pattern}_unfolded.tflite", fold=False, inputs=x
            ),
            "bn_free": to_tflite(
                build_pattern(pattern, with_bn=False),
                out / f"{pattern}_bn_free.tflite",
                fold=False,
                inputs=x,
            ),
        }
    return exports


@pytest.mark.parametrize("pattern", PATTERNS)
def test_folded_file_matches_keras_within_the_float32_bound(pattern_exports, pattern):
    parity = pattern_exports[pattern]["folded"].parity
    assert parity.max_rel_error <= EXPORT_FLOAT32_RTOL
    assert parity.max_rel_error <= parity.tolerance


@pytest.mark.parametrize("pattern", PATTERNS)
def test_float16_file_matches_keras_within_the_float16_bound(pattern_exports, pattern):
    report = pattern_exports[pattern]["float16"]
    assert report.parity.max_rel_error <= EXPORT_FLOAT16_RTOL
    assert report.quantize == "float16"
    assert report.count("DEQUANTIZE") > 0


@pytest.mark.parametrize("pattern", PATTERNS)
def test_folded_file_has_no_bn_remnant(pattern_exports, pattern):
    folded, bn_free = (pattern_exports[pattern][k] for k in ("folded", "bn_free"))
    assert folded.bn_ops_left() == 0
    for op in ELEMENTWISE_OP_TYPES:
        assert folded.count(op) == bn_free.count(op), op


@pytest.mark.parametrize("pattern", PATTERNS)
def test_unfolded_file_keeps_the_bn_arithmetic_the_converter_does_not_fuse(
    pattern_exports, pattern
):
    unfolded, bn_free = (pattern_exports[pattern][k] for k in ("unfolded", "bn_free"))
    extra = unfolded.bn_ops_left(bn_free)
    assert extra == UNFOLDED_BN_ARITHMETIC[pattern]


def test_float16_halves_the_weights(tmp_path):
    inputs = keras.Input((8, 8, 32))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(64, 3)(inputs))
    model = keras.Model(inputs, x)
    set_stand_in_statistics(model, seed=2, spread=PATTERN_SPREAD)
    full = to_tflite(model, tmp_path / "full.tflite")
    half = to_tflite(model, tmp_path / "half.tflite", quantize="float16")
    weight_bytes = 3 * 3 * 32 * 64 * 4
    # 18 432 float32 weights become float16: the file shrinks by about half
    # their size; the flatbuffer's own overhead is a few KiB at most.
    assert full.file_size - half.file_size > 0.45 * weight_bytes
    assert half.parity.max_rel_error <= EXPORT_FLOAT16_RTOL


def test_export_does_not_modify_the_model(tmp_path):
    model = build_pattern("dense_bn")
    layers, weights = list(model.layers), [w.copy() for w in model.get_weights()]
    to_tflite(model, tmp_path / "m.tflite")
    assert list(model.layers) == layers
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_parity_failure_raises_and_leaves_no_file(tmp_path, monkeypatch):
    destination = tmp_path / "m.tflite"
    # Every export runs its file through keras_bn.export.runtimes.
    run = runtimes.run_file
    monkeypatch.setattr(runtimes, "run_file", lambda p, x: run(p, x) * 1.01)
    with pytest.raises(ParityError, match="Nothing was written"):
        to_tflite(build_pattern("conv2d_bn"), destination)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantize": "int4"}, "quantize='int4'"),
        ({"quantize": "int8"}, "representative_data=None"),
        ({"representative_data": np.zeros((2, 12, 12, 3))}, "quantize=None"),
        (
            {"quantize": "int8", "representative_data": np.zeros((2, 8, 8, 3))},
            r"shape \(2, 8, 8, 3\)",
        ),
        (
            {"quantize": "int8", "representative_data": np.zeros((2, 12, 12, 3), int)},
            "dtype int64",
        ),
        ({"inputs": np.zeros((0, 12, 12, 3))}, r"shape \(0, 12, 12, 3\)"),
    ],
)
def test_bad_quantization_option_raises_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_tflite(build_pattern("conv2d_bn"), tmp_path / "m.tflite", **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "relative, error, match",
    [
        ("missing_dir/m.tflite", FileNotFoundError, "does not exist"),
        ("m.onnx", ValueError, "must end with '.tflite'"),
    ],
)
def test_bad_destination_raises_and_writes_nothing(tmp_path, relative, error, match):
    with pytest.raises(error, match=match):
        to_tflite(build_pattern("conv2d_bn"), tmp_path / relative)
    assert os.listdir(tmp_path) == []


def test_unknown_input_dimension_raises(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match=r"input shape=\(None, None, None, 3\)"):
        to_tflite(model, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def digits_cnn():
    """A small CNN trained on scikit-learn's 8×8 digits; BN statistics are
    the ones training produced."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    return model, x_train, x_test, y_test


def test_int8_digits_cnn_keeps_float_accuracy(digits_cnn, tmp_path):
    model, x_train, x_test, y_test = digits_cnn
    float_accuracy = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
    report = to_tflite(
        model, tmp_path / "digits.tflite", quantize="int8", representative_data=x_train
    )
    int8_accuracy = np.mean(run_file(report.path, x_test).argmax(1) == y_test)
    assert float_accuracy - int8_accuracy <= EXPORT_INT8_ACCURACY_DROP
    assert report.parity.max_rel_error <= report.parity.tolerance
    assert report.parity.top1_agreement >= 1.0 - EXPORT_INT8_ACCURACY_DROP
    # Full-integer: the only float ops are the quantize/dequantize at the edges.
    assert report.count("QUANTIZE") == report.count("DEQUANTIZE") == 1
    assert report.bn_ops_left() == 0


# EfficientNetB0's TFLite export (~40-60 s) is left out so the suite stays under
# 10 minutes on 2 cores. Its folds (depthwise and pointwise convolutions, all
# Linear -> BN) are the ones MobileNetV2 exports here; its own file is checked
# in ONNX (test_export_onnx.py) and its fold in test_folding_applications.py.
TFLITE_APPLICATIONS = [app for app in APPLICATIONS if app[0] != "EfficientNetB0"]


@pytest.fixture(scope="module", params=TFLITE_APPLICATIONS, ids=lambda p: p[0])
def application_exports(request, tmp_path_factory):
    name, size = request.param
    return export_application(
        to_tflite, name, size, tmp_path_factory.mktemp(f"tflite_{name}")
    )


@pytest.mark.slow
def test_application_folded_file_matches_keras(application_exports):
    parity = application_exports["folded"].parity
    assert parity.max_rel_error <= EXPORT_FLOAT32_RTOL
    assert parity.max_rel_error <= parity.tolerance


@pytest.mark.slow
def test_application_folded_file_has_no_bn_remnant(application_exports):
    folded, bn_free = application_exports["folded"], application_exports["bn_free"]
    assert folded.fold_report.folded and not folded.fold_report.not_folded
    assert folded.bn_ops_left() == 0
    for op in ELEMENTWISE_OP_TYPES:
        assert folded.count(op) == bn_free.count(op), op
