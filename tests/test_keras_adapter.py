"""`keras_bn.keras_adapter` reads Keras' model structure correctly.

These tests pin down what the rest of keras_bn relies on from Keras'
private structure (checked against `CHECKED_AGAINST_KERAS`): after a Keras
upgrade they are the first to say what moved. Each compares the adapter's
answer with what the model was built from.
"""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn import keras_adapter
from keras_bn.keras_adapter import (
    batch_moments_mode,
    batchnorm_layers,
    call_for_batch_moments,
    call_replaced,
    functional_graph,
    input_like,
    input_structure,
    is_batchnorm,
    is_subclassed_model,
    iter_layers,
    layer_calls,
    output_structure,
)
from tests.tolerances import POPULATION_RTOL

L = keras.layers


def shared_dense_model():
    """Two inputs through one shared Dense, a BN on each branch, added."""
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    dense = L.Dense(3, name="shared")
    x = L.BatchNormalization(name="bn_a")(dense(a))
    y = L.BatchNormalization(name="bn_b")(dense(b))
    return keras.Model({"a": a, "b": b}, {"sum": L.Add(name="add")([x, y])})


class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(2)
        self.bn = L.BatchNormalization()

    def call(self, x):
        return self.bn(self.dense(x))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_checked_version_names_a_keras_3_release():
    major, minor = (int(p) for p in keras_adapter.CHECKED_AGAINST_KERAS.split("."))
    assert major == 3 and minor >= 5


def test_functional_graph_of_each_kind_of_model(rng):
    functional = shared_dense_model()
    assert functional_graph(functional) is functional
    sequential = keras.Sequential([keras.Input((4,)), L.Dense(2, name="d")])
    graph = functional_graph(sequential)
    assert isinstance(graph, keras.Model) and graph is not sequential
    assert [c.layer.name for c in layer_calls(graph)] == ["d"]
    assert functional_graph(keras.Sequential([L.Dense(2)])) is None
    subclassed = Subclassed()
    subclassed(rng.normal(size=(1, 4)))
    assert functional_graph(subclassed) is None and is_subclassed_model(subclassed)
    assert functional_graph(L.Dense(2)) is None
    assert not is_subclassed_model(functional)
    assert not is_subclassed_model(sequential)


def test_layer_calls_are_every_call_in_dependency_order():
    model = shared_dense_model()
    calls = layer_calls(model)
    names = [c.layer.name for c in calls]
    # The shared Dense appears once per call; the inputs not at all.
    assert sorted(names) == ["add", "bn_a", "bn_b", "shared", "shared"]
    produced = {id(x) for x in model.inputs}
    for call in calls:
        assert all(id(t) in produced for t in call.input_tensors), call.layer.name
        produced.update(id(t) for t in call.outputs)


def test_layer_call_exposes_its_arguments():
    i = keras.Input((4,))
    x = L.BatchNormalization(name="bn")(i, training=True)
    (call,) = layer_calls(keras.Model(i, x))
    assert call.args[0] is i and call.kwargs == {"training": True}
    assert list(call.input_tensors) == [i] and list(call.outputs) == [x]


def test_replay_calls_a_new_layer_on_new_tensors(rng):
    model = shared_dense_model()
    add_call = next(c for c in layer_calls(model) if c.layer.name == "add")
    x, y = (keras.Input((3,)) for _ in range(2))
    tensors = {id(t): n for t, n in zip(add_call.input_tensors, (x, y), strict=True)}
    (out,) = add_call.replay(L.Subtract(), tensors)
    replayed = keras.Model([x, y], out)
    a, b = rng.normal(size=(2, 5, 3))
    np.testing.assert_allclose(replayed([a, b]), a - b, rtol=1e-6)


def test_input_and_output_structures_and_fresh_inputs():
    model = shared_dense_model()
    inputs = input_structure(model)
    assert sorted(inputs) == ["a", "b"] and inputs["a"] is model.inputs[0]
    assert sorted(output_structure(model)) == ["sum"]
    sequential = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    assert input_structure(sequential) is sequential.inputs[0]
    fresh = input_like(inputs["b"])
    assert fresh is not inputs["b"]
    assert fresh.shape == (None, 4) and fresh.dtype == inputs["b"].dtype
    assert fresh.name == "b"


def test_iter_layers_walks_nested_models_and_sublayers_once():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="inner_dense")])
    i = keras.Input((4,))
    block = Block(name="block")
    x = block(inner(inner(i)))
    model = keras.Model(i, keras_bn.BatchNormalization(name="outer_bn")(x))
    layers = list(iter_layers(model))
    assert len(layers) == len({id(layer) for layer in layers})
    names = {layer.name for layer in layers}
    assert {"inner_dense", "block", "outer_bn", block.bn.name} <= names
    assert sorted(b.name for b in batchnorm_layers(model)) == sorted(
        [block.bn.name, "outer_bn"]
    )


@pytest.mark.parametrize(
    "layer, expected",
    [
        (L.BatchNormalization(), True),
        (keras_bn.BatchNormalization(), True),
        (L.LayerNormalization(), False),
        (L.Dense(2), False),
    ],
)
def test_is_batchnorm(layer, expected):
    assert is_batchnorm(layer) is expected


def test_momentum_zero_call_writes_the_batch_moments_and_is_undone(rng):
    # What population_statistics relies on: a training-mode call under
    # batch_moments_mode leaves exactly the batch mean and the biased batch
    # variance (over the unmasked values) in Keras' moving statistics.
    layer = L.BatchNormalization(momentum=0.99)
    x = rng.normal(2.0, 3.0, (6, 5, 4)).astype("float32")
    layer.build(x.shape)
    layer.set_weights([rng.uniform(0.5, 2.0, 4) for _ in range(4)])
    before = [w.copy() for w in layer.get_weights()]
    mask = rng.uniform(size=(6, 5)) < 0.6
    with batch_moments_mode(layer):
        outputs, mean, variance = call_for_batch_moments(layer, x)
        _, masked_mean, masked_variance = call_for_batch_moments(layer, x, mask)
        assert layer.momentum == 0.0 and layer.trainable
    values = x.astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(mean, values.mean(0), rtol=POPULATION_RTOL)
    np.testing.assert_allclose(variance, values.var(0), rtol=POPULATION_RTOL)
    kept = x.astype(np.float64)[mask]
    np.testing.assert_allclose(masked_mean, kept.mean(0), rtol=POPULATION_RTOL)
    np.testing.assert_allclose(masked_variance, kept.var(0), rtol=POPULATION_RTOL)
    gamma, beta = before[0], before[1]
    x_hat = (x - values.mean(0)) / np.sqrt(values.var(0) + layer.epsilon)
    # Outputs are O(1) (x̂ scaled by γ ≤ 2): the same float32 bound as absolute.
    np.testing.assert_allclose(
        outputs, gamma * x_hat + beta, rtol=POPULATION_RTOL, atol=POPULATION_RTOL
    )
    assert layer.momentum == 0.99
    for restored, saved in zip(layer.get_weights(), before, strict=True):
        np.testing.assert_array_equal(restored, saved)


def test_an_instance_call_replaces_the_class_call_until_exit(rng):
    layer, other = L.Dense(2), L.Dense(2)
    x = rng.normal(size=(3, 4)).astype("float32")
    layer(x), other(x)
    with call_replaced(layer, lambda inputs: inputs[:, :1] * 0.0 + 7.0):
        np.testing.assert_array_equal(layer(x), np.full((3, 1), 7.0))
        assert other(x).shape == (3, 2)
    assert "call" not in vars(layer)
    assert layer(x).shape == (3, 2)
