"""`keras_bn.export.op_counts`: the one definition of "BN ops left"."""

import keras
import pytest

import keras_bn
from keras_bn.export import (
    BATCHNORM_OP_TYPES,
    ELEMENTWISE_OP_TYPES,
    bn_layers_left,
    bn_ops_left,
)
from keras_bn.stand_in_statistics import set_stand_in_statistics


@pytest.mark.parametrize(
    "op",
    [
        "BatchNormalization",
        "FusedBatchNorm",
        "FusedBatchNormV2",
        "FusedBatchNormV3",
        "FlexFusedBatchNormV3",
    ],
)
def test_an_operator_that_is_a_bn_counts_without_a_reference(op):
    assert op in BATCHNORM_OP_TYPES
    assert bn_ops_left({"Conv": 3, op: 2}) == 2


@pytest.mark.parametrize("ops", [("MUL", "ADD", "SUB", "DIV"), ("Mul", "Add", "Div")])
def test_elementwise_ops_count_only_beyond_the_bn_free_network(ops):
    reference = {op: 1 for op in ops}
    histogram = {op: 3 for op in ops}
    assert set(ops) <= ELEMENTWISE_OP_TYPES
    assert bn_ops_left(histogram, reference) == 2 * len(ops)
    assert bn_ops_left(reference, reference) == 0
    # Fewer elementwise ops than the reference is not a negative BN.
    assert bn_ops_left({}, reference) == 0


def test_other_ops_never_count():
    histogram = {"Conv": 5, "Relu": 5, "Sqrt": 1, "Transpose": 2}
    assert bn_ops_left(histogram, {"Conv": 5}) == 0


def test_keras_models_count_batchnorm_and_channel_affine_layers():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3)(inputs)
    x = keras_bn.BatchNormalization()(x)
    y = keras.layers.Add()([x, x])
    y = keras.layers.BatchNormalization()(y)  # after Add: becomes ChannelAffine
    model = keras.Model(inputs, y)
    set_stand_in_statistics(model)
    assert bn_layers_left(model) == 2
    folded = keras_bn.fold_batchnorm(model)
    assert bn_layers_left(folded) == 1  # the ChannelAffine
    nested = keras.Sequential([keras.Input((6, 6, 2)), model])
    assert bn_layers_left(nested) == 2
