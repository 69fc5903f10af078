"""`keras-bn`: the command line of keras_bn.

Parsing, progress bars, tables and exit codes only: every subcommand calls the
library (`keras_bn.demo`, `keras_bn.folding`, `keras_bn.export`,
`keras_bn.bench`) and turns its errors into one line on stderr.

- `app`: the parser, built from one module per subcommand, and `main`;
- `commands/<name>.py`: each subcommand's `add_arguments(parser)` and
  `run(args) -> int`;
- `errors`: exit codes and which exception maps to which;
- `output`: JSON documents and tables;
- `progress`: progress bars on stderr;
- `loading`: a Keras model from a user's path, as a one-line error if not;
- `quiet`: no TensorFlow / absl / converter log line unless `--verbose`;
- `signals`: SIGTERM and SIGHUP clean up as Ctrl-C does.

Files are written through `keras_bn.staging` (staged, checked, moved
into place), so a failed command leaves every previous file as it was.

The modules import TensorFlow only inside the handlers, so the parser (help,
usage errors) does not need it.

Exit statuses and the `--json` document's `status` names are
`keras_bn.defaults.EXIT_STATUSES`, listed in docs/cli.md. With `--json`,
stdout holds exactly one JSON document in every outcome.
"""

from keras_bn.cli.app import build_parser, main
from keras_bn.cli.errors import CommandError

__all__ = ["CommandError", "build_parser", "main"]
