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
- `published_together`: several staged files published all or none (an
  export of several formats): each is staged and checked, and only when the
  last one is ready are they all moved into place; if one cannot be, the
  ones already moved are rolled back to the files they replaced;
- `save_model`: a `.keras` archive: stage, check the archive, publish;
- `created_directories`: missing output directories, removed again if the
  command that needed them fails.

`keras_bn.export.staging.publish_checked` adds the exporters' step: run the
staged file in its runtime and compare it with Keras before publishing.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "created_directories",
    "published_together",
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
    interrupt), removes the temporary file and leaves `path` as it was. Inside
    `published_together`, the checked file waits for the group's end. An
    `OSError` about the temporary file (or about no file) is made to name
    `path`, as given: the user never saw the temporary name.

    Args:
        path: The destination file; its directory must exist.

    Yields:
        The temporary path to write.

    Example:

    >>> with staged_file("/tmp/model.onnx") as tmp:  # doctest: +SKIP
    ...     write(tmp)
    ...     check(tmp)  # raising here leaves no file behind
    """
    given = os.fspath(path)
    path = os.path.abspath(given)
    directory, name = os.path.split(path)
    suffix = f".partial{os.path.splitext(name)[1]}"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
        os.close(fd)
        yield tmp
        # mkstemp creates 0600; give the file the mode any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        group = PUBLISHING_GROUP.get()
        if group is None:
            os.replace(tmp, path)
        else:
            group.append((tmp, path, given))
            tmp = None  # the group publishes or removes it
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        if isinstance(e, OSError) and (
            e.filename is None or is_staged_name(e.filename, directory, name)
        ):
            # Name the destination the user gave, not our temporary name (a
            # zip or HDF5 writer's ENOSPC carries no file name at all, and a
            # directory we may not write into fails at mkstemp's name).
            e.filename = given
        raise


def is_staged_name(filename: str | os.PathLike, directory: str, name: str) -> bool:
    """Whether `filename` is one of `staged_file`'s temporary names for `name`."""
    filename = os.path.abspath(os.fspath(filename))
    staged_prefix = os.path.join(directory, f".{name}.")
    return filename.startswith(staged_prefix) and ".partial" in filename


# The (staged, destination, as given) files of the outermost
# `published_together` block; `None` outside one.
PUBLISHING_GROUP: contextvars.ContextVar[list[tuple[str, str, str]] | None] = (
    contextvars.ContextVar("PUBLISHING_GROUP", default=None)
)


@contextlib.contextmanager
def published_together() -> Iterator[None]:
    """Publishes the files staged in the block all together, or none of them.

    A command that writes several files (`keras-bn export --format all`)
    must not leave some of them new and some old when one fails: every
    `staged_file` inside the block is written and checked as usual, but
    stays under its temporary name until the block ends. Then each
    destination's previous file, if any, is set aside under a hidden backup
    name and the staged file moved in; if a move fails, the files already
    moved are put back as they were. A failure or an interrupt inside the
    block removes every staged file and touches no destination. A block
    inside another joins it: its files wait for the outermost block.

    Raises:
        OSError: A file could not be moved into place (everything is rolled
            back; the error names the destination as given).

    Example:

    >>> with published_together():  # doctest: +SKIP
    ...     write_checked("out/model.tflite")
    ...     write_checked("out/model.onnx")  # failing here keeps both old files
    """
    if PUBLISHING_GROUP.get() is not None:
        yield  # the enclosing block publishes, or removes, these files too
        return
    staged: list[tuple[str, str, str]] = []
    token = PUBLISHING_GROUP.set(staged)
    try:
        yield
    except BaseException:
        remove_quietly(tmp for tmp, _, _ in staged)
        raise
    finally:
        PUBLISHING_GROUP.reset(token)
    publish_all(staged)


def publish_all(staged: list[tuple[str, str, str]]) -> None:
    """Moves every staged file into place; on a failure, restores every one."""
    done: list[tuple[str, str | None]] = []  # (destination, its backup)
    try:
        for tmp, path, given in staged:
            try:
                done.append((path, set_aside(path)))
                os.replace(tmp, path)
            except OSError as e:
                e.filename, e.filename2 = given, None
                raise
    except BaseException:
        for path, backup in reversed(done):
            if backup is None:
                remove_quietly([path])
            else:
                os.replace(backup, path)
        remove_quietly(tmp for tmp, _, _ in staged)
        raise
    remove_quietly(backup for _, backup in done if backup is not None)


def set_aside(path: str) -> str | None:
    """Moves `path`'s file to a free hidden name next to it; `None` if none."""
    if not os.path.lexists(path):
        return None
    directory, name = os.path.split(path)
    fd, backup = tempfile.mkstemp(prefix=f".{name}.", suffix=".backup", dir=directory)
    os.close(fd)
    try:
        os.replace(path, backup)
    except BaseException:
        remove_quietly([backup])
        raise
    return backup


def remove_quietly(paths) -> None:
    """Removes each file of `paths` that exists."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


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
    absolute = validate_destination(path, ".keras")
    with staged_file(path) as tmp:  # errors name `path` as the caller gave it
        model.save(tmp)
        verify_keras_archive(tmp)
    return Path(absolute)


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
