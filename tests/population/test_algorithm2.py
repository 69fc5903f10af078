"""keras_bn.population_statistics equals a float64 NumPy Algorithm 2, layer by layer,
and is all or nothing."""

import json

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


def sequential_model(seed=0):
    """Ours and Keras' BN, Dropout between them, a frozen BN and a renorm BN."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            layers.Conv2D(8, 3, use_bias=False),
            keras_bn.BatchNormalization(name="ours"),
            layers.ReLU(),
            layers.Dropout(0.5),
            layers.Conv2D(6, 3),
            layers.BatchNormalization(name="theirs"),
            layers.Flatten(),
            layers.Dense(7),
            keras_bn.BatchNormalization(name="frozen", unbiased_moving_variance=True),
            layers.Dense(5),
            keras_bn.BatchNormalization(name="renorm", renorm=True),
        ]
    )
    model.get_layer("frozen").trainable = False
    set_stand_in_statistics(model, seed=seed)
    return model


class Residual:
    """A Functional recipe: a nested Sequential block, a BN shared by two branches."""

    def __init__(self):
        keras.utils.set_random_seed(1)
        self.stem = layers.Conv2D(4, 3, padding="same", use_bias=False)
        self.block = keras.Sequential(
            [
                layers.Conv2D(4, 3, padding="same"),
                keras_bn.BatchNormalization(name="block_bn", axis=[-1]),
                layers.ReLU(),
            ],
            name="block",
        )
        self.shared = keras_bn.BatchNormalization(name="shared")
        self.branch = layers.Conv2D(4, 1)
        self.head_bn = layers.BatchNormalization(name="head_bn")
        self.pool = layers.GlobalAveragePooling2D()

    def __call__(self, x, apply):
        h = apply(self.stem, x)
        a = apply(self.shared, h)
        if apply is keras_call:  # a nested model in the Keras graph
            b = self.block(h)
        else:
            b = sequential_recipe(self.block)(h, apply)
        b = apply(self.shared, apply(self.branch, b))
        h = apply(layers.Add(), [a, b]) if apply is keras_call else a + b
        return apply(self.pool, apply(self.head_bn, h))

    def model(self):
        x = keras.Input((5, 5, 2))
        model = keras.Model(x, self(x, keras_call))
        set_stand_in_statistics(model, seed=1)
        return model


def images(n, shape=(6, 6, 3), seed=0, loc=0.5, scale=2.0):
    return np.random.default_rng(seed).normal(loc, scale, (n, *shape)).astype("float32")


@pytest.mark.parametrize("unbiased", [True, False])
def test_sequential_matches_algorithm2(unbiased):
    model = sequential_model()
    x = images(70)  # 16, 16, 16, 16, 6: the short last batch weighs 6/70
    reference = algorithm2(sequential_recipe(model), array_batches(x, 16), unbiased)
    report = keras_bn.population_statistics(
        model, x, batch_size=16, unbiased=unbiased, verbose=0
    )
    assert_matches(report, reference, POPULATION_RTOL)
    assert (report.batches, report.skipped_batches) == (5, 0)
    for layer in report.layers:
        bn = model.get_layer(layer.name)
        np.testing.assert_array_equal(bn.moving_mean, layer.mean.astype("float32"))
        np.testing.assert_array_equal(
            bn.moving_variance, layer.variance.astype("float32")
        )
    renorm = model.get_layer("renorm")
    np.testing.assert_allclose(
        renorm.moving_stddev,
        np.sqrt(reference["renorm"][1] + renorm.epsilon),
        rtol=POPULATION_RTOL,
    )


def test_the_pass_restores_every_setting_it_borrows():
    model = sequential_model()
    settings = [
        (layer.momentum, layer.trainable, layer.renorm, vars(layer).get("call"))
        for layer in model.layers
        if isinstance(layer, layers.BatchNormalization)
    ]
    trainable = [v.trainable for v in model.variables]
    keras_bn.population_statistics(model, images(20), verbose=0)
    assert settings == [
        (layer.momentum, layer.trainable, layer.renorm, vars(layer).get("call"))
        for layer in model.layers
        if isinstance(layer, layers.BatchNormalization)
    ]
    assert trainable == [v.trainable for v in model.variables]
    assert model.get_layer("frozen").unbiased_moving_variance is True
    # The model still trains and infers as before the pass.
    model.compile("sgd", "mse")
    model.fit(images(8), np.zeros((8, 5)), verbose=0)


def test_functional_nested_and_shared_match_algorithm2():
    recipe = Residual()
    model = recipe.model()
    x = images(40, (5, 5, 2), seed=2)
    reference = algorithm2(recipe, array_batches(x, 10))
    report = keras_bn.population_statistics(model, x, batch_size=10, verbose=0)
    assert_matches(report, reference, POPULATION_RTOL)
    # The shared BN sees both branches: twice the values of the others.
    counts = {layer.name: layer.count for layer in report.layers}
    assert counts["shared"] == 2 * counts["head_bn"] == 2 * 40 * 25


def test_masked_values_do_not_count():
    tokens = np.random.default_rng(3).integers(0, 6, (24, 9))
    tokens[:, 6:] = 0  # padding: a third of each sequence is masked
    keras.utils.set_random_seed(3)
    embedding = layers.Embedding(6, 4, mask_zero=True)
    bn = keras_bn.BatchNormalization(name="masked", unbiased_moving_variance=True)
    theirs = layers.BatchNormalization(name="masked_keras")
    pool = layers.GlobalAveragePooling1D()

    def recipe(x, apply):
        mask = keras.ops.not_equal(x, 0) if apply is keras_call else x != 0
        h = apply(bn, apply(embedding, x), mask=mask)
        return apply(pool, apply(theirs, h, mask=mask), mask=mask)

    inputs = keras.Input((9,), dtype="int32")
    model = keras.Model(inputs, recipe(inputs, keras_call))
    set_stand_in_statistics(model, seed=3)
    reference = algorithm2(recipe, array_batches(tokens, 8))
    report = keras_bn.population_statistics(model, tokens, batch_size=8, verbose=0)
    assert_matches(report, reference, POPULATION_RTOL)
    assert [layer.count for layer in report.layers] == [np.count_nonzero(tokens)] * 2
    before = snapshot(model)
    with pytest.raises(ValueError, match="No value reached a BN"):
        keras_bn.population_statistics(model, np.zeros_like(tokens), verbose=0)
    assert_unchanged(model, before)


@pytest.mark.parametrize("unbiased", [True, False])
def test_ghost_batches_count_per_ghost_batch(unbiased):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((3, 5)),
            layers.Dense(4),
            keras_bn.BatchNormalization(virtual_batch_size=4, name="ghost"),
        ]
    )
    set_stand_in_statistics(model, seed=4)
    x = images(32, (3, 5), seed=4)
    reference = algorithm2(sequential_recipe(model), array_batches(x, 16), unbiased)
    report = keras_bn.population_statistics(
        model, x, batch_size=16, unbiased=unbiased, verbose=0
    )
    assert_matches(report, reference, POPULATION_RTOL)


def test_every_form_of_data_gives_the_same_estimate():
    x = images(48)
    y = np.zeros((48, 5), "float32")
    expected = keras_bn.population_statistics(
        sequential_model(), x, batch_size=16, apply=False, verbose=0
    )
    forms = {
        "dataset (x, y)": tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
        "generator": (x[s : s + 16] for s in range(0, 48, 16)),
        "list of (x, y)": [(x[s : s + 16], y[s : s + 16]) for s in range(0, 48, 16)],
        "steps": tf.data.Dataset.from_tensor_slices(np.concatenate([x, x])).batch(16),
    }
    for form, data in forms.items():
        steps = 3 if form == "steps" else None
        report = keras_bn.population_statistics(
            sequential_model(), data, steps=steps, apply=False, verbose=0
        )
        assert report.batches == 3, form
        for got, want in zip(report.layers, expected.layers, strict=True):
            np.testing.assert_array_equal(got.mean, want.mean, err_msg=form)
            np.testing.assert_array_equal(got.variance, want.variance, err_msg=form)


def test_apply_false_changes_nothing_and_reports_the_same_estimate():
    model = sequential_model()
    before = snapshot(model)
    report = keras_bn.population_statistics(model, images(32), apply=False, verbose=0)
    assert_unchanged(model, before)
    assert not report.applied
    applied = keras_bn.population_statistics(model, images(32), verbose=0)
    for a, b in zip(report.layers, applied.layers, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.variance, b.variance)


def test_report_measures_the_distance_of_the_moving_statistics():
    model = sequential_model()
    report = keras_bn.population_statistics(model, images(32), apply=False, verbose=0)
    for layer in report.layers:
        bn = model.get_layer(layer.name)
        sigma = np.sqrt(layer.variance + bn.epsilon)
        shift = np.abs(np.asarray(bn.moving_mean, np.float64) - layer.mean) / sigma
        ratio = (np.asarray(bn.moving_variance, np.float64) + bn.epsilon) / sigma**2
        assert layer.max_mean_shift == pytest.approx(shift.max())
        assert layer.variance_ratio_range == pytest.approx((ratio.min(), ratio.max()))
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert [entry["name"] for entry in as_dict["layers"]] == [
        "ours",
        "theirs",
        "frozen",
        "renorm",
    ]
    assert all(name in report.summary() for name in ("ours", "theirs", "not applied"))
    # Re-estimating on the same data leaves nothing to correct.
    keras_bn.population_statistics(model, images(32), verbose=0)
    again = keras_bn.population_statistics(model, images(32), apply=False, verbose=0)
    assert max(layer.max_mean_shift for layer in again.layers) < 1e-5


def test_nan_batches_are_skipped_and_counted():
    x = images(48)
    poisoned = [x[:16], np.full_like(x[:16], np.nan), x[16:32], x[32:48]]
    poisoned[3] = poisoned[3].copy()
    poisoned[3][0, 0, 0, 0] = np.inf
    report = keras_bn.population_statistics(
        sequential_model(), poisoned, apply=False, verbose=0
    )
    clean = keras_bn.population_statistics(
        sequential_model(), [x[:16], x[16:32]], apply=False, verbose=0
    )
    assert (report.batches, report.skipped_batches) == (2, 2)
    for got, want in zip(report.layers, clean.layers, strict=True):
        np.testing.assert_array_equal(got.mean, want.mean)


def test_all_bad_batches_leave_the_model_unchanged():
    model = sequential_model()
    before = snapshot(model)
    nan = np.full((8, 6, 6, 3), np.nan, "float32")
    with pytest.raises(ValueError, match=r"NaN or Inf \(2 of 2 skipped\)"):
        keras_bn.population_statistics(model, [nan, nan], verbose=0)
    assert_unchanged(model, before)


def test_a_failure_midway_leaves_the_model_unchanged():
    model = sequential_model()
    before = snapshot(model)

    def batches():
        yield images(8)
        yield images(8, seed=1)
        raise RuntimeError("the data pipeline broke")

    with pytest.raises(RuntimeError, match="pipeline broke"):
        keras_bn.population_statistics(model, batches(), verbose=0)
    assert_unchanged(model, before)
    assert all(
        "call" not in vars(layer) and layer.momentum != 0.0
        for layer in model.layers
        if isinstance(layer, layers.BatchNormalization)
    )


@pytest.mark.parametrize(
    "data, kwargs, error, match",
    [
        (np.zeros((0, 6, 6, 3), "float32"), {}, ValueError, "at least one example"),
        (iter([]), {}, ValueError, "gave no batches"),
        (iter([images(0)]), {}, ValueError, "gave no batches"),
        (np.zeros((4, 6, 6), "float32"), {}, ValueError, r"\(None, 6, 6, 3\)"),
        (np.zeros((4, 5, 6, 3), "float32"), {}, ValueError, r"\[\(4, 5, 6, 3\)\]"),
        (images(4), {"steps": 0}, ValueError, "steps=0"),
        (images(4), {"batch_size": -1}, ValueError, "batch_size=-1"),
        (iter([images(4)]), {"batch_size": 4}, ValueError, "array data only"),
        ([images(4), images(4)[:, :5]], {}, ValueError, r"\[\(4, 5, 6, 3\)\]"),
        (images(4), {"verbose": 3}, ValueError, "verbose=3"),
        (images(4), {"unbiased": "yes"}, TypeError, "unbiased='yes'"),
        (42, {}, TypeError, "type int"),
    ],
)
def test_bad_input_raises_and_leaves_the_model_unchanged(data, kwargs, error, match):
    model = sequential_model()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        keras_bn.population_statistics(model, data, **{"verbose": 0, **kwargs})
    assert_unchanged(model, before)


def test_a_model_without_batchnorm_is_refused():
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="'plain' has no BatchNormalization"):
        keras_bn.population_statistics(model, np.zeros((4, 3)), verbose=0)


def test_progress_bar_follows_verbose(capsys):
    keras_bn.population_statistics(sequential_model(), images(32), verbose=0)
    assert capsys.readouterr().out == ""
    keras_bn.population_statistics(sequential_model(), images(64), verbose="auto")
    assert "2/2" in capsys.readouterr().out


def test_with_population_statistics_updates_a_copy_only():
    model = sequential_model()
    before = snapshot(model)
    copy, report = keras_bn.with_population_statistics(model, images(32), verbose=0)
    assert_unchanged(model, before)
    original_ids = {id(v) for v in model.variables}
    assert not original_ids & {id(v) for v in copy.variables}
    expected = keras_bn.population_statistics(
        sequential_model(), images(32), apply=False, verbose=0
    )
    for entry, want in zip(report.layers, expected.layers, strict=True):
        bn = copy.get_layer(entry.name)
        np.testing.assert_array_equal(bn.moving_mean, want.mean.astype("float32"))
        np.testing.assert_array_equal(
            bn.moving_variance, want.variance.astype("float32")
        )
    x = images(4, seed=9)
    for a, b in zip(model.get_weights(), copy.get_weights(), strict=True):
        assert a.shape == b.shape
    assert not np.allclose(model.predict(x, verbose=0), copy.predict(x, verbose=0))
    with pytest.raises(TypeError, match="apply=False"):
        keras_bn.with_population_statistics(model, images(32), apply=False)


def test_population_statistics_recover_stale_moving_averages():
    # Brief training with momentum 0.999 leaves the moving averages near their
    # initial values; the population statistics make inference match the
    # training-mode function on the same data.
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            layers.Conv2D(8, 3, use_bias=False),
            keras_bn.BatchNormalization(momentum=0.999),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(1),
        ]
    )
    x = images(64, seed=5, loc=3.0)
    model.compile("adam", "mse")
    model.fit(x, x.mean(axis=(1, 2, 3))[:, None], epochs=2, verbose=0)
    train_mode = model(x, training=True).numpy()  # updates the moving stats once more
    stale = np.abs(model.predict(x, verbose=0) - train_mode).max()
    keras_bn.population_statistics(model, x, batch_size=64, unbiased=False, verbose=0)
    recovered = np.abs(model.predict(x, verbose=0) - train_mode).max()
    assert recovered < 1e-4 * np.abs(train_mode).max() < stale


def sequences_hiding_channels(seed=7):
    """Three batches of (8, 4, 3): the second hides timesteps 2–3, the third
    hides timestep 3 in half of its sequences (zeros, which `Masking` masks)."""
    rng = np.random.default_rng(seed)
    loc = np.array([1.0, 1.0, -0.8, -0.5])[None, :, None]
    batches = [rng.normal(loc, 1.5, (8, 4, 3)).astype("float32") for _ in range(3)]
    batches[1][:, 2:] = 0.0
    batches[2][:4, 3] = 0.0
    return batches


@pytest.mark.parametrize("unbiased", [True, False])
def test_each_channel_is_weighted_by_its_own_count(unbiased):
    # Masking before BN(axis=1): the mask varies along the channel axis, so a
    # channel hidden in one batch must count 0 there, not add a mean of 0.
    keras.utils.set_random_seed(7)
    masking = layers.Masking(0.0)
    ours = keras_bn.BatchNormalization(axis=1, name="ours")
    theirs = layers.BatchNormalization(axis=1, name="theirs")
    ghost = keras_bn.BatchNormalization(axis=1, virtual_batch_size=3, name="ghost")

    def recipe(x, apply):
        h = apply(masking, x)
        mask = masking.compute_mask(x) if apply is keras_call else np.any(x != 0, -1)
        for bn in (ours, theirs, ghost):
            h = apply(bn, h, mask=mask)
        return h

    inputs = keras.Input((4, 3))
    model = keras.Model(inputs, recipe(inputs, keras_call))
    set_stand_in_statistics(model, seed=7)
    batches = sequences_hiding_channels()
    reference = algorithm2(recipe, batches, unbiased)
    report = keras_bn.population_statistics(
        model, iter(batches), unbiased=unbiased, verbose=0
    )
    assert_matches(report, reference, POPULATION_RTOL)
    np.testing.assert_array_equal(reference["ours"][2], [72, 72, 48, 36])
    for layer in report.layers:
        bn = model.get_layer(layer.name)
        np.testing.assert_array_equal(bn.moving_mean, layer.mean.astype("float32"))
