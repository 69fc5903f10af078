"""`keras-bn bench NAME`: run one benchmark of `keras_bn.bench`.

Benchmarks follow one convention (see `keras_bn.bench`). This command
builds the benchmark's parser (with `-q` and `--json` like every other
command) from `keras_bn.bench.arguments`, which is TensorFlow-free, so that
`--help` and usage errors answer at once; only then is the benchmark's module
(which loads TensorFlow) imported, run, and its rows printed as tables or as
one JSON document.
"""

from __future__ import annotations

import argparse
import importlib
import os

from keras_bn.cli.arguments import add_common
from keras_bn.cli.output import format_row_tables, print_json
from keras_bn.defaults import BENCHMARKS, EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(BENCHMARKS))
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, help="passed to the benchmark"
    )


def benchmark_parser(
    name: str, parser_class, json_errors: bool = False
) -> argparse.ArgumentParser:
    """`keras-bn bench NAME`'s own parser: common flags plus the benchmark's.

    Built from `keras_bn.bench.arguments`, without importing the benchmark.
    """
    from keras_bn.bench.arguments import ADD_ARGUMENTS

    parser = parser_class(
        prog=f"keras-bn bench {name}",
        description=BENCHMARKS[name],
        epilog=f"example: keras-bn bench {name} --json",
        json_errors=json_errors,
    )
    add_common(parser)
    ADD_ARGUMENTS[name](parser)
    return parser


def run(args: argparse.Namespace) -> int:
    parser = benchmark_parser(args.name, type(args.parser), args.parser.json_errors)
    options = parser.parse_args(args.args)  # help and usage errors: no TensorFlow
    args.json = options.json
    # Keras reads KERAS_BACKEND once, when it is first imported: set it before
    # the benchmark imports Keras. `NAME` runs on TensorFlow, `NAME_jax` on JAX.
    backend = getattr(options, "backend", "tensorflow")
    os.environ["KERAS_BACKEND"] = backend
    suffix = "" if backend == "tensorflow" else f"_{backend}"
    module = importlib.import_module(f"keras_bn.bench.{args.name}{suffix}")
    rows = module.run(options)
    if options.json:
        print_json({"status": "ok", "benchmark": args.name, "rows": rows})
    else:
        print(format_row_tables(rows, module.COLUMNS))
    return EXIT_OK
