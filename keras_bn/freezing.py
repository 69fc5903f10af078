"""Freezing Batch Normalization for fine-tuning.

Keras has one switch, `trainable=False`, which for a BN layer means two
things at once: inference mode (normalize with the moving statistics, never
update them) and frozen γ and β (keras-team/keras#20285, #11590, #4762). A
common fine-tuning recipe wants only the first: the statistics of the
pre-trained network kept, the affine part adapted to the new task.
`keras_bn.BatchNormalization(use_moving_statistics=True)` expresses exactly
that; `freeze_batchnorm` sets either form on every BN of a model.
"""

from __future__ import annotations

import keras

from keras_bn.conversion import is_keras_batchnorm
from keras_bn.keras_adapter import batchnorm_layers
from keras_bn.keras_objects import check_model

__all__ = ["freeze_batchnorm"]


def freeze_batchnorm(model: keras.Model, *, train_affine: bool = False) -> list[str]:
    """Freezes every BN layer of `model` for fine-tuning, in place.

    `train_affine=False` sets `trainable=False` (Keras' semantics): the layer
    normalizes with its moving statistics, never updates them, and γ and β do
    not train. `train_affine=True` keeps γ and β trainable while the layer
    still normalizes with its moving statistics and never updates them, even
    under `fit` with `training=True`; that needs `keras_bn.BatchNormalization`
    (`use_moving_statistics=True`), so a model with Keras' layer is refused
    before anything changes: convert it with `keras_bn.convert_batchnorm`.

    Call it before `compile`/`fit`: a compiled training function reads these
    settings when it is traced (after a change, `model.compile` again).

    Args:
        model: a Keras model (nested models and shared layers included).
        train_affine: keep γ and β trainable.

    Returns:
        The names of the layers frozen, in `iter_layers` order.

    Raises:
        TypeError: `model` is not a Keras model or `train_affine` not a bool.
        ValueError: the model has no BN layer, or `train_affine=True` and some
            BN is Keras' layer (each is named).

    Example:

    >>> model = keras_bn.convert_batchnorm(keras.applications.ResNet50V2())  # doctest: +SKIP
    >>> keras_bn.freeze_batchnorm(model, train_affine=True)  # doctest: +SKIP
    """
    _check_arguments(model, train_affine)
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no BatchNormalization layer to freeze."
        )
    if train_affine:
        keras_layers = [layer.name for layer in layers if is_keras_batchnorm(layer)]
        if keras_layers:
            raise ValueError(
                "`train_affine=True` needs keras_bn.BatchNormalization (Keras' layer "
                "cannot normalize with its moving statistics while γ and β train). "
                f"Keras layers in model '{model.name}': {keras_layers}. Convert "
                "the model first: model = keras_bn.convert_batchnorm(model)"
            )
        for layer in layers:
            layer.use_moving_statistics = True
            layer.trainable = True
    else:
        for layer in layers:
            layer.trainable = False
    return [layer.name for layer in layers]


def _check_arguments(model, train_affine) -> None:
    """Raises a `TypeError` for a `model` or `train_affine` of the wrong type."""
    check_model(model)
    if not isinstance(train_affine, bool):
        raise TypeError(
            f"`train_affine` must be a bool. Received: train_affine={train_affine!r}"
        )
