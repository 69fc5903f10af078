"""The `keras-bn` parser, assembled from `keras_bn.cli.commands`, and `main`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from keras_bn.cli.arguments import add_common
from keras_bn.cli.commands import COMMANDS
from keras_bn.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for, one_line
from keras_bn.cli.output import print_json

DESCRIPTION = (
    "Batch Normalization for Keras 3: train with the analytic gradient, "
    "fold BN away, export parity-checked TFLite and ONNX files."
)
EPILOG = (
    "examples:\n"
    "  keras-bn demo\n"
    "  keras-bn fold model.keras -o model_folded.keras\n"
    "  keras-bn export model.keras --format all -o export/out\n"
    "  keras-bn check model.keras export/out/model.onnx\n"
    "  keras-bn bench layer --repeats 10\n\n"
    "exit status: 0 ok, 1 bad input, 2 usage error, 3 parity failure"
)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (plus the usage) and exit status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class VersionAction(argparse.Action):
    """`--version`: keras_bn's, Keras' and TensorFlow's, imported on demand."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import keras
        import tensorflow as tf

        import keras_bn

        print(
            f"keras-bn {keras_bn.__version__} (keras {keras.__version__}, "
            f"tensorflow {tf.__version__})"
        )
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The `keras-bn` argument parser, one subparser per command module."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="keras-bn",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action=VersionAction, help="show versions")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        command = importlib.import_module(f"keras_bn.cli.commands.{name}")
        sub = subparsers.add_parser(
            name,
            help=command.HELP,
            description=command.HELP,
            epilog=command.EPILOG,
            formatter_class=formatter,
        )
        if name != "bench":  # a benchmark's own parser adds them
            add_common(sub)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run, parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-bn` with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("keras-bn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = exit_code_for(e)
        if code is None:
            raise
        message = one_line(str(e)) or type(e).__name__
        print(f"keras-bn {args.command}: error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print_json({"status": "error", "error": message, "exit_code": code})
        return code


if __name__ == "__main__":
    sys.exit(main())
