"""Benchmarks, run by `keras-bn bench NAME` (the only entry point).

Every benchmark module follows one convention, so that the command line runs
them all alike (the same `-q`/`--json` flags, usage errors, one JSON document):

- `DESCRIPTION: str`: one line for `--help`, `keras_bn.defaults.BENCHMARKS[NAME]`;
- `add_arguments(parser)`: its own flags on an `argparse` parser, defined
  in `keras_bn.bench.arguments` (TensorFlow-free, with the defaults and
  choices they need), so that `keras-bn bench NAME --help` and its usage
  errors need no TensorFlow;
- `run(args) -> list[dict]`: the measured rows, JSON-serialisable, nothing
  printed; rows of different tables carry a `"table"` key;
- `COLUMNS: list[str]`: the columns to show, in order.

Benchmarks are a leaf: only the command line imports them, and they import
nothing of it (number types: `keras_bn.argument_types`; timers:
`keras_bn.timing`).
"""
