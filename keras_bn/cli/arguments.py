"""Flags shared by several subcommands (number types: `keras_bn.argument_types`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = [
    "add_common",
    "add_data_argument",
    "add_input_file",
    "add_model_argument",
    "add_output_argument",
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


def add_input_file(
    parser: argparse.ArgumentParser, *name_or_flags: str, what: str, **kwargs: Any
) -> None:
    """An argument that names a file the command reads.

    `keras_bn.cli.loading.check_input_files` checks every such file (it
    exists, is a file, is readable) before the command runs, so that a typo
    fails before any output is written or TensorFlow is loaded.

    Args:
        parser: The subcommand's parser.
        *name_or_flags: As `parser.add_argument`'s.
        what: What the file is, for the error message (`"data file"`).
        **kwargs: As `parser.add_argument`'s.
    """
    action = parser.add_argument(*name_or_flags, **kwargs)
    files = dict(parser.get_default("input_files") or {})
    parser.set_defaults(input_files={**files, action.dest: what})


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional `MODEL.keras` every model command reads."""
    add_input_file(parser, "model", metavar="MODEL.keras", what="Keras model")


def add_data_argument(
    parser: argparse.ArgumentParser,
    contents: str,
    *,
    npz_only: bool = False,
    required: bool = False,
) -> None:
    """`--data FILE`: the arrays a command reads (`keras_bn.data`'s `.npz`/`.npy` rules).

    Args:
        parser: The subcommand's parser.
        contents: The help: which arrays the command takes from the file.
        npz_only: The command needs named arrays (labels): `.npz` only.
        required: The command cannot run without it.
    """
    add_input_file(
        parser,
        "--data",
        what="data file",
        metavar="FILE.npz" if npz_only else "FILE",
        required=required,
        help=contents,
    )


def add_output_argument(
    parser: argparse.ArgumentParser, suffix: str, kept: str
) -> None:
    """`-o OUT.keras`, the new model file of a command that writes one.

    Args:
        parser: The subcommand's parser.
        suffix: The default file is `MODEL<suffix>.keras` next to `MODEL`
            (`keras_output_path` reads it back from the parsed arguments).
        kept: What the new file keeps of `MODEL` (compile configuration,
            optimizer state), said in the help.
    """
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT.keras",
        help=f"default: MODEL{suffix}.keras next to MODEL; replaced only once "
        f"the new file is complete. {kept}",
    )
    parser.set_defaults(output_suffix=suffix)


def add_population_data(parser: argparse.ArgumentParser) -> None:
    """`--population-data FILE`: re-estimate BN statistics before folding."""
    add_input_file(
        parser,
        "--population-data",
        what="data file",
        metavar="FILE",
        help="re-estimate every BN's statistics on these inputs first "
        "(population statistics, on a copy; see `keras-bn recalibrate`): "
        "x_train of an .npz, or an .npy",
    )


def keras_output_path(args: argparse.Namespace) -> Path:
    """`-o OUT.keras`, or `MODEL<suffix>.keras` next to the model (`add_output_argument`).

    Raises:
        CommandError: `-o` does not end in `.keras`, or its directory is
            missing (checked before the model is loaded).
    """
    from keras_bn.cli.errors import CommandError

    model, output = args.model, args.output
    if output is None:
        return Path(model).with_name(f"{Path(model).stem}{args.output_suffix}.keras")
    path = Path(output)
    if path.suffix != ".keras":
        raise CommandError(f"-o must name a .keras file. Received: {output!r}")
    if not path.parent.is_dir():
        raise CommandError(f"the directory of -o does not exist: {str(path.parent)!r}")
    return path
