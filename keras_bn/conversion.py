"""Copies of Keras models: with the same weights, or with our BN layer in place of Keras'.

`convert_batchnorm` is how a `keras.applications` model, or any model built
with `keras.layers.BatchNormalization`, gets `keras_bn.BatchNormalization`:
the same configuration and weights, so the same inference function, but the
analytic gradient, the NaN guard and the other options in training.
`clone_with_weights` is the plain copy the population-statistics and folding
pipeline takes before changing anything, so the caller's model stays as it was.

Both rebuild the graph with `keras.models.clone_model(recursive=True)`: nested
Sequential and Functional models are rebuilt too, a shared layer is cloned
once. A subclassed layer is rebuilt from its config, so a Keras BN it creates
inside itself cannot be swapped: `convert_batchnorm` refuses such models by
name rather than return one that still holds Keras' layer.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from keras_bn.keras_adapter import batchnorm_layers, is_graph_model
from keras_bn.keras_objects import check_model, rebuild_layer
from keras_bn.layers import BatchNormalization

__all__ = ["clone_with_weights", "convert_batchnorm", "is_keras_batchnorm"]


def is_keras_batchnorm(layer: keras.layers.Layer) -> bool:
    """True for a Keras BatchNormalization that is not already ours."""
    return isinstance(layer, keras.layers.BatchNormalization) and not isinstance(
        layer, BatchNormalization
    )


def _require_graph_model(model) -> None:
    check_model(model)
    if not is_graph_model(model):
        raise TypeError(
            "`model` must be a Sequential or Functional keras.Model (a subclassed "
            "model's graph cannot be rebuilt). Received: model="
            f"{getattr(model, 'name', model)!r} of type {type(model).__name__}"
        )


def clone_with_weights(
    model: keras.Model,
    clone_function: Callable[[keras.layers.Layer], keras.layers.Layer] | None = None,
) -> keras.Model:
    """A new model with the same architecture and weights; `model` is untouched.

    No variable is shared between the two, so training, recalibrating or
    folding the copy cannot change the original. The optimizer state is not
    copied.

    Args:
        model: a Sequential or Functional model (nested ones included).
        clone_function: as `keras.models.clone_model`'s, for the leaf layers;
            the new layer must have the same weights in the same order.
            Default: `keras_bn.keras_objects.rebuild_layer`.

    Returns:
        The copy.

    Raises:
        TypeError: `model` is not a Sequential or Functional model.

    Example:

    >>> copy = clone_with_weights(model)  # doctest: +SKIP
    """
    _require_graph_model(model)
    copy = keras.models.clone_model(
        model, clone_function=clone_function, recursive=True
    )
    copy.set_weights(model.get_weights())
    return copy


def _unconvertible(model: keras.Model) -> list[str]:
    """Keras BNs that a clone cannot replace, as "'bn' inside 'owner' (Class)"."""
    found = []
    for layer in model.layers:
        if is_graph_model(layer):
            found.extend(_unconvertible(layer))
        elif not isinstance(layer, keras.layers.BatchNormalization):
            found.extend(
                f"'{bn.name}' inside '{layer.name}' ({type(layer).__name__})"
                for bn in batchnorm_layers(layer)
                if is_keras_batchnorm(bn)
            )
    return found


def _to_ours(layer: keras.layers.Layer) -> keras.layers.Layer:
    if is_keras_batchnorm(layer):
        # Our constructor takes every argument of Keras' layer, with the same
        # meaning, so the config transfers as it is.
        try:
            return BatchNormalization.from_config(layer.get_config())
        except (TypeError, ValueError) as e:
            # Keras accepts values that have no meaning (momentum 1.5, a
            # negative epsilon); ours refuses them and says why. Keras 3.15's
            # `from_config` wraps the constructor's error in a TypeError.
            reason = e.__cause__ or e
            raise ValueError(
                f"Cannot convert BatchNormalization layer '{layer.name}' to "
                f"keras_bn.BatchNormalization: {reason}"
            ) from e
    return rebuild_layer(layer)


def convert_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of `model` with every `keras.layers.BatchNormalization` made ours.

    Keras' layer and `keras_bn.BatchNormalization` have the same arguments and
    the same weights in the same order, so the copy computes the same
    inference function and starts training where the original was, but with
    the analytic gradient (and `freeze_batchnorm(..., train_affine=True)`
    becomes possible). Layers that already are ours, and every other layer,
    are copied with their weights. The caller's model is not changed.

    Args:
        model: a Sequential or Functional model; nested Sequential/Functional
            models are converted too.

    Returns:
        The converted copy.

    Raises:
        TypeError: `model` is not a Sequential or Functional model.
        ValueError: a Keras BN sits inside a subclassed layer, which can only be
            rebuilt from its config (the error names each such BN and its owner),
            or has a value Keras accepts but that has no meaning (momentum
            outside [0, 1], a negative epsilon; the error names the layer).

    Example:

    >>> base = keras.applications.ResNet50V2(weights="imagenet")  # doctest: +SKIP
    >>> model = keras_bn.convert_batchnorm(base)  # doctest: +SKIP
    """
    _require_graph_model(model)
    blocked = _unconvertible(model)
    if blocked:
        raise ValueError(
            f"Cannot convert model '{model.name}': these Keras BatchNormalization "
            f"layers are created inside subclassed layers, which are rebuilt from "
            f"their config and would keep Keras' layer: {', '.join(blocked)}. Use "
            "keras_bn.BatchNormalization in those layers' code."
        )
    return clone_with_weights(model, _to_ours)
