"""A user's files, loaded or turned into a one-line `CommandError`."""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from pathlib import Path

from keras_bn.cli.errors import CommandError


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a `Path`, once it is known to be a file this process can read.

    Every input file of every command comes through here before anything is
    loaded, so that a file that exists but cannot be read is reported as what
    it is (a `PermissionError`: exit status 4, naming `path` as given), not
    as a file of the wrong kind by the loader that failed to read it.

    Raises:
        CommandError: `path` is missing or a directory.
        OSError: `path` cannot be opened for reading.
    """
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{what} not found: {str(path)!r} does not exist")
    if not p.is_file():
        raise CommandError(
            f"{what} must be a file. Received: {str(path)!r} (a directory)"
        )
    open(path, "rb").close()  # raises PermissionError naming `path` if unreadable
    return p


def check_input_files(args: argparse.Namespace) -> None:
    """Checks every input file of a command before the command starts.

    Each command declares its inputs with `keras_bn.cli.arguments.add_input_file`
    (the argparse destination and what the file is); a missing, unreadable
    or directory input fails here, before any output is written or
    TensorFlow is loaded.
    """
    for dest, what in args.input_files.items():
        value = getattr(args, dest, None)
        if value is not None:
            existing_file(value, what)


def load_model(path: str, *, training_state: bool = False):
    """The Keras model in `path`, or a `CommandError` saying why not.

    Args:
        path: The user's file.
        training_state: Also restore what the file holds for training (the
            compile configuration and the optimizer's variables), for a
            command that writes the model back (`recalibrate`): saving then
            keeps them. Commands that make a new model (`fold`) or only read
            one load the model alone.

    Raises:
        CommandError: `path` is not a Keras model, or its training state
            cannot be restored (writing the model back would drop it).
    """
    import keras

    import keras_bn.quantization  # noqa: F401  registers the QAT layers for loading

    p = existing_file(path, "Keras model")
    if p.suffix == ".keras" and not zipfile.is_zipfile(p):
        raise CommandError(
            f"{path!r} is not a Keras model: a .keras file is a zip archive and "
            "this one is not"
        )
    try:
        model = keras.saving.load_model(p, compile=training_state)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError, ...
        raise CommandError(f"cannot load {path!r} as a Keras model: {e}") from e
    if not isinstance(model, keras.Model):
        raise CommandError(
            f"{path!r} holds a {type(model).__name__} layer, not a Keras model"
        )
    if training_state and saved_compile_config(p) and not model.compiled:
        raise CommandError(
            f"{path!r} holds a training configuration (optimizer, loss) that "
            "Keras could not restore here; writing the model back would drop it "
            "and the optimizer's state"
        )
    return model


def saved_compile_config(path: Path) -> dict | None:
    """The compile configuration a `.keras` archive holds, if any."""
    if path.suffix != ".keras":
        return None
    with zipfile.ZipFile(path) as archive, archive.open("config.json") as f:
        return json.load(f).get("compile_config") or None
