"""The folding-pattern models of `tests.helpers.export` are what they claim."""

import keras
import numpy as np
import pytest

from tests.helpers.export import PATTERNS, build_pattern

L = keras.layers


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
