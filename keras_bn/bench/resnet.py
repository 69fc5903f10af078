"""The small ResNet-style CNN `keras-bn bench train` times, on any Keras backend.

TensorFlow-free, so the JAX benchmark runs where TensorFlow is not installed.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

INPUT_SHAPE = (32, 32, 3)
CLASSES = 10


def build_resnet(
    norm: Callable[[], keras.layers.Layer], name: str, width: int = 16, seed: int = 0
) -> keras.Model:
    """A stem, two residual stages (the second strided), pooling and a classifier.

    Args:
        norm: makes one normalization layer (called once per conv).
        name: the model's name.
        width: the first stage's channels; the second has twice as many.
        seed: seeds Keras' initializers, so variants start from equal weights.

    Returns:
        A Functional model from (32, 32, 3) images to 10 logits.
    """
    keras.utils.set_random_seed(seed)

    def conv_bn(x, filters, strides=1, relu=True):
        x = keras.layers.Conv2D(filters, 3, strides, "same", use_bias=False)(x)
        x = norm()(x)
        return keras.layers.ReLU()(x) if relu else x

    def block(x, filters, strides=1):
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides, use_bias=False)(x)
            shortcut = norm()(shortcut)
        y = conv_bn(x, filters, strides)
        y = conv_bn(y, filters, relu=False)
        return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))

    inputs = keras.Input(INPUT_SHAPE)
    x = conv_bn(inputs, width)
    x = block(x, width)
    x = block(x, 2 * width, strides=2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES)(x)
    return keras.Model(inputs, outputs, name=name)
