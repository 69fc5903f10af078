"""How far an exported file may drift from its Keras original: `parity_tolerance`.

Every parity check of `keras_bn.export` judges the scale-relative error
`max|y_file - y_keras| / max|y_keras|` by a bound computed here from the
model's structure, never tuned by trial:

- float32: `keras_bn.rounding_bounds.rounding_tolerance` (the fold's bound);
- float16 weights: that plus `4 · u16 · √(L / 3)`, `u16 = 2**-11`, `L` the
  layers with a weight matrix;
- int8: `4 · 2.3e-3 · √(2(L + 1))`, judged on samples the calibration did not
  see (`keras_bn.export.prepare.split_int8_data`).

A confident softmax head can exceed these bounds: compare the logits. The
derivation, measurements and limits: docs/error-model.md.
"""

from __future__ import annotations

import math

import keras

from keras_bn.defaults import QUANTIZE_MODES
from keras_bn.rounding_bounds import (
    TAIL_FACTOR,
    UNIT_ROUNDOFF,
    float32_tolerance,
    has_weight_matrix,
    leaf_layers,
    reduction_length,
    rounding_tolerance,
)

__all__ = [
    "check_quantize",
    "float16_tolerance",
    "float32_tolerance",
    "int8_tolerance",
    "parity_tolerance",
    "reduction_length",
    "rounding_tolerance",
    "weighted_layer_count",
]

FLOAT16_UNIT_ROUNDOFF = UNIT_ROUNDOFF["float16"]
# Relative standard deviation of one int8-quantized tensor: a uniform rounding
# over 255 steps of a range twice the output's scale.
INT8_RELATIVE_STD = 2.0 / (255.0 * math.sqrt(12.0))


def weighted_layer_count(model: keras.Model) -> int:
    """Number of layers whose weights quantization rounds (the `L` above)."""
    return sum(1 for layer in leaf_layers(model) if has_weight_matrix(layer))


def float16_tolerance(model: keras.Model) -> float:
    """The rounding bound plus `4 · u16 · √(L / 3)` for float16 weights."""
    layers = weighted_layer_count(model)
    return rounding_tolerance(model) + TAIL_FACTOR * FLOAT16_UNIT_ROUNDOFF * math.sqrt(
        layers / 3.0
    )


def int8_tolerance(model: keras.Model) -> float:
    """`4 · 2.3e-3 · √(2(L + 1))`: the int8 parity bound on held-out data."""
    layers = weighted_layer_count(model)
    return TAIL_FACTOR * INT8_RELATIVE_STD * math.sqrt(2.0 * (layers + 1))


def parity_tolerance(model: keras.Model, quantize: str | None = None) -> float:
    """The scale-relative parity tolerance for exporting `model`.

    Args:
        model: The Keras model as the user gave it (before folding).
        quantize: `None` (float32), `"float16"` or `"int8"`.

    Returns:
        The bound on `max|y_file - y_keras| / max|y_keras|`.

    Raises:
        ValueError: For any other `quantize`.
    """
    check_quantize(quantize)
    if quantize == "float16":
        return float16_tolerance(model)
    if quantize == "int8":
        return int8_tolerance(model)
    return rounding_tolerance(model)


def check_quantize(quantize: str | None) -> None:
    """Raises unless `quantize` is one of `keras_bn.defaults.QUANTIZE_MODES`.

    Raises:
        ValueError: For any other value, quoting it.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            "`quantize` must be None, 'float16' or 'int8'. "
            f"Received: quantize={quantize!r}"
        )
