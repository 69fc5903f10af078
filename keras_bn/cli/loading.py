"""A user's files, loaded or turned into a one-line `CommandError`."""

from __future__ import annotations

import zipfile
from pathlib import Path

from keras_bn.cli.errors import CommandError


def existing_file(path: str, what: str) -> Path:
    """`path` as a `Path`, or a `CommandError` if it is missing or a directory."""
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{what} not found: {path!r} does not exist")
    if not p.is_file():
        raise CommandError(f"{what} must be a file. Received: {path!r} (a directory)")
    return p


def load_model(path: str):
    """The Keras model in `path`, or a `CommandError` saying why not."""
    import keras

    import keras_bn.quantization  # noqa: F401  registers the QAT layers for loading

    p = existing_file(path, "Keras model")
    if p.suffix == ".keras" and not zipfile.is_zipfile(p):
        raise CommandError(
            f"{path!r} is not a Keras model: a .keras file is a zip archive and "
            "this one is not"
        )
    try:
        model = keras.saving.load_model(p, compile=False)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError, ...
        raise CommandError(f"cannot load {path!r} as a Keras model: {e}") from e
    if not isinstance(model, keras.Model):
        raise CommandError(
            f"{path!r} holds a {type(model).__name__} layer, not a Keras model"
        )
    return model
