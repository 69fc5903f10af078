"""The rebuild engine replays any graph by its plans, knowing nothing of BN.

Copy plans must reproduce the original model exactly (structure, sharing,
outputs); a test-only plan shows the engine applies whatever a plan builds.
"""

import keras
import numpy as np

from keras_bn.folding import fold, graph
from keras_bn.folding.engine import rebuild
from keras_bn.folding.plans import CopyLayer, ShareOperation
from keras_bn.keras_adapter import functional_graph, layer_calls

L = keras.layers


def copy_steps(model):
    calls = layer_calls(functional_graph(model))
    return [
        (
            c,
            CopyLayer(c.layer)
            if isinstance(c.layer, L.Layer)
            else ShareOperation(c.layer),
        )
        for c in calls
    ]


def two_input_model():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = L.Dense(3, name="shared")
    x = keras.ops.relu(shared(a)) * 2.0
    y = shared(b)
    return keras.Model({"a": a, "b": b}, {"x": x, "sum": L.Add(name="add")([x, y])})


def test_copy_plans_reproduce_the_model(rng):
    model = two_input_model()
    copy = rebuild(model, model, copy_steps(model))
    data = {"a": rng.normal(size=(2, 4)), "b": rng.normal(size=(2, 4))}
    expected, actual = model(data), copy(data)
    assert sorted(actual) == ["sum", "x"] and copy.name == model.name
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key])
    # One new Dense for its two calls: sharing survives the rebuild.
    shared = [c.layer for c in layer_calls(copy) if c.layer.name == "shared"]
    assert len(shared) == 2 and shared[0] is shared[1]
    assert shared[0] is not model.get_layer("shared")


def test_a_sequential_model_stays_sequential(rng):
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, name="d1"), L.ReLU(), L.Dense(2, name="d2")]
    )
    copy = rebuild(model, functional_graph(model), copy_steps(model))
    assert isinstance(copy, keras.Sequential)
    assert [x.name for x in copy.layers] == [x.name for x in model.layers]
    x = rng.normal(size=(3, 5))
    np.testing.assert_array_equal(copy(x), model(x))


class NegatedCopy(CopyLayer):
    """A test plan: the same layer with every weight negated."""

    def load_weights(self, new_layer):
        new_layer.set_weights([-w for w in self.layer.get_weights()])


def test_the_engine_builds_whatever_each_plan_builds(rng):
    i = keras.Input((4,))
    model = keras.Model(i, L.Dense(3, name="dense")(i))
    (call,) = layer_calls(model)
    negated = rebuild(model, model, [(call, NegatedCopy(call.layer))])
    x = rng.normal(size=(2, 4))
    np.testing.assert_allclose(negated(x), -model(x), rtol=1e-6)


def test_a_fold_checks_the_model_once(monkeypatch, rng):
    calls = []
    original = graph.check_foldable_model

    def counting(model):
        calls.append(model)
        return original(model)

    monkeypatch.setattr(fold, "check_foldable_model", counting)
    monkeypatch.setattr(graph, "check_foldable_model", counting)
    i = keras.Input((4,))
    model = keras.Model(i, L.BatchNormalization()(L.Dense(3)(i)))
    fold.fold_batchnorm(model, verify=False)
    assert calls == [model]
