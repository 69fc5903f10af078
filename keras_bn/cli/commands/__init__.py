"""One module per `keras-bn` subcommand, in the order `--help` lists them.

Each module has `HELP` (one line), `EPILOG` (examples), `add_arguments(parser)`
and `run(args) -> int` (the exit status), and `INPUT_FILES` (argparse
destination → what the file is) for the files
`keras_bn.cli.loading.check_input_files` checks before `run`; none
imports TensorFlow at import.
"""

COMMANDS = ("demo", "fold", "recalibrate", "qat", "export", "check", "bench")
