"""Flags shared by several subcommands (number types: `keras_bn.argument_types`)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "add_common",
    "add_model_argument",
    "add_population_data",
    "keras_output_path",
]


def add_common(parser: argparse.ArgumentParser) -> None:
    """`-q/--quiet`, `-v/--verbose` and `--json`, which every subcommand accepts."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="let TensorFlow and the converters log to stderr",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON document on stdout, with a `status` field",
    )


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional `MODEL.keras` every model command reads."""
    parser.add_argument("model", metavar="MODEL.keras")


def add_population_data(parser: argparse.ArgumentParser) -> None:
    """`--population-data FILE`: re-estimate BN statistics before folding."""
    parser.add_argument(
        "--population-data",
        metavar="FILE",
        help="re-estimate every BN's statistics on these inputs first "
        "(population statistics, on a copy; see `keras-bn recalibrate`): "
        "x_train of an .npz, or an .npy",
    )


def keras_output_path(model: str, output: str | None, default_suffix: str) -> Path:
    """`-o OUT.keras`, or `MODEL<default_suffix>.keras` next to the model.

    Raises:
        CommandError: `-o` does not end in `.keras`, or its directory is
            missing (checked before the model is loaded).
    """
    from keras_bn.cli.errors import CommandError

    if output is None:
        return Path(model).with_name(f"{Path(model).stem}{default_suffix}.keras")
    path = Path(output)
    if path.suffix != ".keras":
        raise CommandError(f"-o must name a .keras file. Received: {output!r}")
    if not path.parent.is_dir():
        raise CommandError(f"the directory of -o does not exist: {str(path.parent)!r}")
    return path
