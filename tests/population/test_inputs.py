"""population_statistics takes `x` as `model.fit` does: several inputs as a list,
tuple or dict by input name, batches of varying shape where the model accepts
them, and refuses what no model input can take with a named error."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from keras_bn.stand_in_statistics import set_stand_in_statistics
from tests.helpers.population import (
    algorithm2,
    array_batches,
    assert_matches,
    assert_unchanged,
    keras_call,
    sequential_recipe,
    snapshot,
)
from tests.tolerances import POPULATION_RTOL

layers = keras.layers


class TwoInputs:
    """Inputs declared as [z, a] (not sorted by name), concatenated, then BN."""

    def __init__(self):
        keras.utils.set_random_seed(11)
        self.concat = layers.Concatenate()
        self.dense = layers.Dense(4)
        self.bn = keras_bn.BatchNormalization(name="bn")

    def __call__(self, x, apply):
        z, a = (x["z"], x["a"]) if isinstance(x, dict) else x
        return apply(self.bn, apply(self.dense, apply(self.concat, [z, a])))

    def model(self):
        z, a = keras.Input((3,), name="z"), keras.Input((2,), name="a")
        model = keras.Model([z, a], self([z, a], keras_call))
        set_stand_in_statistics(model, seed=11)
        return model


class PairBatches(keras.utils.PyDataset):
    """`((z, a), y)` in batches of 8, as a `keras.utils.PyDataset`."""

    def __init__(self, z, a, y):
        super().__init__()
        self.z, self.a, self.y = z, a, y

    def __len__(self):
        return len(self.z) // 8

    def __getitem__(self, index):
        batch = slice(8 * index, 8 * index + 8)
        return (self.z[batch], self.a[batch]), self.y[batch]


def two_input_data(n=40, seed=11):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(1.0, 2.0, (n, 3)).astype("float32"),
        rng.normal(-1.0, 0.5, (n, 2)).astype("float32"),
    )


def test_several_inputs_in_every_form_fit_takes():
    import jax.numpy as jnp  # an array-like fit takes (the test extras hold JAX)

    recipe = TwoInputs()
    model = recipe.model()
    z, a = two_input_data()
    y = np.zeros((len(z), 4), "float32")
    reference = algorithm2(
        recipe,
        [
            [zb, ab]
            for zb, ab in zip(array_batches(z, 8), array_batches(a, 8), strict=True)
        ],
    )
    forms = {
        "list": [z, a],
        "tuple": (z, a),
        "dict by name": {"a": a, "z": z},
        "dataset of (x, y)": tf.data.Dataset.from_tensor_slices(((z, a), y)).batch(8),
        "dataset of dicts": tf.data.Dataset.from_tensor_slices({"z": z, "a": a}).batch(
            8
        ),
        "PyDataset of (x, y)": PairBatches(z, a, y),
        "JAX arrays": [jnp.asarray(z), jnp.asarray(a)],
        "generator of (x, y, w)": (
            ([z[s : s + 8], a[s : s + 8]], y[s : s + 8], np.ones(8))
            for s in range(0, len(z), 8)
        ),
    }
    for form, data in forms.items():
        arrays = isinstance(data, (list, tuple, dict))
        batch_size = 8 if arrays else None
        report = keras_bn.population_statistics(
            model, data, batch_size=batch_size, apply=False, verbose=0
        )
        assert report.batches == 5, form
        assert_matches(report, reference, POPULATION_RTOL)


def test_a_dict_missing_an_input_name_is_refused():
    model = TwoInputs().model()
    z, _ = two_input_data()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"missing \['a'\]"):
        keras_bn.population_statistics(model, {"z": z}, verbose=0)
    assert_unchanged(model, before)


def test_batches_of_varying_length_when_the_model_takes_any_length():
    keras.utils.set_random_seed(12)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            layers.Dense(3),
            keras_bn.BatchNormalization(name="ours"),
            layers.BatchNormalization(name="theirs"),
        ]
    )
    set_stand_in_statistics(model, seed=12)
    rng = np.random.default_rng(12)
    batches = [
        rng.normal(0.5, 2.0, (4, length, 3)).astype("float32") for length in (5, 7, 5)
    ]
    reference = algorithm2(sequential_recipe(model), batches)
    report = keras_bn.population_statistics(model, iter(batches), verbose=0)
    assert_matches(report, reference, POPULATION_RTOL)
    assert report.layers[0].count == 4 * (5 + 7 + 5)


@pytest.mark.parametrize(
    "data, dtype",
    [
        (np.full((4, 3), "a"), "<U1"),
        (np.full((4, 3), b"a"), "|S1"),
        (np.array([[1.0, 2.0, None]] * 4, dtype=object), "object"),
    ],
)
def test_arrays_of_strings_or_objects_are_refused_by_name(data, dtype):
    model = keras.Sequential([keras.Input((3,)), keras_bn.BatchNormalization()])
    before = snapshot(model)
    with pytest.raises(TypeError, match=f"numbers or booleans.*dtype {dtype}"):
        keras_bn.population_statistics(model, data, verbose=0)
    assert_unchanged(model, before)
