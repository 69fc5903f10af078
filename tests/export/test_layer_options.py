"""Every keras_bn-only option folds and exports like the plain layer.

Inference uses the moving statistics whatever trained them (ghost batches,
a Bessel-corrected variance, renorm, synchronized replicas), so a model built
with any of them must fold to zero BN layers and export with parity.
"""

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn.export import to_onnx, to_tflite
from tests.helpers.layers import random_bn_weights

OPTIONS = {
    "synchronized": {"synchronized": True},
    "ghost": {"virtual_batch_size": 4},
    "unbiased": {"unbiased_moving_variance": True},
    "renorm_ghost": {"renorm": True, "virtual_batch_size": 2},
}


def _model(rng, bn_kwargs):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(
                6, 3, kernel_initializer=keras.initializers.HeNormal(0)
            ),
            keras_bn.BatchNormalization(name="bn", **bn_kwargs),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                3, kernel_initializer=keras.initializers.GlorotUniform(1)
            ),
        ]
    )
    # One real training step under the option, then non-default statistics.
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    model.train_on_batch(x, rng.normal(size=(8, 3)).astype("float32"))
    bn = model.get_layer("bn")
    bn.set_weights(random_bn_weights(bn, rng))
    return model


@pytest.mark.parametrize("option", OPTIONS)
def test_option_folds_to_no_batchnorm(rng, option):
    model = _model(rng, OPTIONS[option])
    folded, report = keras_bn.fold_batchnorm(model, return_report=True)  # verify=True
    assert report.entries[0].folded
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers
    )


@pytest.mark.parametrize("option", ["synchronized", "renorm_ghost"])
@pytest.mark.parametrize("export", [to_onnx, to_tflite], ids=["onnx", "tflite"])
def test_option_exports_with_parity_and_no_batchnorm_ops(rng, tmp_path, option, export):
    model = _model(rng, OPTIONS[option])
    inputs = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    report = export(
        model, str(tmp_path / f"model.{export.__name__[3:]}"), inputs=inputs
    )
    assert report.parity.max_rel_error <= report.parity.tolerance
    assert not any("batchnorm" in op.lower() for op in report.op_histogram)
    assert np.isfinite(report.parity.max_abs_error)
