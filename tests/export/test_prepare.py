"""Which models can be exported, checked before any conversion starts."""

import keras
import pytest
import tensorflow as tf

from keras_bn.export.prepare import input_spec, prepare_model
from tests.helpers.export import build_pattern


def test_spec_frees_only_the_batch_dimension():
    spec = input_spec(build_pattern("conv1d_bn"))
    assert spec.shape.as_list() == [None, 16, 4] and spec.dtype == tf.float32


def _two_inputs():
    a, b = keras.Input((3,)), keras.Input((3,))
    return keras.Model([a, b], keras.layers.Add()([a, b]))


def _unknown_width():
    inputs = keras.Input((8, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))


def _uint8_input():
    inputs = keras.Input((4, 4, 1), dtype="uint8")
    return keras.Model(inputs, keras.layers.Rescaling(1 / 255)(inputs))


@pytest.mark.parametrize(
    "make_model, error, match",
    [
        (_two_inputs, ValueError, "Received: 2 inputs and 1 outputs"),
        (_unknown_width, ValueError, r"input shape=\(None, 8, None, 3\)"),
        (_uint8_input, ValueError, "input dtype=uint8"),
        (lambda: keras.layers.Dense(3), TypeError, "of type Dense"),
    ],
)
def test_unexportable_model_raises(make_model, error, match):
    with pytest.raises(error, match=match):
        input_spec(make_model())


def test_no_fold_returns_the_model_itself():
    model = build_pattern("dense_bn")
    prepared = prepare_model(model, fold=False)
    assert prepared.exported is model and prepared.reference is model
    assert prepared.fold_report is None and prepared.population is None
