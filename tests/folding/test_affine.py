"""`ChannelAffine`: the per-channel `x * scale + shift` a BN becomes.

The layer's output is compared with the same map in NumPy float64; its
config, saving and argument checks are compared with what it was built from.
"""

import keras
import numpy as np
import pytest

from keras_bn.folding import ChannelAffine
from tests.helpers.folding import relative_error
from tests.tolerances import AFFINE_FLOAT32_RTOL


def with_weights(layer, x, rng):
    """Builds `layer` on `x`, sets random scale and shift, returns them."""
    layer(x)
    scale = rng.uniform(-2.0, 2.0, layer.scale.shape).astype("float32")
    shift = rng.normal(size=layer.shift.shape).astype("float32")
    layer.set_weights([scale, shift])
    return scale, shift


@pytest.mark.parametrize(
    "axis, broadcast",
    [
        (-1, (1, 1, 1, 5)),
        (3, (1, 1, 1, 5)),
        (1, (1, 3, 1, 1)),
        ([1, 3], (1, 3, 1, 5)),
        ([-1, 2], (1, 1, 4, 5)),
    ],
)
def test_output_is_x_times_scale_plus_shift(axis, broadcast, rng):
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    layer = ChannelAffine(axis=axis)
    scale, shift = with_weights(layer, x, rng)
    assert tuple(layer.scale.shape) == tuple(d for d in broadcast if d != 1)
    expected = x.astype(np.float64) * scale.reshape(broadcast) + shift.reshape(
        broadcast
    )
    assert relative_error(layer(x), expected) <= AFFINE_FLOAT32_RTOL


def test_weights_start_as_the_identity(rng):
    x = rng.normal(size=(2, 3)).astype("float32")
    np.testing.assert_array_equal(ChannelAffine()(x), x)


def test_weights_are_not_trainable(rng):
    layer = ChannelAffine()
    layer(rng.normal(size=(2, 3)).astype("float32"))
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2


def test_config_round_trip(rng):
    layer = ChannelAffine(axis=[1, -1], name="affine", dtype="float64")
    clone = ChannelAffine.from_config(layer.get_config())
    assert clone.axis == [1, -1] and clone.name == "affine"
    assert clone.dtype_policy.name == "float64"
    x = rng.normal(size=(2, 3, 4))
    with_weights(layer, x, rng)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x), layer(x))


def test_mixed_precision_keeps_float32_weights(mixed_precision, rng):
    mixed_precision("mixed_float16")
    layer = ChannelAffine()
    y = layer(rng.normal(size=(2, 3)).astype("float16"))
    assert layer.scale.dtype == "float32" and y.dtype == "float16"


def test_saved_and_loaded_model_computes_the_same(rng, tmp_path):
    inputs = keras.Input((4, 3))
    layer = ChannelAffine(axis=1, name="affine")
    model = keras.Model(inputs, layer(inputs))
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    with_weights(layer, x, rng)
    model.save(tmp_path / "affine.keras")
    loaded = keras.models.load_model(tmp_path / "affine.keras")
    loaded_layer = loaded.get_layer("affine")
    assert type(loaded_layer) is ChannelAffine and loaded_layer.axis == 1
    np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize("axis", [True, "channels", [], [1, 2.0], None])
def test_bad_axis_type_is_rejected(axis):
    with pytest.raises(TypeError, match=r"`axis` must be an int.*Received: axis="):
        ChannelAffine(axis=axis, name="bad")


def test_axis_out_of_bounds_is_rejected_at_build():
    with pytest.raises(ValueError, match="axis 3 is out of bounds.*rank 3"):
        ChannelAffine(axis=3, name="affine")(keras.Input((4, 5)))


def test_unknown_channel_dimension_is_rejected():
    with pytest.raises(ValueError, match="channel dimensions must be known"):
        ChannelAffine(axis=1)(keras.Input((None, 5)))
