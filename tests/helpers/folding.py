"""Helpers for the folding tests: small models, BN statistics, parity.

Counting walks layers with `keras_bn.keras_adapter.iter_layers` and the BN
statistics come from `keras_bn.stand_in_statistics`, the library's homes for
both; what is left here is test-only: building one-pattern models and
measuring the error of a folded model independently of `fold_batchnorm`'s
own verification.
"""

import keras
import numpy as np

from keras_bn.folding import ChannelAffine, fold_batchnorm
from keras_bn.keras_adapter import is_batchnorm, iter_layers
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.tolerances import FOLD_FLOAT32_RTOL

# The pattern models are one or two layers deep: β and means of order 1 make
# a shift folded onto the wrong axis or with the wrong sign plainly visible.
# (The library's default spread, 0.1, is for deep networks such as
# keras.applications, whose activations would grow with 1.0.)
PATTERN_SPREAD = 1.0


def count_batchnorm(model) -> int:
    """The BatchNormalization layers inside `model`, nested ones included."""
    return sum(is_batchnorm(layer) for layer in iter_layers(model))


def count_affine(model) -> int:
    """The `ChannelAffine` layers inside `model`, nested ones included."""
    return sum(isinstance(layer, ChannelAffine) for layer in iter_layers(model))


def set_statistics(model, rng: np.random.Generator, spread=PATTERN_SPREAD) -> None:
    """Far-from-default BN statistics everywhere: defaults make every fold look right."""
    set_stand_in_statistics(model, seed=int(rng.integers(2**31)), spread=spread)


def random_inputs(model, rng, batch=3):
    """A float32 standard-normal batch for each of `model`'s inputs."""

    def make(x):
        return rng.normal(size=(batch, *x.shape[1:])).astype("float32")

    arrays = [make(x) for x in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def relative_error(actual, expected) -> float:
    """max|actual − expected| / max|expected| over every output."""
    actual, expected = keras.tree.flatten(actual), keras.tree.flatten(expected)
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        difference = np.max(np.abs(a - e))
        scale = np.max(np.abs(e))
        # An all-zero output (a ReLU that cut everything) is compared absolutely.
        worst = max(worst, difference / scale if scale > 0 else difference)
    return worst


def fold_and_compare(model, rng, rtol=FOLD_FLOAT32_RTOL):
    """Folds with verification off and checks parity independently."""
    set_statistics(model, rng)
    x = random_inputs(model, rng)
    folded, report = fold_batchnorm(model, verify=False, return_report=True)
    error = relative_error(folded(x, training=False), model(x, training=False))
    assert error <= rtol, f"relative error {error:.3g}\n{report}"
    return folded, report


def single_path(layer_factory, input_shape, bn_first, bn_class, **bn_kwargs):
    """`Input -> BN -> layer` (`bn_first`) or `Input -> layer -> BN`."""
    inputs = keras.Input(input_shape)
    if bn_first:
        x = bn_class(**bn_kwargs)(inputs)
        x = layer_factory()(x)
    else:
        x = layer_factory()(inputs)
        x = bn_class(**bn_kwargs)(x)
    return keras.Model(inputs, x)
