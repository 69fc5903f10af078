"""The BN-free network: the limit a folded export should reach.

Replacing every BatchNormalization layer by a pass-through gives the network a
perfect fold would leave behind, structurally: the same convolutions and the
same number of elementwise operations, minus the normalisation. Its export is
the reference both for the op-count test ("no Mul/Add/Sub left from BN") and
for the benchmark's latency limit. It does not compute what the original does
(the normalisation is gone), so it is never used for parity.
"""

from __future__ import annotations

import keras

from keras_bn.keras_adapter import is_batchnorm
from keras_bn.keras_objects import check_model, rebuild_layer


class PassThrough(keras.layers.Layer):
    """Returns its input unchanged; stands where a BatchNormalization was.

    `keras.layers.Identity` cannot stand in: Functional graphs call a
    BatchNormalization with `mask=` and `training=`, which Identity rejects.
    """

    def call(self, inputs, mask=None, training=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def without_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of `model` with every BatchNormalization replaced by `PassThrough`.

    The other layers are rebuilt from their configs and get copies of their
    weights; `model` is not modified and shares no state with the result.
    Nested models are rewritten recursively.

    Args:
        model: A Functional or Sequential Keras model.

    Returns:
        A new model with the same inputs, outputs and layer names.

    Raises:
        TypeError: If `model` is not a `keras.Model`.

    Example:

    >>> bn_free = without_batchnorm(model)  # doctest: +SKIP
    >>> any(is_batchnorm(layer) for layer in bn_free.layers)  # doctest: +SKIP
    False
    """
    check_model(model)

    def clone(layer):
        if is_batchnorm(layer):
            return PassThrough(name=layer.name)
        if isinstance(layer, keras.Model):
            return without_batchnorm(layer)
        return rebuild_layer(layer)

    copy = keras.models.clone_model(model, clone_function=clone)
    for original in model.layers:
        if is_batchnorm(original) or isinstance(original, keras.Model):
            continue
        if original.weights:
            copy.get_layer(original.name).set_weights(original.get_weights())
    return copy
