"""quantize_model: which layers become what, the caller's model untouched, save/load, errors."""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.quantization import (
    ActivationQuantizer,
    QuantizedBlock,
    is_quantized_model,
    quantize_model,
    quantized_blocks,
)
from tests.helpers.folding import set_statistics


def residual_concat_model():
    """Conv-BN-ReLU6, depthwise-BN, residual Add, a Conv-BN branch concatenated, BN, Dense."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = keras_bn.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    z = keras.layers.Conv2D(3, 1, name="branch")(x)
    z = keras.layers.BatchNormalization()(z)
    x = keras.layers.Concatenate(name="concat")([x, z])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="head")(x)
    return keras.Model(inputs, outputs)


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras_bn.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(8),
            keras_bn.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def test_functional_model_blocks_and_report(rng):
    model = residual_concat_model()
    set_statistics(model, rng)
    qat, report = quantize_model(model, return_report=True)
    names = {b.name: b for b in quantized_blocks(qat)}
    assert names["stem"].activation == "relu6"
    assert names["stem"].batchnorm is not None
    assert names["dw"].activation is None
    assert names["head"].batchnorm is None
    # The BN after the concatenation has no linear layer to fold into.
    affine = [b for b in names.values() if b.linear is None]
    assert len(affine) == 1
    assert [e.folded for e in report] == [True, True, True, False]
    assert "quantized per-channel affine" in report.entries[-1].reason
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in qat.layers
    )
    assert is_quantized_model(qat) and not is_quantized_model(model)


def test_concatenation_and_its_inputs_share_one_range(rng):
    qat = quantize_model(residual_concat_model())
    concat_quantizer = qat.get_layer("concat_quantizer")
    # The Add output and the Conv branch are rounded by the concatenation's quantizer.
    assert qat.get_layer("branch").output_quantizer is None
    assert len(concat_quantizer._inbound_nodes) == 3


def test_sequential_stays_sequential_with_a_softmax_head(rng):
    model = sequential_model()
    set_statistics(model, rng)
    qat = quantize_model(model)
    assert isinstance(qat, keras.Sequential)
    kinds = [type(layer).__name__ for layer in qat.layers]
    assert kinds == [
        "ActivationQuantizer",
        "QuantizedBlock",
        "MaxPooling2D",
        "Flatten",
        "QuantizedBlock",
        "QuantizedBlock",
        "Activation",
        "ActivationQuantizer",
    ]
    assert qat.layers[-1].fixed_range == (0.0, 255.0 / 256.0)


def test_starts_from_the_weights_and_is_close_to_the_float_model(rng):
    model = residual_concat_model()
    set_statistics(model, rng)
    x = rng.normal(size=(32, 6, 6, 2)).astype("float32")
    qat = quantize_model(model, calibration_data=x)
    expected = model(x, training=False).numpy()
    error = np.max(np.abs(qat(x, training=False).numpy() - expected))
    # int8 rounding of ~8 tensors: a few percent of the output's scale.
    assert error < 0.1 * np.max(np.abs(expected))


def test_callers_model_is_untouched(rng):
    model = residual_concat_model()
    set_statistics(model, rng)
    before = [w.copy() for w in model.get_weights()]
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    qat = quantize_model(model, calibration_data=x)
    qat.compile("sgd", "mse")
    qat.fit(x, rng.normal(size=(16, 5)), epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_save_and_load_without_custom_objects(jit_compile, rng, tmp_path):
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    qat = quantize_model(residual_concat_model(), calibration_data=x)
    qat.compile("adam", "mse", jit_compile=jit_compile)
    history = qat.fit(x, rng.normal(size=(16, 5)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), qat(x).numpy())
    assert sum(isinstance(layer, QuantizedBlock) for layer in loaded.layers) == 5
    assert any(isinstance(layer, ActivationQuantizer) for layer in loaded.layers)


def test_nothing_to_quantize_is_an_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_model(model)


def test_unsupported_layer_is_named():
    inputs = keras.Input((4, 3))
    x = keras.layers.Dense(3)(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    with pytest.raises(ValueError, match="'ln' \\(LayerNormalization\\)"):
        quantize_model(keras.Model(inputs, x))


def test_unknown_weights_granularity():
    with pytest.raises(ValueError, match="per_row"):
        quantize_model(sequential_model(), weights="per_row")


def test_population_statistics_on_a_qat_model_before_freezing(rng):
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras_bn.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    set_statistics(model, rng)
    data = rng.normal(size=(64, 5, 5, 2)).astype("float32")
    qat = quantize_model(model, calibration_data=data)
    (block,) = quantized_blocks(qat)
    report = keras_bn.population_statistics(qat, data, batch_size=16, verbose=0)
    assert report.layers[0].count == 64 * 9
    # Algorithm 2 on the BN's input: the float convolution of the rounded input.
    rounded = qat.get_layer("input_quantizer")(data).numpy()
    z = block.linear(rounded).numpy().astype(np.float64).reshape(4, -1, 3)
    m = z.shape[1]  # values per channel in a batch of 16
    np.testing.assert_allclose(
        block.batchnorm.moving_mean.numpy(), z.mean((0, 1)), atol=1e-5
    )
    np.testing.assert_allclose(
        block.batchnorm.moving_variance.numpy(),
        z.var(1).mean(0) * m / (m - 1),
        rtol=1e-4,
    )
    assert block.steps.numpy() == 0
