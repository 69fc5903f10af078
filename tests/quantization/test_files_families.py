"""Every layer family's int8 TFLite and QDQ ONNX files, judged by the exact gate.

tests/quantization/test_files.py covers Dense, Conv2D and DepthwiseConv2D
in larger graphs; here each remaining family stands alone in
`Input → Layer → BN → ReLU → Flatten → Dense`, with far-from-default BN
statistics, one QAT step in `fit`, and both files within one output step of
the simulation.
"""

import keras
import pytest

import keras_bn
from keras_bn.export import to_tflite
from keras_bn.quantization import quantized_blocks
from tests.helpers.qat_files import judge_int8_files, trained_qat

L = keras.layers

#: family → (input shape, the layer). Depth multipliers, strides and
#: paddings other than the defaults, where the family has them.
FAMILIES = {
    "Conv1D": ((8, 3), lambda: L.Conv1D(4, 3, padding="causal")),
    "Conv1DTranspose": ((5, 3), lambda: L.Conv1DTranspose(4, 3, strides=2)),
    "Conv2DTranspose": (
        (4, 4, 3),
        lambda: L.Conv2DTranspose(4, 3, strides=2, padding="same"),
    ),
    "SeparableConv1D": ((8, 3), lambda: L.SeparableConv1D(4, 3, depth_multiplier=2)),
    "SeparableConv2D": (
        (6, 6, 3),
        lambda: L.SeparableConv2D(4, 3, strides=2, depth_multiplier=2),
    ),
    "DepthwiseConv1D": ((8, 3), lambda: L.DepthwiseConv1D(3, depth_multiplier=2)),
    "Conv3D": ((4, 4, 4, 2), lambda: L.Conv3D(3, 2)),
    "Conv3DTranspose": ((3, 3, 3, 2), lambda: L.Conv3DTranspose(3, 2, strides=2)),
}
#: TFLite (TF 2.21) runs CONV_3D and CONV_3D_TRANSPOSE in float32 only.
ONNX_ONLY = ("Conv3D", "Conv3DTranspose")


def family_model(family):
    shape, make_layer = FAMILIES[family]

    def factory():
        inputs = keras.Input(shape)
        x = make_layer()(inputs)
        x = keras_bn.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.Flatten()(x)
        return keras.Model(inputs, L.Dense(4)(x))

    return factory


@pytest.mark.parametrize(
    ("family", "weights"),
    [
        *((f, "per_channel") for f in FAMILIES if f not in ONNX_ONLY),
        ("Conv1D", "per_tensor"),
        ("Conv2DTranspose", "per_tensor"),
        ("SeparableConv2D", "per_tensor"),
        ("DepthwiseConv1D", "per_tensor"),
    ],
)
def test_int8_files_are_the_simulation(family, weights, rng, tmp_path):
    keras.utils.set_random_seed(0)  # `fit` shuffles with TensorFlow's RNG
    qat, x = trained_qat(family_model(family), weights, rng)
    judge_int8_files(qat, x, tmp_path)


@pytest.mark.parametrize("family", ONNX_ONLY)
def test_3d_families_export_to_onnx_and_tflite_refuses(family, rng, tmp_path):
    keras.utils.set_random_seed(0)
    qat, x = trained_qat(family_model(family), "per_channel", rng)
    judge_int8_files(qat, x, tmp_path, formats=("onnx",))
    (block,) = [b for b in quantized_blocks(qat) if type(b.linear).__name__ == family]
    with pytest.raises(ValueError, match=f"'{block.name}' \\({family}\\).*float32"):
        to_tflite(qat, tmp_path / "m.tflite", quantize="int8", inputs=x)
    assert not (tmp_path / "m.tflite").exists()
