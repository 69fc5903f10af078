"""Checking and copying the Keras objects a user hands to keras_bn.

Every public function that takes a model checks it with `check_model`, so a
wrong argument gets one message everywhere; every copy of a layer goes
through `rebuild_layer`, so a layer that cannot be rebuilt is reported the
same way by conversion, folding and export.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["check_model", "rebuild_layer"]


def check_model(model: Any) -> None:
    """Raises unless `model` is a `keras.Model`.

    Raises:
        TypeError: `model` is anything else, quoting it and its type.

    Example:

    >>> check_model(keras.layers.Dense(3))  # doctest: +SKIP
    TypeError: `model` must be a keras.Model. Received: model=<Dense ...> of type Dense
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r} "
            f"of type {type(model).__name__}"
        )


def rebuild_layer(
    layer: keras.layers.Layer, config: dict | None = None
) -> keras.layers.Layer:
    """A new, unbuilt layer of `layer`'s class made from `config`.

    Args:
        layer: The layer to copy.
        config: The config to build from (default: `layer.get_config()`).

    Returns:
        The new layer, without weights.

    Raises:
        TypeError: The class cannot be rebuilt from the config.
    """
    try:
        return layer.__class__.from_config(
            layer.get_config() if config is None else config
        )
    except Exception as error:
        raise TypeError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be rebuilt "
            "from its config, which keras_bn needs to copy the model without "
            "touching it. Give the class a `get_config` that lists its "
            f"constructor arguments. Received: {type(error).__name__}: {error}"
        ) from error
