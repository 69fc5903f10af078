"""A quiet command line: no TensorFlow, absl or converter log lines unless `--verbose`.

TensorFlow and its converters log from C++ straight to file descriptor 2:
`TF_CPP_MIN_LOG_LEVEL` filters TensorFlow's own lines, but not absl's
"WARNING: All log messages before absl::InitializeLog() are written to
STDERR", the `E0000 … cuInit` line of a machine without a GPU (both written
before the level is read), nor LiteRT's "INFO: Created TensorFlow Lite
XNNPACK delegate", the MLIR converter's diagnostics or onnxruntime's
warnings. The one thing that silences them all is pointing descriptor 2
somewhere else while the command runs; Python's `sys.stderr` (our progress
bars, warnings and error line, and a traceback if keras_bn has a bug) is
moved to a copy of the real descriptor first, so it still reaches the
terminal.

Python-side, the `tensorflow`, `absl`, `tf2onnx` and `h5py` loggers are set
to ERROR, and a Python warning becomes one line, `keras-bn: warning: …`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# Set before TensorFlow is imported, unless the user chose a level.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}
NOISY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py", "onnxruntime")


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` for the command line: one line, no source."""
    text = " ".join(str(message).split())
    print(f"keras-bn: warning: {text}", file=file or sys.stderr)


@contextlib.contextmanager
def quiet_run(verbose: bool) -> Iterator[None]:
    """Runs a command with every library log line silenced, unless `verbose`.

    Args:
        verbose: Leave logging as TensorFlow and the converters set it.
    """
    if verbose:
        yield
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warning
        with native_stderr_silenced():
            yield


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at `os.devnull`; `sys.stderr` keeps the terminal.

    Only when `sys.stderr` is the process's own stderr: under a test runner
    that captures `sys.stderr`, descriptor 2 is left alone.
    """
    if sys.stderr is not sys.__stderr__ or sys.__stderr__ is None:
        yield
        return
    sys.stderr.flush()
    terminal = os.fdopen(
        os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="replace"
    )
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = terminal
    try:
        yield
    finally:
        terminal.flush()
        sys.stderr = sys.__stderr__
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()
