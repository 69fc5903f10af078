"""The folding-pattern models every export test runs on, and export helpers.

Each pattern is one layer that BatchNormalization folds into, followed or
preceded by a BN whose four statistics are drawn from a seeded generator (never
the defaults, which would make any fold trivially right), then a ReLU. The same
pattern built with `with_bn=False` has the identical layer sequence minus the
BN: the reference for "no Mul/Add/Sub left from BN".
"""

import keras
import numpy as np

from keras_bn.export import without_batchnorm
from keras_bn.models import stand_in_application
from keras_bn.stand_in_statistics import set_stand_in_statistics

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


# β and the moving mean of the one-layer patterns are drawn with standard
# deviation 1 (a shallow network stays scale-preserving with it); deep
# networks use the package default 0.1 (see keras_bn.stand_in_statistics).
PATTERN_SPREAD = 1.0
APPLICATION_SPREAD = 0.1


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
    set_stand_in_statistics(model, seed=seed, spread=PATTERN_SPREAD)
    # Non-zero biases: converters drop an all-zero bias, so a BN-free twin with
    # zero biases would have fewer Adds than any folded model.
    rng = np.random.default_rng(seed + 1)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape))
    return model


def pattern_inputs(model: keras.Model, seed: int = 1, batch: int = 8) -> np.ndarray:
    """Seeded standard-normal inputs for `model`."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (batch, *model.input_shape[1:])).astype(np.float32)


APPLICATIONS = (("MobileNetV2", 96), ("ResNet50", 64), ("EfficientNetB0", 64))


def export_application(export, name: str, size: int, out) -> dict:
    """Exports a keras.applications model (folded) and its BN-free twin with `export`."""
    model = stand_in_application(
        name, (size, size, 3), spread=APPLICATION_SPREAD, classifier_activation=None
    )
    x = np.random.default_rng(1).uniform(0, 255, (4, size, size, 3)).astype("float32")
    suffix = export.__name__.removeprefix("to_")
    return {
        "folded": export(model, out / f"folded.{suffix}", inputs=x),
        "bn_free": export(
            without_batchnorm(model), out / f"bn_free.{suffix}", fold=False, inputs=x
        ),
    }
