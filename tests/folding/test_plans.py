"""Planning and plans: what each call becomes, and the layers plans build.

`plan_graph` is checked against how a small model was wired; each plan's
new layer is checked against the original layers it stands for, or against
the BN inference formula in NumPy float64.
"""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.folding import ChannelAffine
from keras_bn.folding.graph import GraphView, plan_graph
from keras_bn.folding.plans import (
    AbsorbBatchNorms,
    CopyLayer,
    FoldIntoNeighbour,
    KeepBatchNorm,
    ReplaceByAffine,
    ShareOperation,
    batchnorm_scale_shift_of,
)
from keras_bn.keras_objects import rebuild_layer
from tests.helpers.folding import relative_error, set_statistics
from tests.helpers.reference import layer_inference
from tests.tolerances import FOLD_FLOAT32_RTOL

L = keras.layers


def planned_model(rng):
    """BN -> Conv -> BN (both fold), ReLU, BN (affine), x*2, BN (kept)."""
    i = keras.Input((7, 7, 3))
    x = L.BatchNormalization(name="bn_in")(i)
    x = L.Conv2D(4, 3, use_bias=False, name="conv")(x)
    x = L.BatchNormalization(name="bn_out")(x)
    x = L.ReLU(name="relu")(x)
    x = L.BatchNormalization(name="bn_relu")(x)
    x = keras.ops.multiply(x, 2.0)
    x = L.BatchNormalization(name="bn_kept")(x, training=True)
    model = keras.Model(i, x)
    set_statistics(model, rng)
    view = GraphView(model)
    plans, entries = plan_graph(view, "", {})
    by_name = {call.layer.name: plans[id(call)] for call in view.calls}
    return model, by_name, entries


def test_each_call_gets_the_plan_its_wiring_allows(rng):
    model, plans, entries = planned_model(rng)
    assert isinstance(plans["bn_in"], FoldIntoNeighbour)
    assert isinstance(plans["bn_out"], FoldIntoNeighbour)
    assert plans["bn_in"].neighbour.layer is model.get_layer("conv")
    assert (plans["bn_in"].entry.direction, plans["bn_out"].entry.direction) == (
        "before",
        "after",
    )
    assert isinstance(plans["conv"], AbsorbBatchNorms)
    assert plans["conv"].folds == (plans["bn_in"], plans["bn_out"])
    assert type(plans["relu"]) is CopyLayer
    assert isinstance(plans["bn_relu"], ReplaceByAffine)
    assert isinstance(plans["bn_kept"], KeepBatchNorm)
    (multiply,) = [p for p in plans.values() if isinstance(p, ShareOperation)]
    assert not isinstance(multiply.layer, L.Layer)
    assert [e.batchnorm for e in entries] == ["bn_in", "bn_out", "bn_relu", "bn_kept"]


def test_absorbing_layer_computes_both_batchnorms(rng):
    model, plans, _ = planned_model(rng)
    x = rng.normal(size=(2, 7, 7, 3)).astype("float32")
    bn_in, conv, bn_out = (model.get_layer(n) for n in ("bn_in", "conv", "bn_out"))
    expected = bn_out(conv(bn_in(x, training=False)), training=False)
    plan = plans["conv"]
    new_conv = plan.build()
    new_conv(x)
    plan.load_weights(new_conv)
    assert new_conv is not conv and new_conv.use_bias and not conv.use_bias
    assert relative_error(new_conv(x), expected) <= FOLD_FLOAT32_RTOL


def test_replace_by_affine_computes_the_inference_formula(rng):
    model, plans, _ = planned_model(rng)
    plan, bn = plans["bn_relu"], model.get_layer("bn_relu")
    affine = plan.build()
    assert isinstance(affine, ChannelAffine)
    assert (affine.axis, affine.name) == (bn.axis, bn.name)
    x = rng.normal(size=(2, 5, 5, 4)).astype("float32")
    affine(x)
    plan.load_weights(affine)
    assert relative_error(affine(x), layer_inference(bn, x)) <= FOLD_FLOAT32_RTOL


def test_folded_batchnorm_passes_its_input_through(rng):
    model, plans, _ = planned_model(rng)
    (call,) = [c for c in GraphView(model).calls if c.layer.name == "bn_out"]
    new_input = keras.Input((5, 5, 4))
    new_layers = {}
    outputs = plans["bn_out"].replay(call, {id(call.args[0]): new_input}, new_layers)
    assert outputs == [new_input] and new_layers == {}


def test_copies_are_new_layers_with_the_same_config_and_weights(rng):
    model, plans, _ = planned_model(rng)
    bn = model.get_layer("bn_kept")
    copy = plans["bn_kept"].build()
    copy(keras.Input((5, 5, 4)))
    plans["bn_kept"].load_weights(copy)
    assert copy is not bn and copy.get_config() == bn.get_config()
    for a, b in zip(copy.get_weights(), bn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_batchnorm_scale_shift_of_matches_the_formula(center, scale, rng):
    bn = keras_bn.BatchNormalization(center=center, scale=scale, epsilon=0.01)
    bn.build((None, 4))
    set_statistics(bn, rng)
    x = rng.normal(size=(3, 4))
    s, t = batchnorm_scale_shift_of(bn)
    assert s.dtype == t.dtype == np.float64
    np.testing.assert_allclose(x * s + t, layer_inference(bn, x), rtol=1e-12)


def test_a_layer_that_cannot_be_rebuilt_is_named():
    class NoConfig(L.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

    layer = NoConfig(3, name="odd")
    with pytest.raises(
        TypeError, match=r"'odd' \(NoConfig\) cannot be rebuilt.*Received"
    ):
        rebuild_layer(layer, {"name": "odd"})  # `units` missing
