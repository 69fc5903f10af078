"""Mixed-precision models: their QAT copy computes in float32 and its files pass the exact gate."""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.keras_adapter import iter_layers
from keras_bn.quantization import quantize_model
from tests.helpers.folding import set_statistics
from tests.helpers.qat_files import judge_int8_files


@pytest.fixture
def global_policy():
    """Sets the global dtype policy for one test; restores the previous one."""
    previous = keras.mixed_precision.global_policy()
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def conv_model(dtype=None):
    """Conv2D-BN-ReLU, average pooling, a Dense-BN head, float32 logits (as Keras advises)."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, dtype=dtype)(inputs)
    x = keras_bn.BatchNormalization(dtype=dtype)(x)
    x = keras.layers.ReLU(dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling2D(dtype=dtype)(x)
    x = keras.layers.Dense(8, dtype=dtype)(x)
    x = keras_bn.BatchNormalization(dtype=dtype)(x)
    x = keras.layers.Dense(4, dtype=dtype)(x)
    outputs = keras.layers.Activation("linear", dtype="float32")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    ("where", "policy"),
    [("global", "mixed_float16"), ("layers", "mixed_bfloat16")],
)
def test_mixed_precision_model_trains_and_exports_in_float32(
    where, policy, global_policy, rng, tmp_path
):
    keras.utils.set_random_seed(0)  # `fit` shuffles with TensorFlow's RNG
    if where == "global":
        global_policy(policy)
        model = conv_model()
    else:
        model = conv_model(dtype=policy)
    assert model.layers[1].dtype_policy.name == policy
    set_statistics(model, rng)
    x = rng.normal(size=(48, 6, 6, 3)).astype("float32")
    qat = quantize_model(model, calibration_data=x)
    # The simulation computes in float32 whatever the source's policy; the
    # caller's model keeps its own.
    assert {layer.dtype_policy.name for layer in iter_layers(qat)} == {"float32"}
    assert model.layers[1].dtype_policy.name == policy
    qat.compile("adam", "mse")
    history = qat.fit(x, rng.normal(size=(48, 4)), epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert qat(x[:2], training=False).dtype == "float32"
    judge_int8_files(qat, x[:32], tmp_path)
