"""Argparse types for numbers, shared by the command line and the benchmarks.

TensorFlow-free, below both: a bad value is a usage error (exit status 2)
quoting what was typed, at parse time, before any model is loaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_between", "non_negative_float", "positive_float", "positive_int"]


def _converted(text: str, convert: Callable[[str], float], noun: str):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {noun}. Received: {text!r}"
        ) from None


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1, or a usage error quoting `text`."""
    value = _converted(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1. Received: {text!r}")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in `[low, high]`, or a usage error.

    Example:

    >>> int_between(13, 18)("17")
    17
    """

    def parse(text: str) -> int:
        value = _converted(text, int, "an integer")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be between {low} and {high}. Received: {text!r}"
            )
        return value

    parse.__name__ = f"int_between_{low}_and_{high}"
    return parse


def non_negative_float(text: str) -> float:
    """An argparse type: a number ≥ 0, or a usage error quoting `text`."""
    value = _converted(text, float, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0. Received: {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate), or a usage error."""
    value = _converted(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0. Received: {text!r}")
    return value
