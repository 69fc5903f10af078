"""What every benchmark module shares: its `main` and its argument types."""

from __future__ import annotations

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
