"""Checking that a folded model computes what the original computes."""

from __future__ import annotations

import keras
import numpy as np
from keras import tree

from keras_bn.defaults import DEFAULT_INPUT_BATCH, DEFAULT_INPUT_SEED
from keras_bn.keras_adapter import input_structure

__all__ = [
    "FoldVerificationError",
    "check_tolerances",
    "compare_models",
    "random_batch",
    "scale_relative_error",
]

# An unknown spatial or sequence length: long enough for the usual kernel
# sizes and strides of an unpadded network.
_UNKNOWN_LENGTH = 32


class FoldVerificationError(ValueError):
    """The folded model's outputs differ from the original's beyond tolerance."""


def check_tolerances(*, rtol: float, atol: float) -> None:
    """Raises unless both tolerances are non-negative numbers.

    Raises:
        ValueError: `rtol` or `atol` is negative (or NaN), quoting it.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not value >= 0:
            raise ValueError(
                f"`{name}` must be a non-negative number. Received: {name}={value}"
            )


def random_batch(
    model: keras.Model,
    seed: int = DEFAULT_INPUT_SEED,
    batch: int = DEFAULT_INPUT_BATCH,
):
    """The inputs keras_bn draws when none are given: seeded standard normal.

    The one default-input rule, for fold verification and export parity
    alike: `batch` samples (`keras_bn.defaults.DEFAULT_INPUT_BATCH`, 8) where
    the batch size is unknown, 32 for any other unknown dimension. Integer
    inputs (token ids) get zeros and ones, valid for any embedding.

    Returns:
        Arrays in the structure `model` takes (one array, a list or a dict).
    """
    rng = np.random.default_rng(seed)

    def make(x):
        shape = [
            (batch if i == 0 else _UNKNOWN_LENGTH) if d is None else d
            for i, d in enumerate(x.shape)
        ]
        dtype = np.dtype(keras.backend.standardize_dtype(x.dtype))
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            return rng.integers(0, 2, size=shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    return tree.map_structure(make, input_structure(model))


def scale_relative_error(max_abs_error: float, scale: float) -> float:
    """`max|y_new - y| / max|y|`, the error every check of keras_bn reports.

    Relative to the output's scale, not element-wise: rounding in a layer
    scales with the largest values it sums, so an element-wise ratio would
    blow up on outputs that happen to be near zero. An all-zero reference
    has no scale: a zero difference is then no error (0) and any other is
    infinitely large (`inf`), never an absolute difference passed off as a
    relative one.

    Args:
        max_abs_error: `max|y_new - y|`.
        scale: `max|y|` of the reference.

    Returns:
        The ratio, `0.0` or `inf` as above.

    Example:

    >>> scale_relative_error(1e-6, 2.0), scale_relative_error(0.0, 0.0)
    (5e-07, 0.0)
    """
    if scale > 0:
        return max_abs_error / scale
    return 0.0 if max_abs_error == 0 else float("inf")


def compare_models(
    original: keras.Model,
    folded: keras.Model,
    data,
    *,
    rtol: float,
    atol: float,
) -> float:
    """Runs both models in inference mode; raises if they disagree.

    Each output is compared as a whole: `max|folded - original|` must be at
    most `atol + rtol * max|original|`. Float32 rounding in a layer scales
    with the largest values it sums, not with each output element, so an
    element-wise relative test would fail on outputs that happen to be near
    zero.

    Args:
        original: the model before folding.
        folded: the model after folding.
        data: a batch in the structure the models take.
        rtol: tolerance relative to each output's largest magnitude.
        atol: absolute tolerance.

    Returns:
        The largest `scale_relative_error` over the outputs.

    Raises:
        FoldVerificationError: if an output is beyond tolerance, naming it.
    """
    expected = tree.flatten(original(data, training=False))
    actual = tree.flatten(folded(data, training=False))
    names = [t.name for t in original.outputs]
    worst = 0.0
    for name, e, a in zip(names, expected, actual, strict=True):
        e = np.asarray(keras.ops.convert_to_numpy(e), dtype=np.float64)
        a = np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float64)
        if e.shape != a.shape:
            raise FoldVerificationError(
                f"Folding changed the shape of output '{name}' of model "
                f"'{original.name}'. Received: {e.shape} before, {a.shape} after"
            )
        difference = float(np.max(np.abs(a - e), initial=0.0))
        magnitude = float(np.max(np.abs(e), initial=0.0))
        if not difference <= atol + rtol * magnitude:
            raise FoldVerificationError(
                f"The folded model '{folded.name}' differs from the original on "
                f"output '{name}': max|difference| = {difference:.3g} exceeds "
                f"atol + rtol * max|output| = {atol + rtol * magnitude:.3g}. "
                f"Received: rtol={rtol}, atol={atol}"
            )
        worst = max(worst, scale_relative_error(difference, magnitude))
    return worst
