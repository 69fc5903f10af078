"""The checks `population_statistics` makes, each raising with the received value."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_bn.keras_adapter import batchnorm_layers
from keras_bn.keras_objects import check_model


def check_arguments(
    model: Any, steps: Any, batch_size: Any, unbiased: Any
) -> list[keras.layers.Layer]:
    """Checks the arguments and returns the model's BN layers.

    Raises:
        TypeError: `model` is not a keras.Model, `unbiased` not a bool.
        ValueError: `steps` or `batch_size` is not a positive int or None; the
            model has no BN layer, or one is not built.
    """
    check_model(model)
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(
                f"`{name}` must be a positive int or None. Received: {name}={value!r}"
            )
    check_bool("unbiased", unbiased)
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no BatchNormalization layer: there are no "
            "statistics to estimate."
        )
    unbuilt = [layer.name for layer in layers if not layer.built]
    if unbuilt:
        raise ValueError(
            f"Model '{model.name}' must be built (called once, or created with an "
            f"Input) before its statistics can be estimated. Unbuilt BN layers: {unbuilt}"
        )
    return layers


def check_bool(name: str, value: Any) -> None:
    """Raises a `TypeError` unless `value` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool. Received: {name}={value!r}")


def check_verbose(verbose: Any) -> int:
    """`verbose` as 0, 1 or 2 (`"auto"` is 1, as `model.fit` on one device).

    Raises:
        ValueError: any other value.
    """
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(
            f'`verbose` must be "auto", 0, 1 or 2. Received: verbose={verbose!r}'
        )
    return verbose


def check_batch(model: keras.Model, x: Any) -> None:
    """Raises a `ValueError` when a batch cannot be the model's input."""
    try:
        expected = [tuple(t.shape) for t in model.inputs]
    except (AttributeError, ValueError):  # a subclassed model: let it say
        return
    received = [tuple(np.shape(leaf)) for leaf in tf.nest.flatten(x)]
    fits = len(received) == len(expected) and all(
        len(r) == len(e) and all(a is None or a == b for a, b in zip(e, r, strict=True))
        for e, r in zip(expected, received, strict=True)
    )
    if not fits:
        raise ValueError(
            f"The batches of `data` do not fit model '{model.name}', whose inputs "
            f"have shapes {expected} (None: any size). Received a batch of shapes "
            f"{received}"
        )


def check_collected(
    model: keras.Model,
    data: Any,
    steps: int | None,
    counts: list[float],
    used: int,
    skipped: int,
) -> None:
    """Raises a `ValueError` unless the batches gave an estimate to assign.

    Args:
        model: the model.
        data: the data, for the message.
        steps: the `steps` argument, for the message.
        counts: values per channel each BN layer saw.
        used: batches used.
        skipped: batches skipped for NaN/Inf.
    """
    if used + skipped == 0:
        raise ValueError(
            f"`data` gave no batches, so model '{model.name}' was not changed. "
            f"Received: data of type {type(data).__name__}, steps={steps}"
        )
    if used == 0:
        raise ValueError(
            f"Every batch of `data` held NaN or Inf ({skipped} of {skipped} skipped), "
            f"so model '{model.name}' was not changed."
        )
    if not any(counts):
        raise ValueError(
            f"No value reached a BN layer of model '{model.name}' (empty batches, or "
            f"masks that hide everything), so it was not changed. Received: {used} "
            "batches"
        )
