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


def is_text(leaf: Any) -> bool:
    """Whether an input array holds strings, bytes or Python objects."""
    if isinstance(leaf, tf.Tensor):
        return leaf.dtype == tf.string
    return np.asarray(leaf).dtype.kind in "USO"


def batch_leaves(model: keras.Model, inputs: list, x: Any) -> list:
    """The arrays of batch `x` in the order of `inputs`, the model's inputs.

    A dict is matched by input name, as `model.fit` matches it, whatever the
    order the model's inputs were declared in; anything else is flattened.

    Raises:
        ValueError: a dict without an array for one of the inputs.
    """
    if not isinstance(x, dict):
        return tf.nest.flatten(x)
    names = [t.name for t in inputs]
    missing = [name for name in names if name not in x]
    if missing:
        raise ValueError(
            f"The batches of `data` do not fit model '{model.name}': a dict needs "
            f"one array per input name {names}; missing {missing}. Received keys: "
            f"{sorted(x)}"
        )
    return [x[name] for name in names]


def check_batch(model: keras.Model, x: Any) -> None:
    """Raises when a batch cannot be the model's input, as `fit` would take it.

    Raises:
        ValueError: the batch's arrays do not match the model's input shapes.
        TypeError: strings or Python objects where the model takes numbers.
    """
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):  # a subclassed model: let it say
        inputs = None
    leaves = tf.nest.flatten(x) if inputs is None else batch_leaves(model, inputs, x)
    dtypes = [None] * len(leaves) if inputs is None else [t.dtype for t in inputs]
    for leaf, dtype in zip(leaves, dtypes, strict=False):
        takes_text = (
            dtype is not None and keras.backend.standardize_dtype(dtype) == "string"
        )
        if is_text(leaf) and not takes_text:
            raise TypeError(
                f"`data` must hold numbers or booleans for model '{model.name}'"
                + ("" if dtype is None else f", whose input dtype is {dtype}")
                + ": a NumPy array, a tensor, or a list/dict of them. Received an "
                f"array of dtype {np.asarray(leaf).dtype} and shape {np.shape(leaf)}"
            )
    if inputs is None:
        return
    expected = [tuple(t.shape) for t in inputs]
    received = [tuple(np.shape(leaf)) for leaf in leaves]
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
    counts: list[np.ndarray],
    used: int,
    skipped: int,
) -> None:
    """Raises a `ValueError` unless the batches gave an estimate to assign.

    Args:
        model: the model.
        data: the data, for the message.
        steps: the `steps` argument, for the message.
        counts: values per channel each BN layer saw (an array per layer).
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
    if not any(np.any(count > 0) for count in counts):
        raise ValueError(
            f"No value reached a BN layer of model '{model.name}' (empty batches, or "
            f"masks that hide everything), so it was not changed. Received: {used} "
            "batches"
        )
