"""The error model's bounds: hand-counted terms, and below the issue's limits."""

import math

import keras
import pytest

from keras_bn.export import parity_bounds, parity_tolerance
from tests.helpers.export import build_pattern
from tests.tolerances import EXPORT_FLOAT16_RTOL, EXPORT_FLOAT32_RTOL

U = 2.0**-24

L = keras.layers


@pytest.mark.parametrize(
    "layer, input_shape, terms",
    [
        (L.Conv2D(8, 3), (10, 10, 4), 3 * 3 * 4),
        (L.Conv2D(8, (3, 5), groups=2), (10, 10, 4), 3 * 5 * 2),
        (L.Dense(8), (20,), 20),
        (L.DepthwiseConv2D(5), (10, 10, 4), 25),
        (L.DepthwiseConv2D(3), (10, 10, 4), 16),  # 9 taps < 16: charged as elementwise
        (L.SeparableConv2D(8, 3), (10, 10, 4), 9 + 4),
        (L.Conv2DTranspose(8, 3), (10, 10, 4), 9 * 4),
        (L.Conv1D(8, 5), (10, 4), 5 * 4),
        (L.GlobalAveragePooling2D(), (10, 6, 4), 60),
        (L.AveragePooling2D(4), (8, 8, 4), 16),
        (L.ReLU(), (4,), 16),
        (L.BatchNormalization(), (4,), 16),
    ],
)
def test_reduction_length_counts_the_terms_of_one_output(layer, input_shape, terms):
    keras.Sequential([keras.Input(input_shape), layer])
    assert parity_bounds.reduction_length(layer) == terms


def test_float32_bound_is_the_formula_for_a_pattern():
    model = build_pattern("conv2d_bn")  # Conv2D 3·3·3, BN, ReLU
    expected = 4 * U * math.sqrt(2 * (27 + 16 + 16))
    assert parity_tolerance(model) == pytest.approx(expected)


def test_float16_and_int8_bounds_count_weighted_layers():
    model = build_pattern("separable_conv2d_bn")
    assert parity_bounds.weighted_layer_count(model) == 1
    u16 = 2.0**-11
    assert parity_tolerance(model, "float16") == pytest.approx(
        parity_tolerance(model) + 4 * u16 * math.sqrt(1 / 3)
    )
    assert parity_tolerance(model, "int8") == pytest.approx(
        4 * 2 / (255 * math.sqrt(12)) * math.sqrt(4)
    )


def test_unknown_precision_raises():
    with pytest.raises(ValueError, match="quantize='bfloat16'"):
        parity_tolerance(build_pattern("dense_bn"), "bfloat16")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, size, float32_bound",
    [
        ("ResNet50", 64, 8.1e-5),
        ("MobileNetV2", 96, 3.7e-5),
        ("EfficientNetB0", 64, 5.5e-5),
    ],
)
def test_application_bounds_lie_below_the_issue_limits(name, size, float32_bound):
    # The tests hold exports to the issue's limits; this shows the error model
    # predicts them to pass, so the limits are not tuned to the measurements.
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    assert parity_tolerance(model) <= float32_bound <= EXPORT_FLOAT32_RTOL
    if name != "EfficientNetB0":
        # EfficientNetB0's 82 weighted layers give 1.03e-2: float16 parity is
        # therefore only required of the pattern models and these two.
        assert parity_tolerance(model, "float16") <= EXPORT_FLOAT16_RTOL
