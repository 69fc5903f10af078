"""Exit statuses and the one-line error every failure becomes."""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_PARITY = 3
EXIT_INTERRUPTED = 130

# Library errors that mean "the input was wrong", reported without traceback.
BAD_INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError, NotImplementedError)


class CommandError(Exception):
    """A failure to report as one line with an exit status, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(error: BaseException) -> int | None:
    """The exit status for an expected failure; `None` for a bug (re-raised)."""
    if isinstance(error, CommandError):
        return error.exit_code
    from keras_bn.export import ParityError
    from keras_bn.folding import FoldVerificationError

    if isinstance(error, ParityError | FoldVerificationError):
        return EXIT_PARITY
    if isinstance(error, BAD_INPUT_ERRORS):
        return EXIT_BAD_INPUT
    return None


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines too) as one space."""
    return re.sub(r"\s+", " ", message).strip()
