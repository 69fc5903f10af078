"""`to_onnx`: folded files match Keras, carry no BN remnant, and fail safely."""

import os

import keras
import numpy as np
import onnx
import pytest

from keras_bn.export import (
    ELEMENTWISE_OP_TYPES,
    ParityError,
    runtimes,
    to_onnx,
    without_batchnorm,
)
from keras_bn.models import stand_in_application
from tests.helpers.export import (
    APPLICATION_SPREAD,
    APPLICATIONS,
    PATTERNS,
    build_pattern,
    export_application,
    pattern_inputs,
)
from tests.tolerances import EXPORT_FLOAT32_RTOL

# What tf2onnx 1.17 leaves of an *unfolded* BN: its Mul and Add. Its transpose
# optimizer pushes a BN's Mul into a preceding Conv only when that Conv has no
# bias (or an all-zero one, which grappler removes first); the pattern models
# have non-zero biases, as trained models do, so every pattern keeps both ops.
# This is what makes the remnant check able to fail.
UNFOLDED_BN_ARITHMETIC = {pattern: 2 for pattern in PATTERNS}


@pytest.fixture(scope="module")
def pattern_exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_patterns")
    exports = {}
    for pattern in PATTERNS:
        model = build_pattern(pattern)
        x = pattern_inputs(model)
        exports[pattern] = {
            "folded": to_onnx(model, out / f"{pattern}.onnx", inputs=x),
            "unfolded": to_onnx(
                model, out / f"{pattern}_unfolded.onnx", fold=False, inputs=x
            ),
            "bn_free": to_onnx(
                build_pattern(pattern, with_bn=False),
                out / f"{pattern}_bn_free.onnx",
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
    assert parity.reference_scale > 0


@pytest.mark.parametrize("pattern", PATTERNS)
def test_folded_file_has_no_batchnorm_op(pattern_exports, pattern):
    report = pattern_exports[pattern]["folded"]
    assert report.bn_ops_left() == 0
    assert not any("norm" in op.lower() for op in report.op_histogram)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_folded_file_has_the_arithmetic_of_the_bn_free_model(pattern_exports, pattern):
    folded, bn_free = (pattern_exports[pattern][k] for k in ("folded", "bn_free"))
    for op in ELEMENTWISE_OP_TYPES:
        assert folded.count(op) == bn_free.count(op), op


@pytest.mark.parametrize("pattern", PATTERNS)
def test_unfolded_file_keeps_the_bn_arithmetic_tf2onnx_does_not_fuse(
    pattern_exports, pattern
):
    unfolded, bn_free = (pattern_exports[pattern][k] for k in ("unfolded", "bn_free"))
    extra = unfolded.bn_ops_left(bn_free)
    assert extra == UNFOLDED_BN_ARITHMETIC[pattern]
    assert unfolded.parity.max_rel_error <= EXPORT_FLOAT32_RTOL


@pytest.mark.parametrize("pattern", PATTERNS)
def test_export_reports_path_size_and_fold(pattern_exports, pattern):
    report = pattern_exports[pattern]["folded"]
    assert os.path.getsize(report.path) == report.file_size > 0
    assert report.format == "onnx" and report.details["opset"] == 17
    assert len(report.fold_report.folded) == 1 and not report.fold_report.not_folded
    assert pattern_exports[pattern]["unfolded"].fold_report is None


def test_export_does_not_modify_the_model(tmp_path):
    model = build_pattern("depthwise_conv2d_bn")
    layers, weights = list(model.layers), [w.copy() for w in model.get_weights()]
    to_onnx(model, tmp_path / "m.onnx")
    assert list(model.layers) == layers
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_tensors_captured_by_value_become_initializers(tmp_path):
    # keras.layers.Normalization keeps mean and variance as eager tensors,
    # which tf2onnx 1.17 would otherwise turn into extra graph inputs.
    inputs = keras.Input((6, 6, 2))
    norm = keras.layers.Normalization(mean=[1.0, -2.0], variance=[4.0, 0.25])
    outputs = keras.layers.Conv2D(3, 3)(norm(inputs))
    report = to_onnx(keras.Model(inputs, outputs), tmp_path / "n.onnx")

    assert len(onnx.load(report.path).graph.input) == 1
    assert report.parity.max_rel_error <= EXPORT_FLOAT32_RTOL


def test_parity_failure_raises_and_leaves_no_file(tmp_path, monkeypatch):
    destination = tmp_path / "m.onnx"
    destination.write_bytes(b"previous export")
    # Every export runs its file through keras_bn.export.runtimes.
    run = runtimes.run_file
    monkeypatch.setattr(runtimes, "run_file", lambda p, x: run(p, x) + 1.0)
    with pytest.raises(ParityError, match="does not match the Keras model"):
        to_onnx(build_pattern("conv2d_bn"), destination)
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert destination.read_bytes() == b"previous export"


def _unknown_dimension_model():
    inputs = keras.Input((None, 3))
    x = keras.layers.Conv1D(4, 3)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))


@pytest.mark.parametrize(
    "make_model, kwargs, error, match",
    [
        (_unknown_dimension_model, {}, ValueError, r"input shape=\(None, None, 3\)"),
        (lambda: build_pattern("conv2d_bn"), {"opset": 99}, ValueError, "opset=99"),
        (lambda: build_pattern("conv2d_bn"), {"opset": "17"}, TypeError, "opset='17'"),
        (lambda: build_pattern("conv2d_bn"), {"fold": "yes"}, TypeError, "fold='yes'"),
        (lambda: "model.keras", {}, TypeError, "model='model.keras'"),
    ],
)
def test_bad_model_or_option_raises_before_writing(
    tmp_path, make_model, kwargs, error, match
):
    with pytest.raises(error, match=match):
        to_onnx(make_model(), tmp_path / "m.onnx", **kwargs)
    assert os.listdir(tmp_path) == []


def test_unsupported_input_dtype_raises(tmp_path):
    inputs = keras.Input((4,), dtype="int32")
    outputs = keras.layers.Dense(2)(keras.ops.cast(inputs, "float32"))
    with pytest.raises(ValueError, match="input dtype=int32"):
        to_onnx(keras.Model(inputs, outputs), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_mixed_precision_model_raises(tmp_path, mixed_precision):
    mixed_precision("mixed_float16")
    model = build_pattern("conv2d_bn")
    with pytest.raises(ValueError, match="mixed_float16"):
        to_onnx(model, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "relative, error, match",
    [
        ("missing_dir/m.onnx", FileNotFoundError, "does not exist"),
        ("m.tflite", ValueError, "must end with '.onnx'"),
        (".", ValueError, "not a directory"),
    ],
)
def test_bad_destination_raises_and_writes_nothing(tmp_path, relative, error, match):
    with pytest.raises(error, match=match):
        to_onnx(build_pattern("conv2d_bn"), tmp_path / relative)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module", params=APPLICATIONS, ids=lambda p: p[0])
def application_exports(request, tmp_path_factory):
    name, size = request.param
    return export_application(
        to_onnx, name, size, tmp_path_factory.mktemp(f"onnx_{name}")
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
def test_unfolded_mobilenet_keeps_the_depthwise_bn_arithmetic(unfolded_mobilenet):
    unfolded, bn_free = unfolded_mobilenet
    extra = unfolded.bn_ops_left(bn_free)
    # keras.applications initialise conv biases to zero, so tf2onnx can fuse
    # the 35 Conv→BN pairs itself, but not the 17 depthwise (grouped) ones.
    assert extra == 2 * 17
