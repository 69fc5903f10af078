"""The `keras-bn` parser, assembled from `keras_bn.cli.commands`, and `main`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from keras_bn.cli.arguments import add_common
from keras_bn.cli.commands import COMMANDS, EXAMPLES, HELP, examples
from keras_bn.cli.errors import (
    details_for,
    exit_code_for,
    message_for,
    one_line,
)
from keras_bn.cli.loading import check_input_files
from keras_bn.cli.output import print_json
from keras_bn.cli.quiet import quiet_run
from keras_bn.cli.signals import signals_as_interrupts
from keras_bn.defaults import (
    EXIT_INTERNAL,
    EXIT_STATUSES,
    EXIT_STDOUT_CLOSED,
    EXIT_USAGE,
    STATUS,
)

DESCRIPTION = (
    "Batch Normalization for Keras 3: train with the analytic gradient, "
    "fold BN away, export parity-checked TFLite and ONNX files."
)
EPILOG = (
    examples(*(EXAMPLES[name][0] for name in COMMANDS))
    + "\n\nexit status:\n"
    + "".join(
        f"  {code:<3} {meaning.split(':')[0]}\n" for code, _, meaning in EXIT_STATUSES
    )
    + "details: docs/cli.md"
)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (plus the usage) and exit status 2.

    With `json_errors` (the command line holds `--json`), the usage error is
    also the one JSON document on stdout.
    """

    def __init__(self, *args, json_errors: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.json_errors = json_errors

    def error(self, message: str):
        self.print_usage(sys.stderr)
        if self.json_errors:
            print_json(
                {
                    "status": STATUS[EXIT_USAGE],
                    "error": one_line(message),
                    "exit_code": EXIT_USAGE,
                }
            )
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class VersionAction(argparse.Action):
    """`--version`: keras_bn's, Keras' and TensorFlow's, from package metadata.

    Read from the installed distributions rather than by importing Keras and
    TensorFlow, so that it answers at once and prints no TensorFlow log line.
    """

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        import keras_bn

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        print(
            f"keras-bn {keras_bn.__version__} (keras {installed('keras')}, "
            f"tensorflow {installed('tensorflow')})"
        )
        parser.exit()


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    """The `keras-bn` argument parser, one subparser per command module.

    Args:
        json_errors: Report usage errors as a JSON document too (`--json`).
    """
    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="keras-bn",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
        json_errors=json_errors,
    )
    parser.add_argument("--version", action=VersionAction, help="show versions")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        command = importlib.import_module(f"keras_bn.cli.commands.{name}")
        sub = subparsers.add_parser(
            name,
            help=HELP[name],
            description=HELP[name],
            epilog=examples(*EXAMPLES[name]),
            formatter_class=formatter,
            json_errors=json_errors,
        )
        if name != "bench":  # a benchmark's own parser adds them
            add_common(sub)
        sub.set_defaults(run=command.run, parser=sub, input_files={})
        command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-bn` with `argv` (default: `sys.argv[1:]`); returns the exit status.

    Every expected failure (bad input, a parity failure, an `OSError`, an
    interrupt or a terminating signal) ends as one line on stderr and its exit
    status; with `--json`, stdout holds exactly one JSON document whatever
    happens, with a `status`. A bug prints its traceback and exits
    `EXIT_INTERNAL`. A closed stdout (`| head`) ends the command quietly with
    `EXIT_STDOUT_CLOSED`, keeping the files it wrote.

    Before TensorFlow loads, `import keras_bn` has set
    `keras_bn.defaults.TENSORFLOW_ENVIRONMENT` (oneDNN, for `channels_first`
    convolutions on every CPU), except the variables the user set.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser(json_errors="--json" in argv).parse_args(argv)
    # Export needs TensorFlow: whatever KERAS_BACKEND says, the commands run on
    # it (`bench NAME --backend jax` sets its own, docs/jax.md).
    os.environ["KERAS_BACKEND"] = "tensorflow"
    verbose = getattr(args, "verbose", False) or bool({"-v", "--verbose"} & set(argv))
    with quiet_run(verbose), signals_as_interrupts():
        try:
            try:
                check_input_files(args)
                code = args.run(args)
                sys.stdout.flush()
                return code
            except (Exception, KeyboardInterrupt) as e:
                return report(args, e)
        except BrokenPipeError:
            return stdout_closed()


def report(args: argparse.Namespace, error: BaseException) -> int:
    """Reports `error` (one line, or a traceback for a bug); returns the status."""
    code = exit_code_for(error)
    if code == EXIT_STDOUT_CLOSED:
        return stdout_closed()
    if code is None:
        traceback.print_exception(error, file=sys.stderr)
        code = EXIT_INTERNAL
    report_failure(args, error, code)
    sys.stdout.flush()
    return code


def stdout_closed() -> int:
    """Points stdout at `os.devnull` so that exiting prints no second error.

    Python's documented way ("Note on SIGPIPE", `signal` module): once the
    reader of a pipe has gone, any further write or the interpreter's final
    flush would raise `BrokenPipeError` again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    # A stdout without a descriptor (replaced by a caller) needs nothing.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_CLOSED


def report_failure(args: argparse.Namespace, error: BaseException, code: int) -> None:
    """The failure's one line on stderr, and its JSON document with `--json`."""
    message = message_for(error)
    print(f"keras-bn {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json(
            {
                "status": STATUS[code],
                "error": message,
                "exit_code": code,
                **details_for(error),
            }
        )


if __name__ == "__main__":
    sys.exit(main())
