"""`to_onnx` and `to_tflite`: folded files match Keras, carry no BN remnant, fail safely.

The cases both exporters share are parametrized over the format; what only one
format has (the ONNX opset, TFLite's float16 and int8 quantization) follows in
its own section.
"""

import os

import keras
import numpy as np
import onnx
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_bn.export import (
    ELEMENTWISE_OP_TYPES,
    ParityError,
    run_file,
    runtimes,
    to_onnx,
    to_tflite,
    without_batchnorm,
)
from keras_bn.models import stand_in_application
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.export import (
    APPLICATION_SPREAD,
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

EXPORTERS = {"onnx": to_onnx, "tflite": to_tflite}
FORMATS = tuple(EXPORTERS)

# What each converter leaves of an *unfolded* BN; a count above zero shows the
# remnant check can fail.
UNFOLDED_BN_ARITHMETIC = {
    # tf2onnx 1.17: its Mul and Add. Its transpose optimizer pushes a BN's Mul
    # into a preceding Conv only when that Conv has no bias (or an all-zero one,
    # which grappler removes first); the pattern models have non-zero biases,
    # as trained models do, so every pattern keeps both ops.
    "onnx": {pattern: 2 for pattern in PATTERNS},
    # The TFLite converter (TF 2.21): its MLIR passes already fuse a constant
    # Mul/Add that follows a CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV or
    # FULLY_CONNECTED into the weights, so only a BN *before* a convolution
    # survives.
    "tflite": {
        "conv2d_bn": 0,
        "dense_bn": 0,
        "depthwise_conv2d_bn": 0,
        "conv2d_transpose_bn": 0,
        "conv1d_bn": 0,
        "bn_conv2d_valid": 2,
        "separable_conv2d_bn": 0,
    },
}


def _export_patterns(fmt: str, out) -> dict:
    export = EXPORTERS[fmt]
    exports = {}
    for pattern in PATTERNS:
        model = build_pattern(pattern)
        x = pattern_inputs(model)
        exports[pattern] = {
            "folded": export(model, out / f"{pattern}.{fmt}", inputs=x),
            "unfolded": export(
                model, out / f"{pattern}_unfolded.{fmt}", fold=False, inputs=x
            ),
            "bn_free": export(
                build_pattern(pattern, with_bn=False),
                out / f"{pattern}_bn_free.{fmt}",
                fold=False,
                inputs=x,
            ),
        }
        if fmt == "tflite":
            exports[pattern]["float16"] = export(
                model, out / f"{pattern}_f16.tflite", quantize="float16", inputs=x
            )
    return exports


@pytest.fixture(scope="module")
def pattern_exports(tmp_path_factory):
    """`pattern_exports(fmt)[pattern][kind]`: each format exported once, on demand."""
    cache = {}

    def exports(fmt: str) -> dict:
        if fmt not in cache:
            out = tmp_path_factory.mktemp(f"{fmt}_patterns")
            cache[fmt] = _export_patterns(fmt, out)
        return cache[fmt]

    return exports


# -- both formats: the folding patterns -----------------------------------------

by_format_and_pattern = pytest.mark.parametrize(
    "fmt, pattern", [(fmt, pattern) for fmt in FORMATS for pattern in PATTERNS]
)


@by_format_and_pattern
def test_folded_file_matches_keras_within_the_float32_bound(
    pattern_exports, fmt, pattern
):
    parity = pattern_exports(fmt)[pattern]["folded"].parity
    assert parity.max_rel_error <= EXPORT_FLOAT32_RTOL
    assert parity.max_rel_error <= parity.tolerance
    assert parity.reference_scale > 0


@by_format_and_pattern
def test_folded_file_has_no_batchnorm_op(pattern_exports, fmt, pattern):
    report = pattern_exports(fmt)[pattern]["folded"]
    assert report.bn_ops_left() == 0
    assert not any("norm" in op.lower() for op in report.op_histogram)


@by_format_and_pattern
def test_folded_file_has_the_arithmetic_of_the_bn_free_model(
    pattern_exports, fmt, pattern
):
    folded, bn_free = (pattern_exports(fmt)[pattern][k] for k in ("folded", "bn_free"))
    for op in ELEMENTWISE_OP_TYPES:
        assert folded.count(op) == bn_free.count(op), op


@by_format_and_pattern
def test_unfolded_file_keeps_the_bn_arithmetic_the_converter_does_not_fuse(
    pattern_exports, fmt, pattern
):
    exports = pattern_exports(fmt)[pattern]
    unfolded, bn_free = exports["unfolded"], exports["bn_free"]
    extra = unfolded.bn_ops_left(bn_free)
    assert extra == UNFOLDED_BN_ARITHMETIC[fmt][pattern]
    assert unfolded.parity.max_rel_error <= EXPORT_FLOAT32_RTOL


@by_format_and_pattern
def test_export_reports_path_size_and_fold(pattern_exports, fmt, pattern):
    report = pattern_exports(fmt)[pattern]["folded"]
    assert os.path.getsize(report.path) == report.file_size > 0
    assert report.format == fmt
    assert len(report.fold_report.folded) == 1 and not report.fold_report.not_folded
    assert pattern_exports(fmt)[pattern]["unfolded"].fold_report is None


# -- both formats: the caller's model, failures and bad input -------------------


@pytest.mark.parametrize(
    "fmt, pattern", [("onnx", "depthwise_conv2d_bn"), ("tflite", "dense_bn")]
)
def test_export_does_not_modify_the_model(tmp_path, fmt, pattern):
    model = build_pattern(pattern)
    layers, weights = list(model.layers), [w.copy() for w in model.get_weights()]
    EXPORTERS[fmt](model, tmp_path / f"m.{fmt}")
    assert list(model.layers) == layers
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "fmt, corrupt",
    [("onnx", lambda y: y + 1.0), ("tflite", lambda y: y * 1.01)],
    ids=["onnx-shifted", "tflite-scaled"],
)
def test_parity_failure_raises_and_leaves_no_file(tmp_path, monkeypatch, fmt, corrupt):
    destination = tmp_path / f"m.{fmt}"
    destination.write_bytes(b"previous export")
    # Every export runs its file through keras_bn.export.runtimes.
    run = runtimes.run_file
    monkeypatch.setattr(runtimes, "run_file", lambda p, x: corrupt(run(p, x)))
    with pytest.raises(
        ParityError, match="does not match the Keras model(.|\n)*Nothing was written"
    ):
        EXPORTERS[fmt](build_pattern("conv2d_bn"), destination)
    assert os.listdir(tmp_path) == [f"m.{fmt}"]
    assert destination.read_bytes() == b"previous export"


def _unknown_length_conv1d():
    inputs = keras.Input((None, 3))
    x = keras.layers.Conv1D(4, 3)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))


def _unknown_size_conv2d_bn():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _integer_input_model():
    inputs = keras.Input((4,), dtype="int32")
    outputs = keras.layers.Dense(2)(keras.ops.cast(inputs, "float32"))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "make_model, kwargs, error, match",
    [
        (_unknown_length_conv1d, {}, ValueError, r"input shape=\(None, None, 3\)"),
        (
            _unknown_size_conv2d_bn,
            {},
            ValueError,
            r"input shape=\(None, None, None, 3\)",
        ),
        (_integer_input_model, {}, ValueError, "input dtype=int32"),
        (lambda: build_pattern("conv2d_bn"), {"fold": "yes"}, TypeError, "fold='yes'"),
        (lambda: "model.keras", {}, TypeError, "model='model.keras'"),
    ],
    ids=["unknown_length", "unknown_size", "int_input", "fold", "not_a_model"],
)
def test_bad_model_or_option_raises_before_writing(
    tmp_path, fmt, make_model, kwargs, error, match
):
    with pytest.raises(error, match=match):
        EXPORTERS[fmt](make_model(), tmp_path / f"m.{fmt}", **kwargs)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_precision_model_raises(tmp_path, mixed_precision, fmt):
    mixed_precision("mixed_float16")
    model = build_pattern("conv2d_bn")
    with pytest.raises(ValueError, match="mixed_float16"):
        EXPORTERS[fmt](model, tmp_path / f"m.{fmt}")
    assert os.listdir(tmp_path) == []


def test_a_float32_model_loaded_under_a_mixed_policy_exports(tmp_path, mixed_precision):
    model = build_pattern("conv2d_bn")
    model.save(tmp_path / "m.keras")
    mixed_precision("mixed_float16")  # a mixed-precision session loads it
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    report = EXPORTERS["tflite"](loaded, tmp_path / "m.tflite")
    assert report.parity.passed and report.bn_ops_left() == 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "relative, error, match",
    [
        ("missing_dir/m.{fmt}", FileNotFoundError, "does not exist"),
        ("m.{other}", ValueError, "must end with '.{fmt}'"),
        (".", ValueError, "not a directory"),
    ],
    ids=["missing_dir", "suffix", "directory"],
)
def test_bad_destination_raises_and_writes_nothing(
    tmp_path, fmt, relative, error, match
):
    (other,) = set(FORMATS) - {fmt}
    with pytest.raises(error, match=match.format(fmt=fmt)):
        EXPORTERS[fmt](
            build_pattern("conv2d_bn"), tmp_path / relative.format(fmt=fmt, other=other)
        )
    assert os.listdir(tmp_path) == []


# -- both formats: keras.applications -----------------------------------------

# EfficientNetB0's TFLite export (~40-60 s) is left out so the suite stays under
# 10 minutes on 2 cores. Its folds (depthwise and pointwise convolutions, all
# Linear -> BN) are the ones MobileNetV2 exports here; its own file is checked
# in ONNX and its fold in tests/folding/test_applications.py.
APPLICATION_EXPORTS = [
    (fmt, app)
    for fmt in FORMATS
    for app in APPLICATIONS
    if (fmt, app[0]) != ("tflite", "EfficientNetB0")
]


@pytest.fixture(
    scope="module", params=APPLICATION_EXPORTS, ids=lambda p: f"{p[0]}-{p[1][0]}"
)
def application_exports(request, tmp_path_factory):
    fmt, (name, size) = request.param
    return export_application(
        EXPORTERS[fmt], name, size, tmp_path_factory.mktemp(f"{fmt}_{name}")
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


# -- ONNX only: the opset, captured tensors, unfused depthwise BNs --------------


@pytest.mark.parametrize("pattern", PATTERNS)
def test_onnx_report_names_the_opset(pattern_exports, pattern):
    assert pattern_exports("onnx")[pattern]["folded"].details["opset"] == 17


@pytest.mark.parametrize(
    "opset, error, match",
    [(99, ValueError, "opset=99"), ("17", TypeError, "opset='17'")],
)
def test_onnx_bad_opset_raises_before_writing(tmp_path, opset, error, match):
    with pytest.raises(error, match=match):
        to_onnx(build_pattern("conv2d_bn"), tmp_path / "m.onnx", opset=opset)
    assert os.listdir(tmp_path) == []


def test_onnx_tensors_captured_by_value_become_initializers(tmp_path):
    # keras.layers.Normalization keeps mean and variance as eager tensors,
    # which tf2onnx 1.17 would otherwise turn into extra graph inputs.
    inputs = keras.Input((6, 6, 2))
    norm = keras.layers.Normalization(mean=[1.0, -2.0], variance=[4.0, 0.25])
    outputs = keras.layers.Conv2D(3, 3)(norm(inputs))
    report = to_onnx(keras.Model(inputs, outputs), tmp_path / "n.onnx")

    assert len(onnx.load(report.path).graph.input) == 1
    assert report.parity.max_rel_error <= EXPORT_FLOAT32_RTOL


@pytest.fixture(scope="module")
def unfolded_mobilenet(tmp_path_factory):
    model = stand_in_application(
        "MobileNetV2",
        (96, 96, 3),
        spread=APPLICATION_SPREAD,
        classifier_activation=None,
    )
    out = tmp_path_factory.mktemp("onnx_unfolded_mobilenet")
    return (
        to_onnx(model, out / "unfolded.onnx", fold=False),
        to_onnx(without_batchnorm(model), out / "bn_free.onnx", fold=False),
    )


@pytest.mark.slow
def test_onnx_unfolded_mobilenet_keeps_the_depthwise_bn_arithmetic(
    unfolded_mobilenet,
):
    unfolded, bn_free = unfolded_mobilenet
    extra = unfolded.bn_ops_left(bn_free)
    # keras.applications initialise conv biases to zero, so tf2onnx can fuse
    # the 35 Conv→BN pairs itself, but not the 17 depthwise (grouped) ones.
    assert extra == 2 * 17


# -- TFLite only: float16 and int8 quantization ---------------------------------


@pytest.mark.parametrize("pattern", PATTERNS)
def test_tflite_float16_file_matches_keras_within_the_float16_bound(
    pattern_exports, pattern
):
    report = pattern_exports("tflite")[pattern]["float16"]
    assert report.parity.max_rel_error <= EXPORT_FLOAT16_RTOL
    assert report.quantize == "float16"
    assert report.count("DEQUANTIZE") > 0


def test_tflite_float16_halves_the_weights(tmp_path):
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
def test_tflite_bad_quantization_option_raises_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_tflite(build_pattern("conv2d_bn"), tmp_path / "m.tflite", **kwargs)
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


def test_tflite_int8_digits_cnn_keeps_float_accuracy(digits_cnn, tmp_path):
    model, x_train, x_test, y_test = digits_cnn
    float_accuracy = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
    report = to_tflite(
        model, tmp_path / "digits.tflite", quantize="int8", representative_data=x_train
    )
    int8_accuracy = np.mean(run_file(report.path, x_test).argmax(1) == y_test)
    assert float_accuracy - int8_accuracy <= EXPORT_INT8_ACCURACY_DROP
    assert report.parity.top1_agreement >= 1.0 - EXPORT_INT8_ACCURACY_DROP
    # Judged by the exact gate against its post-training simulation; the
    # error against the float model is a reported figure (issue 18).
    assert report.parity.rule == "exact_gate" and report.parity.passed
    assert report.parity.steps["max_steps"] <= report.parity.steps["allowed"]
    # Full-integer: the only float ops are the quantize/dequantize at the edges.
    assert report.count("QUANTIZE") == report.count("DEQUANTIZE") == 1
    assert report.bn_ops_left() == 0
