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
    EXIT_OK,
    EXIT_PARITY,
    EXIT_USAGE,
    STATUS,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FILE_SYSTEM",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARITY",
    "EXIT_USAGE",
    "STATUS",
    "CommandError",
    "details_for",
    "exit_code_for",
    "is_parity_failure",
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
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if is_parity_failure(error):
        return EXIT_PARITY
    if isinstance(error, BAD_INPUT_ERRORS):
        return EXIT_BAD_INPUT
    if isinstance(error, OSError):
        return EXIT_FILE_SYSTEM
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


def details_for(error: BaseException) -> dict:
    """Fields the `--json` error document carries besides status and message."""
    if isinstance(error, CommandError):
        return error.details
    report = getattr(error, "report", None)  # ParityError's ParityReport
    return {"parity": report, "passed": False} if report is not None else {}


def message_for(error: BaseException) -> str:
    """`error` as one line; an `OSError` as "<what>: <file>" in plain words."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename!r}"
    return one_line(str(error)) or type(error).__name__


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines too) as one space."""
    return re.sub(r"\s+", " ", message).strip()
