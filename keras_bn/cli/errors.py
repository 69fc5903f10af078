"""Which exit status each failure gets, and the one line it becomes.

The statuses themselves, with their JSON names, are `keras_bn.defaults`'.
"""

from __future__ import annotations

import re
import sys

from keras_bn.defaults import (
    EXIT_BAD_INPUT,
    EXIT_FILE_SYSTEM,
    EXIT_INTERRUPTED,
    EXIT_PARITY,
    EXIT_STDOUT_CLOSED,
)

__all__ = [
    "CommandError",
    "details_for",
    "exit_code_for",
    "is_parity_failure",
    "interrupt_behind",
    "is_tensorflow_error",
    "message_for",
    "one_line",
]

# Library errors that mean "the input was wrong", reported without traceback.
# FileNotFoundError is a missing input (a model, a data file, an output
# directory); every other OSError is the file system refusing (EXIT_FILE_SYSTEM).
BAD_INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, NotImplementedError)


class CommandError(Exception):
    """A failure to report as one line with an exit status, no traceback.

    Args:
        message: The one-line message.
        exit_code: The exit status.
        details: Extra fields for the `--json` document (a parity report).
    """

    def __init__(
        self, message: str, exit_code: int = EXIT_BAD_INPUT, details: dict | None = None
    ):
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details or {}


def exit_code_for(error: BaseException) -> int | None:
    """The exit status for an expected failure; `None` for a bug (re-raised)."""
    if isinstance(error, CommandError):
        return error.exit_code
    interrupt = interrupt_behind(error)
    if interrupt is not None:
        signum = getattr(interrupt, "signum", None)  # cli.signals.Terminated
        return EXIT_INTERRUPTED if signum is None else 128 + signum
    if isinstance(error, BrokenPipeError):
        # Only stdout is a pipe the command writes to: the reader (`| head`)
        # has gone. Files are written before anything is printed.
        return EXIT_STDOUT_CLOSED
    if is_parity_failure(error):
        return EXIT_PARITY
    if isinstance(error, BAD_INPUT_ERRORS) or is_tensorflow_error(error):
        return EXIT_BAD_INPUT
    if isinstance(error, OSError):
        return EXIT_FILE_SYSTEM
    return None


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The interrupt that caused `error`, if any: itself, or one it wraps.

    A signal can arrive while a C extension initialises (onnxruntime's import
    turns the handler's exception into "ImportError: initialization failed")
    or inside code that re-raises as another type: it is still an interrupt.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# (module, class) of the library's parity failures. Looked up in `sys.modules`
# so that classifying an error never imports TensorFlow: if the module was not
# loaded, the error cannot be one of its classes.
PARITY_ERRORS = (
    ("keras_bn.export.report", "ParityError"),
    ("keras_bn.folding.verification", "FoldVerificationError"),
)


def is_parity_failure(error: BaseException) -> bool:
    """Whether `error` says a folded or exported model does not match Keras."""
    for module_name, class_name in PARITY_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


# TensorFlow's runtime errors (an op with no kernel for this CPU, a shape the
# graph refuses): one line naming what TensorFlow said, not a traceback.
TENSORFLOW_ERROR = ("tensorflow.python.framework.errors_impl", "OpError")

# What TensorFlow says when a CPU kernel lacks the NCHW layout, and the cure.
NCHW_MESSAGE = "only supports the NHWC tensor format"
NCHW_HINT = (
    "channels_first convolutions need oneDNN on the CPU: keras-bn sets "
    "TF_ENABLE_ONEDNN_OPTS=1 unless it is set; unset it or set it to 1"
)


def is_tensorflow_error(error: BaseException) -> bool:
    """Whether `error` is a `tf.errors.OpError` (TensorFlow is never imported)."""
    module_name, class_name = TENSORFLOW_ERROR
    module = sys.modules.get(module_name)
    return module is not None and isinstance(error, getattr(module, class_name))


def details_for(error: BaseException) -> dict:
    """Fields the `--json` error document carries besides status and message."""
    if isinstance(error, CommandError):
        return error.details
    report = getattr(error, "report", None)  # ParityError's ParityReport
    return {"parity": report, "passed": False} if report is not None else {}


def message_for(error: BaseException) -> str:
    """`error` as one line; an `OSError` as "<what>: <file>" in plain words."""
    interrupt = interrupt_behind(error)
    if interrupt is not None:
        return str(interrupt) if hasattr(interrupt, "signum") else "interrupted"
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename!r}"
    if is_tensorflow_error(error):
        return tensorflow_message(error)
    return one_line(str(error)) or type(error).__name__


def tensorflow_message(error: BaseException) -> str:
    """A TensorFlow `OpError` as one line: what TensorFlow said, and a cure if known.

    Keras wraps the op's message in "Exception encountered when calling
    Conv2D.call()." and a list of the call's arguments, with terminal
    colours and the op's `{{function_node …}}` name: kept are the layer's
    name and the op's own sentence.
    """
    text = ANSI_ESCAPE.sub("", getattr(error, "message", None) or str(error))
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = ""
    if lines and lines[0].startswith(KERAS_CALL_PREFIX):
        where = f"in {lines.pop(0).removeprefix(KERAS_CALL_PREFIX).rstrip('.')}: "
    said = lines[0] if lines else type(error).__name__
    message = f"TensorFlow cannot run the model ({type(error).__name__}) {where}{said}"
    if NCHW_MESSAGE in text:
        message += f" ({NCHW_HINT})"
    return one_line(message)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KERAS_CALL_PREFIX = "Exception encountered when calling "


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines too) as one space."""
    return re.sub(r"\s+", " ", message).strip()
