"""`keras_bn.folding.rules`: each layer family's rule, checked on real layers.

A rule's folded weights, written into a fresh copy of the layer, must make
that copy compute what the original Keras layer computes next to the affine
map `x * scale + shift` (evaluated here in NumPy float64 on the original
layer's output or input). The structural answers (which rule, which channel
axis, why a layer cannot fold) are checked against how the layer was built.
"""

import keras
import numpy as np
import pytest

from keras_bn.folding import rules
from tests.helpers.folding import relative_error
from tests.tolerances import FOLD_FLOAT32_RTOL

L = keras.layers

# name: (factory, channels-last input shape, rule class); valid padding so
# that a BN before the layer can fold.
FAMILIES = {
    "dense": (lambda bias: L.Dense(5, use_bias=bias), (4,), rules.DenseRule),
    "conv1d": (lambda bias: L.Conv1D(5, 3, use_bias=bias), (8, 4), rules.ConvRule),
    "conv2d_groups": (
        lambda bias: L.Conv2D(6, 3, groups=2, use_bias=bias),
        (6, 6, 4),
        rules.ConvRule,
    ),
    "conv3d": (
        lambda bias: L.Conv3D(3, 2, use_bias=bias),
        (4, 4, 4, 2),
        rules.ConvRule,
    ),
    "depthwise2d": (
        lambda bias: L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=bias),
        (6, 6, 3),
        rules.DepthwiseConvRule,
    ),
    "separable2d": (
        lambda bias: L.SeparableConv2D(5, 3, depth_multiplier=2, use_bias=bias),
        (6, 6, 3),
        rules.SeparableConvRule,
    ),
    "conv2d_transpose": (
        lambda bias: L.Conv2DTranspose(4, 3, strides=2, use_bias=bias),
        (4, 4, 3),
        rules.ConvTransposeRule,
    ),
}


def built(name, use_bias, rng):
    """The layer of family `name`, built, with random weights, and an input."""
    factory, shape, _ = FAMILIES[name]
    layer = factory(use_bias)
    x = rng.normal(size=(2, *shape)).astype("float32")
    layer(x)
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    )
    return layer, x


def folded_copy(layer, rule, params, x):
    """A fresh copy of `layer` with a bias, holding `params`."""
    copy = layer.__class__.from_config({**layer.get_config(), "use_bias": True})
    copy(x)
    rule.write(copy, params)
    return copy


def affine(channels, rng):
    return rng.uniform(0.5, 2.0, channels), rng.normal(size=channels)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_rule_for_picks_the_family(name):
    factory, _, rule_class = FAMILIES[name]
    assert type(rules.rule_for(factory(True))) is rule_class


@pytest.mark.parametrize("layer", [L.Add(), L.ReLU(), L.BatchNormalization()])
def test_non_linear_layers_have_no_rule(layer):
    assert rules.rule_for(layer) is None


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fold_after_equals_layer_then_affine(name, use_bias, rng):
    layer, x = built(name, use_bias, rng)
    rule = rules.rule_for(layer)
    y = np.asarray(layer(x), np.float64)
    scale, shift = affine(y.shape[-1], rng)
    params = rule.fold_after(layer, rule.read(layer), scale, shift)
    copy = folded_copy(layer, rule, params, x)
    assert relative_error(copy(x), y * scale + shift) <= FOLD_FLOAT32_RTOL


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name", sorted(set(FAMILIES) - {"conv2d_transpose"}))
def test_fold_before_equals_affine_then_layer(name, use_bias, rng):
    layer, x = built(name, use_bias, rng)
    rule = rules.rule_for(layer)
    scale, shift = affine(x.shape[-1], rng)
    expected = layer((x * scale + shift).astype("float32"))
    params = rule.fold_before(layer, rule.read(layer), scale, shift)
    copy = folded_copy(layer, rule, params, x)
    assert relative_error(copy(x), expected) <= FOLD_FLOAT32_RTOL


def test_separable_fold_after_leaves_the_depthwise_kernel(rng):
    layer, x = built("separable2d", True, rng)
    rule = rules.rule_for(layer)
    scale, shift = affine(5, rng)
    params = rule.fold_after(layer, rule.read(layer), scale, shift)
    np.testing.assert_array_equal(params["depthwise_kernel"], layer.depthwise_kernel)


def test_transpose_cannot_fold_a_bn_before_it(rng):
    layer, _ = built("conv2d_transpose", True, rng)
    rule = rules.rule_for(layer)
    assert "border outputs" in rule.before_reason(layer)
    with pytest.raises(ValueError, match="transposed convolution"):
        rule.fold_before(layer, rule.read(layer), *affine(4, rng))


def test_read_without_bias_and_with_the_wrong_weights(rng):
    layer, _ = built("dense", False, rng)
    rule = rules.rule_for(layer)
    params = rule.read(layer)
    assert params["bias"] is None
    np.testing.assert_array_equal(params["kernel"], layer.kernel)

    class WrongWeights(L.Dense):
        def get_weights(self):
            return [np.zeros((4, 5))] * 3

    wrong = WrongWeights(5, name="wrong")
    wrong.build((None, 4))
    with pytest.raises(ValueError, match="'wrong': expected weights.*Received"):
        rule.read(wrong)


@pytest.mark.parametrize(
    "layer, rank, axis",
    [
        (L.Dense(3), 3, 2),
        (L.Conv2D(3, 3), 4, 3),
        (L.Conv2D(3, 3, data_format="channels_first"), 4, 1),
        (L.Conv1DTranspose(3, 3, data_format="channels_first"), 3, 1),
        (L.DepthwiseConv1D(3), 3, 2),
    ],
)
def test_channel_axis_follows_data_format(layer, rank, axis):
    assert rules.rule_for(layer).channel_axis(layer, rank) == axis


def test_unfoldable_layers_say_why(rng):
    rule = rules.rule_for(L.Dense(3))
    assert rule.unfoldable_reason(L.Dense(3)) is None
    assert "'relu'" in rule.unfoldable_reason(L.Dense(3, activation="relu"))
    quantized = L.Dense(3)
    quantized.build((None, 4))
    quantized.quantize("int8")
    assert "quantized (int8)" in rule.unfoldable_reason(quantized)
    lora = L.Dense(3)
    lora.build((None, 4))
    lora.enable_lora(2)
    assert "LoRA" in rule.unfoldable_reason(lora)


@pytest.mark.parametrize(
    "layer, reason",
    [
        (L.Conv2D(3, 3), None),
        (L.Conv2D(3, 3, padding="same"), "padding='same'"),
        (L.Conv1D(3, 3, padding="causal"), "padding='causal'"),
        (L.Dense(3), None),
    ],
)
def test_before_reason_is_zero_padding(layer, reason):
    found = rules.rule_for(layer).before_reason(layer)
    assert found is None if reason is None else reason in found


@pytest.mark.parametrize(
    "data_format, output_shape, refused",
    [
        ("channels_first", (None, 4, 5, 4), True),
        ("channels_first", (None, 4, 5, None), True),
        ("channels_first", (None, 4, 5, 6), False),
        ("channels_last", (None, 5, 4, 4), False),
    ],
)
def test_bias_reason_for_tensorflows_channels_first_bias_add(
    data_format, output_shape, refused
):
    layer = L.Conv2D(4, 3, data_format=data_format, name="c")
    reason = rules.rule_for(layer).bias_reason(layer, output_shape)
    assert (reason is not None) is (refused and keras.backend.backend() == "tensorflow")
