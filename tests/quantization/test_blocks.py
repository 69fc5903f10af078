"""QuantizedBlock: each layer family against a NumPy float64 int8 simulation, gradients, freezing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_bn
from keras_bn.folding import rules as folding_rules
from keras_bn.quantization import QuantizedBlock
from tests.helpers import quantization as sim
from tests.tolerances import (
    GRADIENT_CHECK_FLOAT64,
    QAT_BIAS_DIFFERENCE_ATOL,
    QAT_BLOCK_FLOAT32_RTOL,
)

FAMILIES = {
    "dense": (lambda: keras.layers.Dense(5), (6,)),
    "conv1d": (lambda: keras.layers.Conv1D(4, 3, padding="same"), (7, 3)),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same"), (7, 7, 3)),
    "conv3d": (lambda: keras.layers.Conv3D(3, 2), (4, 4, 4, 2)),
    "depthwise2d": (
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        (6, 6, 3),
    ),
    "separable2d": (
        lambda: keras.layers.SeparableConv2D(4, 3, padding="same"),
        (6, 6, 3),
    ),
    "conv2d_transpose": (
        lambda: keras.layers.Conv2DTranspose(4, 3, strides=2),
        (4, 4, 3),
    ),
}


def built_block(name, rng, granularity="per_channel", **kwargs):
    factory, shape = FAMILIES[name]
    linear = factory()
    bn = keras_bn.BatchNormalization()
    block = QuantizedBlock(
        linear, bn, granularity=granularity, quantize_output=False, **kwargs
    )
    block.build((None, *shape))
    linear.set_weights([rng.normal(size=w.shape) for w in linear.get_weights()])
    sim.set_bn(bn, rng)
    return block, shape


def reference_output(block, x, granularity):
    """Fold (float64 formulas), round the kernels, run Keras' layer in float64."""
    linear, bn = block.linear, block.batchnorm
    rule = folding_rules.rule_for(linear)
    scale, shift = sim.bn_scale_shift(bn)
    params = {
        k: np.asarray(v, np.float64)
        for k, v in rule.read(linear).items()
        if v is not None
    }
    params.setdefault("bias", None)
    folded = rule.fold_after(linear, params, scale, shift)
    kernels = {}
    for name in block.rule.kernel_names:
        axes = block.rule.reduce_axes(name, folded[name].ndim)
        kernels[name] = sim.quantize_kernel(folded[name], axes, granularity)
    if "depthwise_kernel" in kernels:
        # The inner tensor of a separable convolution is rounded too.
        depthwise = keras.layers.DepthwiseConv2D(
            3, padding="same", use_bias=False, dtype="float64"
        )
        depthwise.build((None, *x.shape[1:]))
        depthwise.set_weights([kernels["depthwise_kernel"]])
        inner = depthwise(x.astype(np.float64)).numpy()
        low = float(block.between_quantizer.range_min.numpy())
        high = float(block.between_quantizer.range_max.numpy())
        inner = sim.fake_quantize(inner, low, high)
        # The bias is added on the accumulator's grid: inner step × weight step.
        weight_step = sim.weight_step(
            folded["pointwise_kernel"], (0, 1, 2), granularity
        )
        bias = sim.round_to(folded["bias"], (high - low) / 255 * weight_step)
        pointwise = keras.layers.Conv2D(linear.filters, 1, dtype="float64")
        pointwise.build((None, *inner.shape[1:]))
        pointwise.set_weights([kernels["pointwise_kernel"], bias])
        return pointwise(inner).numpy()
    reference = sim.float64_copy(linear, (None, *x.shape[1:]), kernels, folded["bias"])
    return reference(x.astype(np.float64)).numpy()


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_inference_is_the_folded_rounded_layer(family, granularity, rng):
    block, shape = built_block(family, rng, granularity)
    if block.between_quantizer is not None:
        block.between_quantizer.range_min.assign(-4.0)
        block.between_quantizer.range_max.assign(6.0)
    x = rng.normal(size=(3, *shape)).astype("float32")
    actual = block(x, training=False).numpy()
    expected = reference_output(block, x, granularity)
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) <= QAT_BLOCK_FLOAT32_RTOL * scale


def test_output_quantizer_rounds_onto_its_range(rng):
    block, shape = built_block("conv2d", rng)
    rounded = QuantizedBlock(block.linear, block.batchnorm, activation="relu6")
    x = rng.normal(size=(4, *shape)).astype("float32")
    rounded(x, training=True)  # the first batch sets the range
    quantizer = rounded.output_quantizer
    low, high = float(quantizer.range_min.numpy()), float(quantizer.range_max.numpy())
    assert low == 0.0 and 0.0 < high <= 6.0
    unrounded = np.clip(block(x, training=False).numpy(), 0.0, 6.0)
    expected = sim.fake_quantize(unrounded, low, high)
    step = (high - low) / 255
    actual = rounded(x, training=False).numpy()
    # Float32 against float64 can only move a value that sits on a rounding
    # boundary, and then by one step.
    assert np.max(np.abs(actual - expected)) <= step * 1.001
    assert np.mean(np.abs(actual - expected) > step / 2) < 0.01


def simulation_with_rounding_disabled(block, x, frozen):
    """Jacob et al.'s training map in float64, written out, rounding disabled."""
    linear, bn = block.linear, block.batchnorm
    z = linear(x)  # the float64 layer with its own kernel and bias
    mean, variance = tf.nn.moments(z, axes=list(range(z.shape.rank - 1)))
    moving_std = tf.sqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
    gamma, beta = bn.gamma, bn.beta
    folded_kernel = linear.kernel * (gamma / moving_std)
    wx = block.rule.apply(linear, x, {"kernel": folded_kernel})
    if frozen:
        return wx + beta + (linear.bias - bn.moving_mean) * gamma / moving_std
    batch_std = tf.sqrt(variance + bn.epsilon)
    return (
        (moving_std / batch_std) * wx + beta + gamma * (linear.bias - mean) / batch_std
    )


@pytest.mark.parametrize("frozen", [False, True])
def test_gradient_matches_autodiff_of_the_simulation(frozen, rng):
    linear = keras.layers.Conv2D(3, 3, padding="same", dtype="float64")
    bn = keras_bn.BatchNormalization(dtype="float64")
    block = QuantizedBlock(linear, bn, quantize_output=False, dtype="float64")
    block.build((None, 5, 5, 2))
    linear.set_weights([rng.normal(size=w.shape) for w in linear.get_weights()])
    sim.set_bn(bn, rng)
    block.bn_frozen.assign(float(frozen))
    x = tf.constant(rng.normal(size=(4, 5, 5, 2)))
    dy = tf.constant(rng.normal(size=(4, 5, 5, 3)))
    variables = [linear.kernel, linear.bias, bn.gamma, bn.beta]
    statistics = [v.numpy() for v in (bn.moving_mean, bn.moving_variance)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        actual = tf.reduce_sum(block(x, training=True) * dy)
    actual_grads = tape.gradient(actual, [x, *variables])
    for v, value in zip((bn.moving_mean, bn.moving_variance), statistics, strict=True):
        v.assign(value)  # the reference reads the statistics the block read
    with tf.GradientTape() as tape:
        tape.watch(x)
        expected = tf.reduce_sum(
            simulation_with_rounding_disabled(block, x, frozen) * dy
        )
    expected_grads = tape.gradient(expected, [x, *variables])
    # Frozen, the input gradient flows through the rounded kernel (straight
    # through the rounding), which the unrounded simulation cannot have.
    compared = slice(1, None) if frozen else slice(None)
    for a, e in zip(actual_grads[compared], expected_grads[compared], strict=True):
        e = e.numpy()
        assert np.max(np.abs(a.numpy() - e)) <= GRADIENT_CHECK_FLOAT64 * max(
            1.0, np.max(np.abs(e))
        )


def test_moving_statistics_update_until_frozen(rng):
    block, shape = built_block("conv2d", rng, freeze_bn_after_steps=2)
    bn = block.batchnorm
    x = rng.normal(size=(8, *shape)).astype("float32")
    means = [bn.moving_mean.numpy().copy()]
    outputs = []
    for _ in range(4):
        outputs.append(block(x, training=True).numpy())
        means.append(bn.moving_mean.numpy().copy())
    assert not np.allclose(means[1], means[0]) and not np.allclose(means[2], means[1])
    np.testing.assert_array_equal(means[3], means[2])
    np.testing.assert_array_equal(means[4], means[2])
    # Frozen, training computes exactly the inference map.
    np.testing.assert_allclose(
        outputs[3], block(x, training=False).numpy(), rtol=0, atol=0
    )
    # Before, batch statistics: the output differs from the inference map.
    assert not np.allclose(outputs[0], block(x, training=False).numpy(), atol=1e-3)


def test_freeze_bn_statistics_takes_effect_in_a_compiled_fit(rng):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    qat = keras_bn.quantization.quantize_model(keras.Model(inputs, outputs))
    qat.compile("sgd", "mse", jit_compile=True)
    data = rng.normal(size=(16, 6, 6, 2)).astype("float32"), rng.normal(size=(16, 3))
    qat.fit(*data, epochs=1, batch_size=8, verbose=0)
    (block,) = keras_bn.quantization.quantized_blocks(qat)
    before = block.batchnorm.moving_mean.numpy().copy()
    assert keras_bn.quantization.freeze_bn_statistics(qat) == 1
    qat.fit(*data, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(block.batchnorm.moving_mean.numpy(), before)


def test_bad_arguments_name_the_layer():
    with pytest.raises(ValueError, match="granularity.*per_row"):
        QuantizedBlock(keras.layers.Dense(2), granularity="per_row", name="b")
    with pytest.raises(ValueError, match="'b'.*activation.*gelu"):
        QuantizedBlock(keras.layers.Dense(2), activation="gelu", name="b")
    with pytest.raises(TypeError, match="'b'.*Flatten"):
        QuantizedBlock(keras.layers.Flatten(), name="b")


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_bias_is_rounded_on_the_accumulator_grid(granularity, rng):
    block, shape = built_block("depthwise2d", rng, granularity)
    x = rng.normal(size=(3, *shape)).astype("float32")
    unrounded = block(x, training=False).numpy()
    input_step = 0.05
    block.input_step.assign(input_step)
    rounded = block(x, training=False).numpy()
    # Same kernel, so the difference is the bias's rounding, per channel.
    linear, bn = block.linear, block.batchnorm
    rule = folding_rules.rule_for(linear)
    scale, shift = sim.bn_scale_shift(bn)
    params = {k: v for k, v in rule.read(linear).items() if v is not None}
    params.setdefault("bias", None)
    folded = rule.fold_after(linear, params, scale, shift)
    step = input_step * sim.weight_step(folded["kernel"], (0, 1), granularity)
    expected = sim.round_to(folded["bias"], step) - folded["bias"]
    difference = (rounded - unrounded).reshape(-1, expected.size)
    np.testing.assert_allclose(
        difference,
        np.broadcast_to(expected, difference.shape),
        atol=QAT_BIAS_DIFFERENCE_ATOL,
    )
