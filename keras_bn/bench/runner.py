"""What every benchmark module shares: its `main` and its argument types."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main_for(name: str, argv: Sequence[str] | None = None) -> int:
    """Runs benchmark `name` exactly as `keras-bn bench NAME ...` does.

    Args:
        name: The benchmark's module name in `keras_bn.bench`.
        argv: Its arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status.
    """
    from keras_bn.cli import main

    args = sys.argv[1:] if argv is None else list(argv)
    return main(["bench", name, *args])


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1, or a usage error quoting `text`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer. Received: {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1. Received: {text!r}")
    return value
