"""fine_tune: when the BN statistics freeze, and bad arguments."""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.quantization import fine_tune, quantized_blocks
from keras_bn.quantization.training import bn_freeze_epoch
from tests.helpers.folding import set_statistics

SAMPLES, BATCH_SIZE = 20, 8
STEPS_PER_EPOCH = 3  # ⌈20 / 8⌉


def conv_bn_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras_bn.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


class MovingMeans(keras.callbacks.Callback):
    """The QAT block's BN moving mean at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.means = []

    def on_epoch_end(self, epoch, logs=None):
        (block,) = [b for b in quantized_blocks(self.model) if b.batchnorm is not None]
        self.means.append(block.batchnorm.moving_mean.numpy().copy())


def fine_tuned(rng, **kwargs):
    model = conv_bn_model()
    set_statistics(model, rng)
    (bn,) = [layer for layer in model.layers if "batch_normalization" in layer.name]
    start = bn.moving_mean.numpy().copy()
    x = rng.normal(size=(SAMPLES, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=SAMPLES)
    recorder = MovingMeans()
    result = fine_tune(
        model,
        x,
        y,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=BATCH_SIZE,
        callbacks=[recorder],
        jit_compile=False,
        **kwargs,
    )
    return result, [start, *recorder.means]


@pytest.mark.parametrize("freeze_after", [0, 1, 3])
def test_bn_statistics_learn_until_the_given_epoch_then_stay(freeze_after, rng):
    result, means = fine_tuned(rng, epochs=3, freeze_bn_after_epochs=freeze_after)
    assert result.frozen_after_steps == freeze_after * STEPS_PER_EPOCH
    for epoch in range(1, 4):
        if epoch <= freeze_after:
            assert not np.allclose(means[epoch], means[epoch - 1])
        else:
            np.testing.assert_array_equal(means[epoch], means[epoch - 1])


def test_default_freezes_for_the_last_epoch(rng):
    result, means = fine_tuned(rng, epochs=2)
    assert result.frozen_after_steps == STEPS_PER_EPOCH
    assert not np.allclose(means[1], means[0])
    np.testing.assert_array_equal(means[2], means[1])


@pytest.mark.parametrize("freeze_after", [-1, 4, 1.5, True])
def test_freeze_epoch_outside_the_run_is_an_error(freeze_after):
    x = np.zeros((4, 6, 6, 2), "float32")
    with pytest.raises(ValueError, match=f"freeze_bn_after_epochs={freeze_after!r}"):
        fine_tune(
            conv_bn_model(),
            x,
            np.zeros(4),
            epochs=3,
            freeze_bn_after_epochs=freeze_after,
        )
    with pytest.raises(ValueError, match=f"freeze_bn_after_epochs={freeze_after!r}"):
        bn_freeze_epoch(3, freeze_after)
