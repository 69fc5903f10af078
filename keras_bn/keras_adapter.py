"""The one place keras_bn reads Keras' private model structure.

Keras 3 has no public way to list every layer of a model recursively (nested
models, sublayers of subclassed layers, a layer shared between call sites
counted once) or to read a Functional graph's nodes. Everything of that kind
goes through this module so that a change in Keras breaks one file, not five.

Checked against Keras 3.15 (TensorFlow 2.21).
"""

from __future__ import annotations

from collections.abc import Iterator

import keras


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside `model`, depth first, each distinct layer once.

    Nested models and the sublayers that subclassed layers track are included;
    `model` itself is not. A layer shared between several call sites (or
    several parent models) is yielded once.

    Args:
        model: A `keras.Model` or any `keras.layers.Layer`.

    Returns:
        An iterator over the layers, parents before their sublayers.

    Example:

    >>> bns = [l for l in iter_layers(model) if is_batchnorm(l)]  # doctest: +SKIP
    """
    # `_flatten_layers` deduplicates by identity and descends into every
    # tracked sublayer (Keras 3.15: `keras.src.layers.layer.Layer`).
    yield from model._flatten_layers(include_self=False, recursive=True)


def is_batchnorm(layer: keras.layers.Layer) -> bool:
    """True for `keras.layers.BatchNormalization` and its subclasses.

    That includes `keras_bn.BatchNormalization`.
    """
    return isinstance(layer, keras.layers.BatchNormalization)


def batchnorm_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every BatchNormalization layer inside `model` (see `iter_layers`)."""
    return [layer for layer in iter_layers(model) if is_batchnorm(layer)]


def is_graph_model(layer: keras.layers.Layer) -> bool:
    """True for a Sequential or Functional model: one whose graph Keras can rebuild.

    `keras.models.clone_model` rebuilds exactly these (and recurses into
    them); a subclassed model or layer is opaque to it.
    """
    # Keras 3.15 exposes no public Functional class
    # (`keras.src.models.functional.Functional`).
    from keras.src.models.functional import Functional

    return isinstance(layer, (keras.Sequential, Functional))
