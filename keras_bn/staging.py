"""Write every file keras_bn writes so that it is either complete and checked, or absent.

A converter that crashes half-way, a check that fails or a full disk must
never leave a truncated or unverified file where the user expects a model. The
file is therefore written to a hidden temporary name in the destination
directory (same file system, so the final `os.replace` is atomic on POSIX and
Windows), checked there, and only then renamed into place. Any exception on the
way removes the temporary file and leaves whatever was at the destination
before untouched. This module is the one home of that sequence, below every
package that writes (it imports neither TensorFlow nor the exporters):

- `staged_file`: the context manager every writer uses;
- `save_model`: a `.keras` archive: stage, check the archive, publish;
- `created_directories`: missing output directories, removed again if the
  command that needed them fails.

`keras_bn.export.staging.publish_checked` adds the exporters' step: run the
staged file in its runtime and compare it with Keras before publishing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "created_directories",
    "save_model",
    "staged_file",
    "validate_destination",
    "verify_keras_archive",
]


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
def staged_file(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to `path`; moves it to `path` on success.

    The temporary name is hidden (`.<name>.<random>.partial<suffix>`) and keeps
    the destination's extension, because some writers insist on it (Keras'
    `Model.save` wants `.keras`). Verify the file inside the `with` block:
    raising there, or any failure of the write itself (a full disk, an
    interrupt), removes the temporary file and leaves `path` as it was.

    Args:
        path: The destination file; its directory must exist.

    Yields:
        The temporary path to write.

    Example:

    >>> with staged_file("/tmp/model.onnx") as tmp:  # doctest: +SKIP
    ...     write(tmp)
    ...     check(tmp)  # raising here leaves no file behind
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    suffix = f".partial{os.path.splitext(name)[1]}"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            # Name the destination the user gave, not our temporary name (a
            # zip or HDF5 writer's ENOSPC carries no file name at all).
            e.filename = path
        raise


def verify_keras_archive(path: str | os.PathLike) -> None:
    """Checks that `path` is a complete `.keras` archive (zip, CRCs, config).

    Keras writes a `.keras` file as a zip holding `config.json` and the
    weights; a write cut short leaves a file without the zip's central
    directory, or with members whose CRC does not match.

    Raises:
        ValueError: If the archive is truncated, corrupt or has no config.
    """
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"The saved model {path!r} is not a complete zip: {e}") from e
    if bad is not None or "config.json" not in names:
        raise ValueError(
            f"The saved model {path!r} is corrupt: "
            + (f"member {bad!r} fails its CRC" if bad else "it has no config.json")
        )


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Saves a Keras model to a `.keras` file through a staged, verified write.

    `model.save(path)` writes in place: a full disk or an interrupt leaves a
    truncated archive where a valid model was. Here the archive is written
    next to `path`, checked (`verify_keras_archive`) and only then moved in.

    Args:
        model: The Keras model.
        path: The destination, ending in `.keras`, in an existing directory.

    Returns:
        `path` as an absolute `Path`.

    Raises:
        ValueError: The path does not end in `.keras` or is a directory, or
            the written archive is corrupt (the old file is kept).
        FileNotFoundError: The directory does not exist.
        OSError: The write failed (the old file is kept, nothing is left).

    Example:

    >>> save_model(model, "out/model_folded.keras")  # doctest: +SKIP
    """
    path = validate_destination(path, ".keras")
    with staged_file(path) as tmp:
        model.save(tmp)
        verify_keras_archive(tmp)
    return Path(path)


@contextlib.contextmanager
def created_directories(path: str | os.PathLike) -> Iterator[Path]:
    """Creates the missing directories of `path`; removes them if the block fails.

    A command that fails must not leave behind the directories it made for
    its output (`keras-bn export -o a/b/c` failing leaves no `a/`).
    Directories that existed before are never touched; the ones created here
    are removed with what the block wrote into them, since nothing else
    could have been in them.

    Args:
        path: The directory to create (with its parents).

    Yields:
        `path` as a `Path`.

    Raises:
        FileExistsError: A component of `path` exists and is not a directory.
    """
    path = Path(path)
    first_missing = None
    for candidate in [path, *path.parents]:
        if candidate.exists():
            break
        first_missing = candidate
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if first_missing is not None:
            shutil.rmtree(first_missing, ignore_errors=True)
        raise
