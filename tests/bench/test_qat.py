"""`keras-bn bench qat`: flags checked before training; the pruning option."""

import dataclasses

import numpy as np

import keras_bn
from keras_bn import cli, defaults
from keras_bn.bench.qat import (
    DEPTHWISE,
    EXPAND,
    mobilenet_style,
    prune_expansion_channels,
)


def test_freezing_after_more_epochs_than_qat_runs_is_refused_by_flag_name(capsys):
    code = cli.main(["bench", "qat", "--qat-epochs", "2", "-q"])
    assert code == defaults.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--freeze-bn-after must be at most --qat-epochs" in err
    assert "--freeze-bn-after 3 with --qat-epochs 2" in err


def test_a_prune_fraction_of_one_is_refused_by_flag_name(capsys):
    code = cli.main(["bench", "qat", "--prune-fraction", "1", "-q"])
    assert code == defaults.EXIT_BAD_INPUT
    assert "--prune-fraction must be below 1" in capsys.readouterr().err


def test_pruning_zeroes_the_weakest_expansion_channels_and_collapses_their_variance():
    model = mobilenet_style((8, 8, 1), num_classes=3, width=4, epsilon=1e-5)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    expansions = [layer for layer in model.layers if layer.name.endswith(EXPAND)]
    before = [np.array(layer.kernel) for layer in expansions]

    pruned = prune_expansion_channels(model, 0.25)
    keras_bn.population_statistics(model, x, verbose=0)

    assert [len(channels) for channels in pruned] == [4, 4, 8]  # 25% of 16, 16, 32
    for layer, kernel, channels in zip(expansions, before, pruned, strict=True):
        l1 = np.abs(kernel).sum(axis=(0, 1, 2))
        kept = np.setdiff1d(np.arange(l1.size), channels)
        assert l1[channels].max() <= l1[kept].min()
        after = np.array(layer.kernel)
        np.testing.assert_array_equal(after[..., channels], 0.0)
        np.testing.assert_array_equal(after[..., kept], kernel[..., kept])
        # The channel outputs exactly 0, so its BN statistics, and those of
        # the depthwise convolution it feeds, are exactly 0.
        block = layer.name[: -len(EXPAND)]
        for bn_name in (layer.name + "_bn", block + DEPTHWISE + "_bn"):
            bn = model.get_layer(bn_name)
            np.testing.assert_array_equal(np.array(bn.moving_variance)[channels], 0.0)
            assert np.all(np.array(bn.moving_variance)[kept] > 0)


def test_the_study_measures_every_model_on_its_files_within_the_gate():
    from keras_bn.bench.qat import run_qat_study
    from keras_bn.data import digits

    full = digits()
    data = dataclasses.replace(
        full,
        x_train=full.x_train[:96],
        y_train=full.y_train[:96],
        x_test=full.x_test[:32],
        y_test=full.y_test[:32],
    )
    study = run_qat_study(
        epochs=2,
        qat_epochs=1,
        freeze_bn_after=0,
        data=data,
        width=4,
        prune_fraction=0.25,
    )
    names = [row.name for row in study.rows]
    assert names == [
        "float",
        "float pruned",
        "PTQ per_channel",
        "QAT per_channel",
        "PTQ per_tensor",
        "QAT per_tensor",
    ]
    for row in study.rows[2:]:  # each int8 model, on both of its files
        for steps in (row.tflite_steps, row.onnx_steps):
            assert steps["passed"] and steps["max_steps"] <= 1, (row.name, steps)
        assert 0 <= row.tflite_accuracy <= 1 and 0 <= row.onnx_accuracy <= 1
    assert study.epoch_cost_ratio > 0
    assert study.settings["prune_fraction"] == 0.25
