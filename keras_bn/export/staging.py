"""Write an exported file so that it is either complete and checked, or absent.

A converter that crashes half-way, a parity check that fails or a full disk must
never leave a truncated or unverified file where the user expects a model. The
file is therefore written to a hidden temporary name in the destination
directory (same file system, so the final `os.replace` is atomic on POSIX and
Windows), checked there, and only then renamed into place. Any exception on the
way removes the temporary file and leaves whatever was at the destination
before untouched. `publish_checked` is that sequence for an exported model:
stage, run in its runtime, compare with Keras, publish.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

from keras_bn.export import runtimes
from keras_bn.export.op_counts import op_histogram
from keras_bn.export.parity import compare
from keras_bn.export.report import ParityError, ParityReport


def validate_destination(path: str | os.PathLike, suffix: str) -> str:
    """Checks that `path` can receive an exported file and returns it as `str`.

    Args:
        path: Destination file path.
        suffix: Required extension, with the dot (`".tflite"`, `".onnx"`).

    Returns:
        The path as an absolute string.

    Raises:
        TypeError: If `path` is not a string or path-like.
        ValueError: If the extension is not `suffix` or `path` is a directory.
        FileNotFoundError: If the parent directory does not exist.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"`path` must be a string or os.PathLike. Received: path={path!r} "
            f"of type {type(path).__name__}"
        )
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(
            f"`path` must name a file, not a directory. Received: path={path!r}"
        )
    if not path.lower().endswith(suffix):
        raise ValueError(
            f"`path` must end with {suffix!r} so that tools recognise the format. "
            f"Received: path={path!r}"
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"The directory to export into does not exist: {parent!r}. "
            f"Create it first. Received: path={path!r}"
        )
    return path


@contextlib.contextmanager
def staged_file(path: str) -> Iterator[str]:
    """Yields a temporary path next to `path`; moves it to `path` on success.

    Example:

    >>> with staged_file("/tmp/model.onnx") as tmp:  # doctest: +SKIP
    ...     write(tmp)
    ...     check(tmp)  # raising here leaves no file behind
    """
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def publish_checked(
    path: str,
    write: Callable[[str], None],
    x: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
) -> tuple[ParityReport, dict[str, int]]:
    """Writes a file next to `path`, checks it, and only then moves it in place.

    Args:
        path: The destination.
        write: Called with the temporary path; writes the file there.
        x: The inputs to run.
        reference: The Keras model's outputs on `x`.
        tolerance: The scale-relative bound the file must meet.

    Returns:
        The `ParityReport` and the file's op histogram.

    Raises:
        ParityError: The file disagrees with the model; nothing is left behind.
    """
    with staged_file(path) as tmp:
        write(tmp)
        file_format = runtimes.detect_format(tmp)
        outputs = runtimes.run_file(tmp, x)
        parity = compare(path, file_format, x.shape, reference, outputs, tolerance)
        if not parity.passed:
            raise ParityError(parity, path)
        histogram = op_histogram(tmp)
    return parity, histogram
