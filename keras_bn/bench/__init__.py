"""Benchmarks, run by `keras-bn bench NAME` (the only entry point).

Every benchmark follows one convention, so that the command line runs them
all alike (the same `-q`/`--json` flags, usage errors, one JSON document).
What `keras-bn bench NAME --help` shows needs no TensorFlow, so it is not in
the benchmark's module:

- its one-line description: `keras_bn.defaults.BENCHMARKS[NAME]`;
- its flags: `keras_bn.bench.arguments.ADD_ARGUMENTS[NAME](parser)`, with the
  defaults and choices the module runs on.

The module `keras_bn.bench.NAME` (and `NAME_jax`, the same measurement on
JAX, where it exists) has:

- `run(args) -> list[dict]`: the measured rows, JSON-serialisable, nothing
  printed; rows of different tables carry a `"table"` key;
- `COLUMNS: list[str]`: the columns to show, in order.

Benchmarks are a leaf: only the command line imports them, and they import
nothing of it (number types: `keras_bn.argument_types`; timers:
`keras_bn.timing`).
"""
