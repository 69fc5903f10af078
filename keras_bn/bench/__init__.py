"""Benchmarks run by `keras-bn bench NAME` or `python -m keras_bn.bench.NAME`.

Every benchmark module follows one convention, so that the command line runs
them all alike (the same `-q`/`--json` flags, usage errors, one JSON document):

- `DESCRIPTION: str`: one line for `--help`;
- `add_arguments(parser)`: its own flags on an `argparse` parser;
- `run(args) -> list[dict]`: the measured rows, JSON-serialisable, nothing
  printed; rows of different tables carry a `"table"` key;
- `COLUMNS: list[str]`: the columns to show, in order;
- `main(argv=None) -> int`: `return runner.main_for(NAME, argv)`, the one shared
  implementation (`keras_bn.bench.runner`).

Timing helpers live in `keras_bn.bench.timing`.
"""
