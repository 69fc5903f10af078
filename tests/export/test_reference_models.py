"""`without_batchnorm`: the BN-free network a perfect fold would leave."""

import keras
import numpy as np
import pytest

from keras_bn.export import without_batchnorm
from keras_bn.export.reference_models import PassThrough, is_batchnorm
from tests.helpers.export import PATTERNS, build_pattern, pattern_inputs


@pytest.mark.parametrize("pattern", PATTERNS)
def test_equals_the_pattern_built_without_bn(pattern):
    model, reference = build_pattern(pattern), build_pattern(pattern, with_bn=False)
    bn_free = without_batchnorm(model)
    x = pattern_inputs(model)
    assert not any(is_batchnorm(layer) for layer in bn_free.layers)
    assert sum(isinstance(layer, PassThrough) for layer in bn_free.layers) == 1
    # Same weights, same float32 ops in the same order: bitwise equal.
    np.testing.assert_array_equal(bn_free(x).numpy(), reference(x).numpy())


def test_original_is_untouched_and_shares_no_weights():
    model = build_pattern("conv2d_bn")
    before = [w.copy() for w in model.get_weights()]
    bn_free = without_batchnorm(model)
    bn_free.layers[1].kernel.assign(np.zeros(bn_free.layers[1].kernel.shape))
    assert any(is_batchnorm(layer) for layer in model.layers)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nested_models_are_rewritten():
    inner = build_pattern("conv2d_bn")
    inputs = keras.Input((12, 12, 3))
    outer = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inner(inputs)))
    bn_free = without_batchnorm(outer)
    nested = [layer for layer in bn_free.layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1
    assert not any(is_batchnorm(layer) for layer in nested[0].layers)


def test_rejects_a_non_model():
    with pytest.raises(TypeError, match="Received: model='resnet'"):
        without_batchnorm("resnet")
