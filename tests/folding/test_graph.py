"""`fold_batchnorm` on Keras graphs: every pattern, every structure, bad input.

Each parity test builds a small model with non-trivial BN statistics
(`keras_bn.stand_in_statistics`: γ and the moving variance uniform in
[0.5, 2], β and the moving mean of order 1), folds it and
compares the folded model with the original in inference mode, in float32,
on a seeded batch. Foldable patterns must leave no BN and no `ChannelAffine`.
"""

import re

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.folding import (
    FoldVerificationError,
    fold_batchnorm,
)
from keras_bn.folding.verification import compare_models
from tests.helpers.folding import (
    count_affine,
    count_batchnorm,
    fold_and_compare,
    random_inputs,
    relative_error,
    set_statistics,
    single_path,
)
from tests.tolerances import FOLD_FLOAT16_RTOL, FOLD_FLOAT32_RTOL

layers = keras.layers
BN_CLASSES = [layers.BatchNormalization, keras_bn.BatchNormalization]


# -- Linear -> BN ----------------------------------------------------------------

L = layers
AFTER_PATTERNS = {
    "dense": (lambda fmt, bias: L.Dense(6, use_bias=bias), (5,)),
    "dense_rank3": (lambda fmt, bias: L.Dense(6, use_bias=bias), (4, 5)),
    "conv1d": (lambda fmt, bias: L.Conv1D(6, 3, padding="same", use_bias=bias, data_format=fmt), (9, 4)),
    "conv2d": (lambda fmt, bias: L.Conv2D(6, 3, strides=2, use_bias=bias, data_format=fmt), (7, 6, 4)),
    "conv2d_groups": (lambda fmt, bias: L.Conv2D(6, 3, groups=2, use_bias=bias, data_format=fmt), (7, 6, 4)),
    "conv3d": (lambda fmt, bias: L.Conv3D(4, 2, padding="same", use_bias=bias, data_format=fmt), (4, 5, 5, 3)),
    "depthwise1d": (lambda fmt, bias: L.DepthwiseConv1D(3, use_bias=bias, data_format=fmt), (9, 4)),
    "depthwise2d_multiplier3": (lambda fmt, bias: L.DepthwiseConv2D(3, depth_multiplier=3, padding="same", use_bias=bias, data_format=fmt), (7, 6, 4)),
    "separable1d": (lambda fmt, bias: L.SeparableConv1D(5, 3, depth_multiplier=2, use_bias=bias, data_format=fmt), (9, 4)),
    "separable2d": (lambda fmt, bias: L.SeparableConv2D(5, 3, padding="same", use_bias=bias, data_format=fmt), (7, 6, 4)),
    "conv1d_transpose": (lambda fmt, bias: L.Conv1DTranspose(5, 3, strides=2, use_bias=bias, data_format=fmt), (6, 4)),
    "conv2d_transpose": (lambda fmt, bias: L.Conv2DTranspose(5, 3, padding="same", use_bias=bias, data_format=fmt), (5, 6, 4)),
    "conv3d_transpose": (lambda fmt, bias: L.Conv3DTranspose(3, 2, strides=2, use_bias=bias, data_format=fmt), (3, 3, 4, 2)),
}  # fmt: skip


def _bn_axis(name, data_format):
    return 1 if data_format == "channels_first" and not name.startswith("dense") else -1


def _shape(shape, name, data_format):
    """The pattern's channels-last input shape, moved for channels_first."""
    if data_format == "channels_first" and not name.startswith("dense"):
        return (shape[-1], *shape[:-1])
    return shape


def assert_folds_into_weights(
    factory, name, shape, data_format, bn_class, rng, bn_first=False
):
    """One BN next to one layer: folded in the expected direction, nothing left."""
    model = single_path(
        factory,
        _shape(shape, name, data_format),
        bn_first=bn_first,
        bn_class=bn_class,
        axis=_bn_axis(name, data_format),
    )
    folded, report = fold_and_compare(model, rng)
    assert count_batchnorm(folded) == 0 and count_affine(folded) == 0
    (entry,) = report.entries
    assert entry.folded and entry.direction == ("before" if bn_first else "after")
    linear = model.layers[2 if bn_first else 1]
    assert entry.into == linear.name


def _with_formats(patterns):
    """(name, data_format) pairs; Dense has no data_format."""
    return [
        (name, fmt)
        for name in sorted(patterns)
        for fmt in ("channels_last", "channels_first")
        if not (name.startswith("dense") and fmt == "channels_first")
    ]


@pytest.mark.parametrize("bn_class", BN_CLASSES)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name, data_format", _with_formats(AFTER_PATTERNS))
def test_linear_then_bn_folds_into_weights(name, data_format, use_bias, bn_class, rng):
    factory, shape = AFTER_PATTERNS[name]
    assert_folds_into_weights(
        lambda: factory(data_format, use_bias), name, shape, data_format, bn_class, rng
    )


# -- BN -> Linear ------------------------------------------------------------------

BEFORE_PATTERNS = {
    "dense": (lambda fmt: L.Dense(6), (5,)),
    "conv1d": (lambda fmt: L.Conv1D(6, 3, strides=2, data_format=fmt), (9, 4)),
    "conv2d": (lambda fmt: L.Conv2D(6, 3, dilation_rate=2, data_format=fmt), (7, 6, 4)),
    "conv2d_groups": (lambda fmt: L.Conv2D(6, 3, groups=2, use_bias=False, data_format=fmt), (7, 6, 4)),
    "conv3d": (lambda fmt: L.Conv3D(5, 2, data_format=fmt), (4, 5, 5, 3)),
    "depthwise1d": (lambda fmt: L.DepthwiseConv1D(3, depth_multiplier=2, data_format=fmt), (9, 4)),
    "depthwise2d": (lambda fmt: L.DepthwiseConv2D(3, use_bias=False, data_format=fmt), (7, 7, 4)),
    "separable1d": (lambda fmt: L.SeparableConv1D(5, 3, data_format=fmt), (9, 4)),
    "separable2d": (lambda fmt: L.SeparableConv2D(5, 3, depth_multiplier=2, use_bias=False, data_format=fmt), (7, 6, 4)),
}  # fmt: skip


@pytest.mark.parametrize("bn_class", BN_CLASSES)
@pytest.mark.parametrize("name, data_format", _with_formats(BEFORE_PATTERNS))
def test_bn_then_unpadded_linear_folds_into_weights(name, data_format, bn_class, rng):
    factory, shape = BEFORE_PATTERNS[name]
    assert_folds_into_weights(
        lambda: factory(data_format), name, shape, data_format, bn_class, rng, True
    )


def test_bn_on_both_sides_of_one_conv_folds_twice(rng):
    inputs = keras.Input((8, 8, 3))
    x = L.BatchNormalization()(inputs)
    x = L.Conv2D(4, 3, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    folded, report = fold_and_compare(keras.Model(inputs, x), rng)
    assert [e.direction for e in report] == ["before", "after"]
    assert count_batchnorm(folded) == count_affine(folded) == 0


@pytest.mark.parametrize(
    "center, scale", [(False, True), (True, False), (False, False)]
)
def test_center_and_scale_off(center, scale, rng):
    model = single_path(
        lambda: L.Conv2D(4, 3),
        (6, 6, 3),
        bn_first=False,
        bn_class=layers.BatchNormalization,
        center=center,
        scale=scale,
        epsilon=0.1,
    )
    folded, _ = fold_and_compare(model, rng)
    assert count_batchnorm(folded) == 0


@pytest.mark.parametrize(
    "bn_kwargs",
    [
        {"renorm": True},
        {"virtual_batch_size": 2, "unbiased_moving_variance": True},
        {"axis": [-1]},
    ],
)
def test_keras_bn_options_fold_like_the_inference_formula(bn_kwargs, rng):
    model = single_path(
        lambda: L.Conv2D(4, 3),
        (6, 6, 3),
        bn_first=False,
        bn_class=keras_bn.BatchNormalization,
        **bn_kwargs,
    )
    folded, report = fold_and_compare(model, rng)
    assert report.entries[0].folded and count_batchnorm(folded) == 0


def test_mixed_precision_folds_in_float64_into_float32_variables(mixed_precision, rng):
    mixed_precision("mixed_float16")
    model = single_path(
        lambda: L.Conv2D(8, 3),
        (8, 8, 4),
        bn_first=False,
        bn_class=layers.BatchNormalization,
    )
    folded, report = fold_and_compare(model, rng, rtol=FOLD_FLOAT16_RTOL)
    conv = folded.layers[1]
    assert report.entries[0].folded
    assert conv.kernel.dtype == "float32" and conv.compute_dtype == "float16"


# -- not foldable: reported, replaced by ChannelAffine --------------------------------


def _unfoldable_models():
    def activation():
        i = keras.Input((8, 8, 3))
        x = L.Conv2D(4, 3, activation="relu")(i)
        x = L.BatchNormalization()(x)
        return keras.Model(i, L.GlobalAveragePooling2D()(x))

    def shared():
        a, b = keras.Input((5,)), keras.Input((5,))
        dense = L.Dense(4)
        x = L.BatchNormalization()(dense(a))
        y = L.BatchNormalization()(dense(b))
        return keras.Model([a, b], L.Add()([x, y]))

    def two_consumers():
        i = keras.Input((8, 8, 3))
        c = L.Conv2D(4, 3)(i)
        x = L.BatchNormalization()(c)
        return keras.Model(i, L.Add()([x, L.ReLU()(c)]))

    def axis_mismatch():
        i = keras.Input((8, 8, 3))
        x = L.Conv2D(4, 3)(i)
        x = L.BatchNormalization(axis=1)(x)
        return keras.Model(i, L.Flatten()(x))

    def several_axes():
        i = keras.Input((6, 6, 3))
        x = L.Conv2D(4, 3)(i)
        x = keras_bn.BatchNormalization(axis=[2, 3])(x)
        return keras.Model(i, L.Flatten()(x))

    def same_padding():
        i = keras.Input((8, 8, 3))
        x = L.BatchNormalization()(i)
        return keras.Model(i, L.Conv2D(4, 3, padding="same")(x))

    def causal():
        i = keras.Input((9, 3))
        x = L.BatchNormalization()(i)
        return keras.Model(i, L.Conv1D(4, 3, padding="causal")(x))

    def transpose_before():
        i = keras.Input((5, 5, 3))
        x = L.BatchNormalization()(i)
        return keras.Model(i, L.Conv2DTranspose(4, 3)(x))

    def after_add():
        i = keras.Input((6, 6, 3))
        x = L.Add(name="add")([L.Conv2D(3, 1)(i), i])
        return keras.Model(i, L.BatchNormalization()(x))

    def channels_first_bias_add():
        # Output (4, 4, 4): last dimension == channels, see LinearRule.bias_reason.
        i = keras.Input((3, 6, 6))
        x = L.Conv2D(4, 3, use_bias=False, data_format="channels_first")(i)
        return keras.Model(i, L.BatchNormalization(axis=1)(x))

    return {
        "channels_first_bias_add": (channels_first_bias_add, "TensorFlow bias add"),
        "activation": (activation, "built-in activation 'relu'"),
        "shared": (shared, "is shared"),
        "two_consumers": (two_consumers, "used 2 times"),
        "axis_mismatch": (axis_mismatch, "not the channel axis 3"),
        "several_axes": (several_axes, "several axes [2, 3]"),
        "same_padding": (same_padding, "padding='same'"),
        "causal": (causal, "padding='causal'"),
        "transpose_before": (transpose_before, "transposed convolution"),
        "after_add": (after_add, "'add' (Add) is not a linear layer"),
    }


UNFOLDABLE = _unfoldable_models()


@pytest.mark.parametrize("name", sorted(UNFOLDABLE))
def test_unfoldable_bn_is_reported_and_becomes_channel_affine(name, rng):
    build, reason = UNFOLDABLE[name]
    model = build()
    folded, report = fold_and_compare(model, rng)
    assert count_batchnorm(folded) == 0
    assert count_affine(folded) == len(report.not_folded) >= 1
    assert all(reason in e.reason for e in report.not_folded), str(report)


def test_bn_called_with_training_true_is_kept_and_reported(rng):
    i = keras.Input((4,))
    x = L.Dense(3)(i)
    x = L.BatchNormalization()(x, training=True)
    model = keras.Model(i, x)
    folded, report = fold_batchnorm(model, return_report=True)
    assert "training=True" in report.entries[0].reason
    assert count_batchnorm(folded) == 1


# -- graph structures ------------------------------------------------------------------


def conv_bn(x, filters, **kwargs):
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, **kwargs)(x)
    return L.BatchNormalization()(x)


def residual_model():
    i = keras.Input((8, 8, 3))
    x = L.ReLU()(conv_bn(i, 4))
    shortcut = conv_bn(i, 4, strides=1)
    x = L.Add()([conv_bn(x, 4), shortcut])
    x = L.BatchNormalization()(L.ReLU()(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(i, L.Dense(2)(x), name="residual")


def test_residual_branches_fold(rng):
    folded, report = fold_and_compare(residual_model(), rng)
    assert len(report.folded) == 3 and count_batchnorm(folded) == 0
    (unfolded,) = report.not_folded
    assert "re_lu" in unfolded.reason


def test_multiple_inputs_and_outputs(rng):
    image, vector = (
        keras.Input((8, 8, 3), name="image"),
        keras.Input((5,), name="vector"),
    )
    x = L.GlobalAveragePooling2D()(L.ReLU()(conv_bn(image, 4)))
    v = L.BatchNormalization()(L.Dense(4)(vector))
    merged = L.Concatenate()([x, v])
    outputs = {
        "score": L.Dense(1, name="score")(L.BatchNormalization()(merged)),
        "features": L.BatchNormalization(name="features")(L.Dense(3)(v)),
    }
    model = keras.Model({"image": image, "vector": vector}, outputs)
    set_statistics(model, rng)
    data = {"image": rng.normal(size=(2, 8, 8, 3)), "vector": rng.normal(size=(2, 5))}
    folded, report = fold_batchnorm(model, data=data, return_report=True)
    assert sorted(folded(data)) == ["features", "score"]
    error = relative_error(
        [folded(data)[k] for k in ("score", "features")],
        [model(data, training=False)[k] for k in ("score", "features")],
    )
    assert error <= FOLD_FLOAT32_RTOL
    assert count_batchnorm(folded) == count_affine(folded) == 0
    assert len(report.folded) == len(report) == 4


def backbone():
    i = keras.Input((8, 8, 3))
    x = L.ReLU()(conv_bn(i, 4))
    x = L.ReLU()(conv_bn(x, 6))
    return keras.Model(i, x, name="backbone")


def test_nested_model_is_folded_inside_and_out(rng):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            backbone(),
            L.GlobalAveragePooling2D(),
            L.BatchNormalization(name="head_bn"),
            L.Dense(2, name="head"),
        ]
    )
    folded, report = fold_and_compare(model, rng)
    assert isinstance(folded, keras.Sequential)
    assert count_batchnorm(folded) == count_affine(folded) == 0
    assert [e.batchnorm.split("/")[0] for e in report] == [
        "backbone",
        "backbone",
        "head_bn",
    ]
    assert report.entry("head_bn").direction == "before"
    assert report.entry("head_bn").into == "head"


def test_shared_nested_model_is_folded_once(rng):
    inner = backbone()
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    model = keras.Model([a, b], L.Subtract()([inner(a), inner(b)]))
    folded, report = fold_and_compare(model, rng)
    assert len(report) == 2 and count_batchnorm(folded) == 0
    assert len({id(x) for x in folded.layers if isinstance(x, keras.Model)}) == 1


def test_keras_ops_in_a_functional_graph(rng):
    i = keras.Input((6, 6, 3))
    x = conv_bn(i, 4)
    x = keras.ops.relu(x) * 2.0
    x = L.BatchNormalization()(x)
    folded, report = fold_and_compare(keras.Model(i, x), rng)
    assert count_batchnorm(folded) == 0 and len(report.folded) == 1


# -- the caller's model, saving, the report ----------------------------------------------


def test_callers_model_is_unchanged_bit_for_bit(rng):
    model = residual_model()
    set_statistics(model, rng)
    x = random_inputs(model, rng)
    before_weights = [w.copy() for w in model.get_weights()]
    before_output = keras.ops.convert_to_numpy(model(x, training=False))
    before_layers = [(type(x), x.name) for x in model.layers]
    before_nodes = [len(x._inbound_nodes) for x in model.layers]
    fold_batchnorm(model)
    after_weights = model.get_weights()
    assert all(
        np.array_equal(b, a) and b.dtype == a.dtype
        for b, a in zip(before_weights, after_weights, strict=True)
    )
    assert [(type(x), x.name) for x in model.layers] == before_layers
    assert [len(x._inbound_nodes) for x in model.layers] == before_nodes
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x, training=False)), before_output
    )


def test_folded_model_saves_and_loads(rng, tmp_path):
    i = keras.Input((8, 8, 3))
    x = L.Add()([conv_bn(i, 3), i])
    x = L.BatchNormalization()(x)  # becomes a ChannelAffine
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.Model(i, x), L.Flatten()])
    folded, _ = fold_and_compare(model, rng)
    assert count_affine(folded) == 1
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(model, rng)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(folded(x))
    )
    assert count_affine(loaded) == 1 and count_batchnorm(loaded) == 0


def test_report_lists_every_bn(rng):
    model = residual_model()
    set_statistics(model, rng)
    _, report = fold_batchnorm(model, return_report=True)
    text = str(report)
    assert text.startswith("3 of 4 Batch Normalization calls folded; verified")
    assert re.search(r"folded after 'conv2d(_\d+)?'", text) and "ChannelAffine" in text
    assert report.max_error <= FOLD_FLOAT32_RTOL
    with pytest.raises(KeyError, match="Known paths"):
        report.entry("missing")


# -- bad input and verification -------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(3)
        self.bn = L.BatchNormalization()

    def call(self, x):
        return self.bn(self.dense(x))


@pytest.mark.parametrize("value", ["model.keras", L.Dense(3), None])
def test_not_a_keras_model_is_rejected(value):
    with pytest.raises(TypeError, match="must be a keras.Model.*Received: model="):
        fold_batchnorm(value)


def test_subclassed_model_is_rejected(rng):
    model = Subclassed()
    model(rng.normal(size=(2, 4)))
    with pytest.raises(TypeError, match="'.*' \\(Subclassed\\) is a subclassed model"):
        fold_batchnorm(model)


def test_unbuilt_sequential_is_rejected():
    model = keras.Sequential([L.Dense(3), L.BatchNormalization()])
    with pytest.raises(ValueError, match="never been built.*Received: built=False"):
        fold_batchnorm(model)


@pytest.mark.parametrize("argument", ["rtol", "atol"])
def test_negative_tolerance_is_rejected(argument):
    model = single_path(lambda: L.Dense(3), (4,), False, layers.BatchNormalization)
    with pytest.raises(ValueError, match=f"Received: {argument}=-1"):
        fold_batchnorm(model, **{argument: -1})


def test_verification_names_the_output_that_differs(rng):
    a = single_path(lambda: L.Dense(3), (4,), False, layers.BatchNormalization)
    b = keras.models.clone_model(a)
    set_statistics(b, rng)
    with pytest.raises(
        FoldVerificationError, match="max\\|difference\\|.*Received: rtol"
    ):
        compare_models(a, b, rng.normal(size=(2, 4)), rtol=1e-4, atol=1e-5)


class ConvBlock(keras.layers.Layer):
    """A subclassed layer holding a BN: Keras records no graph inside it."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = L.Conv2D(filters, 3, padding="same")
        self.bn = L.BatchNormalization()

    def call(self, x):
        return self.bn(self.conv(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def test_bn_inside_a_subclassed_layer_is_reported_and_kept(rng):
    i = keras.Input((6, 6, 3))
    block = ConvBlock(4, name="block")
    x = L.BatchNormalization(name="outer_bn")(block(i))
    folded, report = fold_and_compare(keras.Model(i, x), rng)
    inner = report.entry(f"block/{block.bn.name}")
    assert not inner.folded and "cannot be traced; kept" in inner.reason
    assert "nested" not in report.entry("outer_bn").reason
    assert count_affine(folded) == 1
