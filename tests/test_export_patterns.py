"""The folding-pattern models every export test runs on, and checks of them.

Each pattern is one layer that BatchNormalization folds into, followed or
preceded by a BN whose four statistics are drawn from a seeded generator (never
the defaults, which would make any fold trivially right), then a ReLU. The same
pattern built with `with_bn=False` has the identical layer sequence minus the
BN: the reference for "no Mul/Add/Sub left from BN".
"""

import keras
import numpy as np
import pytest

from keras_bn.export import without_batchnorm

L = keras.layers

PATTERNS = (
    "conv2d_bn",
    "dense_bn",
    "depthwise_conv2d_bn",
    "conv2d_transpose_bn",
    "conv1d_bn",
    "bn_conv2d_valid",
    "separable_conv2d_bn",
)

_INPUT_SHAPES = {"dense_bn": (10,), "conv1d_bn": (16, 4)}

_CORES = {
    "conv2d_bn": lambda: L.Conv2D(6, 3, padding="same"),
    "dense_bn": lambda: L.Dense(7),
    "depthwise_conv2d_bn": lambda: L.DepthwiseConv2D(
        3, depth_multiplier=2, padding="same"
    ),
    "conv2d_transpose_bn": lambda: L.Conv2DTranspose(5, 3, strides=2, padding="same"),
    "conv1d_bn": lambda: L.Conv1D(6, 3, padding="same"),
    # Zero padding after a BN would see the BN's shift, so only a valid
    # convolution can absorb a preceding BN exactly.
    "bn_conv2d_valid": lambda: L.Conv2D(6, 3, padding="valid"),
    "separable_conv2d_bn": lambda: L.SeparableConv2D(6, 3, padding="same"),
}


def randomize_batchnorm(model: keras.Model, seed: int, spread: float = 1.0) -> None:
    """Gives every BN of `model` seeded, far-from-default statistics.

    β and the moving mean are drawn with standard deviation `spread`. Deep
    networks need a small spread (0.1): with 1.0, EfficientNetB0's activations
    grow to ~6e3 through its 49 BNs and swish gates, the network stops being
    scale-preserving and any float32 rewrite of it (folding included) differs
    by ~5e-4 relative, outside the error model's assumptions.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, n),  # gamma
                    rng.normal(0.0, spread, n),  # beta
                    rng.normal(0.0, spread, n),  # moving_mean
                    rng.uniform(0.5, 2.0, n),  # moving_variance
                ]
            )


def build_pattern(pattern: str, with_bn: bool = True, seed: int = 0) -> keras.Model:
    """The pattern's model; identical weights for the same `seed`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(_INPUT_SHAPES.get(pattern, (12, 12, 3)))
    x = inputs
    if pattern == "bn_conv2d_valid" and with_bn:
        x = L.BatchNormalization()(x)
    x = _CORES[pattern]()(x)
    if pattern != "bn_conv2d_valid" and with_bn:
        x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    model = keras.Model(inputs, x, name=pattern)
    randomize_batchnorm(model, seed)
    # Non-zero biases: converters drop an all-zero bias, so a BN-free twin with
    # zero biases would have fewer Adds than any folded model.
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape))
    return model


def pattern_inputs(model: keras.Model, seed: int = 1, batch: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (batch, *model.input_shape[1:])).astype(np.float32)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_has_one_batchnorm_with_non_default_statistics(pattern):
    model = build_pattern(pattern)
    bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    assert len(bns) == 1
    gamma, beta, mean, variance = (w.numpy() for w in bns[0].weights)
    assert not np.allclose(gamma, 1.0) and not np.allclose(beta, 0.0)
    assert not np.allclose(mean, 0.0) and not np.allclose(variance, 1.0)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_without_bn_has_the_same_core_weights(pattern):
    with_bn, without_bn = build_pattern(pattern), build_pattern(pattern, False)
    assert not any(isinstance(x, L.BatchNormalization) for x in without_bn.layers)
    assert len(without_bn.layers) == len(with_bn.layers) - 1
    core_with = [
        w.numpy()
        for w in with_bn.layers[-2 if pattern == "bn_conv2d_valid" else -3].weights
    ]
    core_without = [w.numpy() for w in without_bn.layers[-2].weights]
    for a, b in zip(core_with, core_without, strict=True):
        np.testing.assert_array_equal(a, b)


APPLICATIONS = (("MobileNetV2", 96), ("ResNet50", 64), ("EfficientNetB0", 64))


def export_application(export, name: str, size: int, out) -> dict:
    """Exports a keras.applications model (folded) and its BN-free twin with `export`."""
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    randomize_batchnorm(model, seed=0, spread=0.1)
    x = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")
    suffix = export.__name__.removeprefix("to_")
    return {
        "folded": export(model, out / f"folded.{suffix}", inputs=x),
        "bn_free": export(
            without_batchnorm(model), out / f"bn_free.{suffix}", fold=False, inputs=x
        ),
    }
