"""The cases both layer benchmarks time (`keras-bn bench layer`, on TensorFlow and on JAX).

TensorFlow-free, so the JAX benchmark runs where TensorFlow is not installed.
"""

from __future__ import annotations

import argparse

# "shape:axis"; the axis defaults to -1.
DEFAULT_SHAPES = ["64,28,28,64", "256,14,14,256", "1024,512", "64,64,28,28:1"]
MOMENTUM = 0.99
EPSILON = 1e-3


def parse_shape(text: str) -> tuple[tuple[int, ...], int]:
    """`"64,64,28,28:1"` → `((64, 64, 28, 28), 1)`; the axis defaults to -1."""
    dims, _, axis = text.partition(":")
    try:
        return tuple(int(n) for n in dims.split(",")), int(axis or -1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is comma-separated ints with an optional ':axis'. Received: {text!r}"
        ) from None
