"""The image data the demo trains on and the command line exports with.

One set of rules for a user's NumPy files, shared by `keras-bn demo --data`
and `keras-bn export/check --data`:

- an `.npz` holds `x_train`, `y_train`, `x_test`, `y_test` (the demo needs
  all four; export and check need `x_train` and/or `x_test`);
- images are `(N, H, W)` or `(N, H, W, C)`, of any real dtype, used as
  float32 as given by the demo; a missing channel axis of size 1 is added:
  by the demo to every `(N, H, W)` array, and by export, check, fold and
  recalibrate wherever the model takes exactly one more trailing axis of
  size 1 (`images_for_model`), so a file that trains the demo's model also
  exports, checks and recalibrates it;
- labels are non-negative integers `(N,)`;
- export and check also accept an `.npy` holding one image array;
- population statistics (`keras-bn recalibrate`, `--population-data`) are
  estimated on `x_train` of an `.npz`, or on the array of an `.npy`
  (`load_population_data`): Algorithm 2 averages over the *training*
  population, and `x_test` stays held out to measure the result. For a domain
  shift (AdaBN), put the unlabeled target-domain images in an `.npy`.

Without a file, the demo uses scikit-learn's bundled 8×8 digits (no download).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import Any

import numpy as np

SPLIT_SEED = 0
DEMO_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, C) float32 and integer labels, split for the demo."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def describe(self) -> dict:
        """Name, split sizes, input shape and number of classes (JSON-ready)."""
        return {
            "name": self.name,
            "train": len(self.y_train),
            "test": len(self.y_test),
            "input_shape": list(self.x_train.shape[1:]),
            "classes": self.num_classes,
        }


#: What NumPy raises for bytes that are not a NumPy file: a bad header or
#: pickled objects, an empty or truncated file, a corrupt `.npz` archive or
#: member.
NOT_NUMPY_ERRORS = (ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def read_numpy_file(path: str | os.PathLike) -> np.ndarray | dict[str, np.ndarray]:
    """The array of an `.npy` or the arrays of an `.npz`, by name.

    Raises:
        FileNotFoundError: `path` does not exist.
        PermissionError: `path` may not be read (the error names it).
        ValueError: `path` is a directory, or not a NumPy file (empty,
            truncated, corrupt, or holding pickled objects).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path!r} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"data file must be a file. Received: {path!r} (a directory)")
    # Opened here, so that a file that cannot be read is an OSError naming
    # it; only what NumPy makes of the bytes is a ValueError.
    with open(path, "rb") as file:
        try:
            loaded = np.load(file, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded
            with loaded:  # an .npz reads each array as it is asked for
                return {name: loaded[name] for name in loaded.files}
        except NOT_NUMPY_ERRORS as e:
            raise ValueError(f"{path!r} is not a NumPy .npy or .npz file: {e}") from e


def add_channel_axis(x: np.ndarray) -> np.ndarray:
    """`x` with a trailing channel axis of size 1: `(N, H, W)` → `(N, H, W, 1)`."""
    return x[..., None]


def images_for_model(x: np.ndarray | None, model: Any) -> np.ndarray | None:
    """`x` as `model` takes it: a missing channel axis of size 1 added.

    The demo trains on `(N, H, W)` images by adding a channel axis of size 1;
    the same file must serve the model it produced. So when the model takes
    exactly one more trailing axis than `x` has, of size 1, and every other
    size agrees (None in the model's input shape agrees with any), `x` gets
    that axis. Anything else comes back unchanged, for the consumer to check.

    Args:
        x: an array of examples, or None (returned as is).
        model: a Keras model (its `input_shape` is read); a model with
            several inputs, or whose input shape is unknown, leaves `x`
            unchanged.

    Returns:
        `x`, with a trailing axis of size 1 where the rule applies.

    Example:

    >>> images_for_model(x_train, model).shape  # doctest: +SKIP
    (360, 8, 8, 1)
    """
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):  # a subclassed model
        return x
    if x is None or not isinstance(shape, tuple):
        return x  # several inputs: a list of shapes
    if len(shape) != x.ndim + 1 or shape[-1] != 1:
        return x
    if all(d is None or d == n for d, n in zip(shape[1:-1], x.shape[1:], strict=True)):
        return add_channel_axis(x)
    return x


def as_images(x: np.ndarray, name: str, path: str) -> np.ndarray:
    """`x` as float32 images `(N, H, W, C)`, or a `ValueError` naming `name`."""
    if x.ndim == 3:
        x = add_channel_axis(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.number) or len(x) == 0:
        raise ValueError(
            f"`{name}` must be a non-empty numeric array of images "
            f"(N, H, W) or (N, H, W, C). Received: shape {x.shape}, "
            f"dtype {x.dtype} in {path!r}"
        )
    return x.astype(np.float32)


def as_labels(y: np.ndarray, name: str, path: str, length: int) -> np.ndarray:
    """`y` as int64 class labels of `length`, or a `ValueError` naming `name`."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(
            f"`{name}` must be non-negative integer class labels of shape "
            f"(N,). Received: shape {y.shape}, dtype {y.dtype} in {path!r}"
        )
    if len(y) != length:
        raise ValueError(
            f"`x_{name[2:]}` and `{name}` must have the same length. "
            f"Received: {length} images and {len(y)} labels in {path!r}"
        )
    return y.astype(np.int64)


def digits() -> Dataset:
    """scikit-learn's 8×8 digits in [0, 1], split 80/20 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.2, random_state=SPLIT_SEED, stratify=data.target
    )
    return Dataset("digits", x_train, y_train, x_test, y_test)


def load_dataset(path: str | os.PathLike | None = None) -> Dataset:
    """The digits split, or the four arrays of a user's `.npz` (module docstring).

    Args:
        path: `None` for the digits, or an `.npz` with `x_train`, `y_train`,
            `x_test` and `y_test`.

    Returns:
        A `Dataset`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not an `.npz` archive, misses an array, or an
            array has the wrong rank, dtype or length.
    """
    if path is None:
        return digits()
    path = os.fspath(path)
    arrays = read_numpy_file(path)
    if not isinstance(arrays, dict):
        raise ValueError(
            "The data file must be a NumPy .npz archive with x_train, y_train, "
            f"x_test, y_test; it holds a single array. Received: {path!r}"
        )
    missing = [k for k in DEMO_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(
            f"The data file must hold x_train, y_train, x_test and y_test. "
            f"Missing: {missing}. Received arrays: {sorted(arrays)} in {path!r}"
        )
    split = {}
    for part in ("train", "test"):
        x = as_images(arrays[f"x_{part}"], f"x_{part}", path)
        split[f"x_{part}"] = x
        split[f"y_{part}"] = as_labels(arrays[f"y_{part}"], f"y_{part}", path, len(x))
    if split["x_train"].shape[1:] != split["x_test"].shape[1:]:
        raise ValueError(
            "`x_train` and `x_test` must have the same image shape. Received: "
            f"{split['x_train'].shape[1:]} and {split['x_test'].shape[1:]} in {path!r}"
        )
    return Dataset(path, **split)


def load_images(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`(calibration, evaluation)` images from an `.npz` or `.npy` file.

    An `.npz` gives `x_train` and `x_test` (either may be missing, the other
    is used for both); an `.npy` gives one array for both. Arrays are returned
    as stored: the exporters check their shape against the model.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a NumPy file or holds neither array.
    """
    path = os.fspath(path)
    loaded = read_numpy_file(path)
    if isinstance(loaded, np.ndarray):
        return loaded, loaded
    arrays = {k: loaded[k] for k in ("x_train", "x_test") if k in loaded}
    if not arrays:
        raise ValueError(
            f"{path!r} must hold an array named x_train or x_test. "
            f"Received arrays: {sorted(loaded)}"
        )
    train = arrays.get("x_train", arrays.get("x_test"))
    return train, arrays.get("x_test", train)


POPULATION_ARRAY = "x_train"


def load_population_data(path: str | os.PathLike) -> np.ndarray:
    """The inputs on which population statistics are estimated (module docstring).

    `x_train` of an `.npz` (an archive without it is an error rather than a
    silent fall-back to `x_test`, the held-out set), or the array of an `.npy`.
    The array is returned as stored: `keras_bn.population_statistics` checks
    its shape against the model.

    Args:
        path: An `.npz` with `x_train`, or an `.npy`.

    Returns:
        The array.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: The file is not a NumPy file, has no `x_train`, or the
            array is empty or not numeric.

    Example:

    >>> x = load_population_data("digits.npz")  # doctest: +SKIP
    >>> keras_bn.population_statistics(model, x)  # doctest: +SKIP
    """
    path = os.fspath(path)
    loaded = read_numpy_file(path)
    if isinstance(loaded, dict):
        if POPULATION_ARRAY not in loaded:
            raise ValueError(
                f"Population statistics are estimated on the training inputs, "
                f"`{POPULATION_ARRAY}` of an .npz (or the array of an .npy); "
                f"{path!r} has no `{POPULATION_ARRAY}`. Received arrays: "
                f"{sorted(loaded)}"
            )
        loaded = loaded[POPULATION_ARRAY]
    if (
        loaded.size == 0
        or loaded.ndim == 0
        or not np.issubdtype(loaded.dtype, np.number)
    ):
        raise ValueError(
            "The population data must be a non-empty numeric array. Received: "
            f"shape {loaded.shape}, dtype {loaded.dtype} in {path!r}"
        )
    return loaded


def load_labeled(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """`(x_train, y_train, (x_test, y_test) or None)` of an `.npz` for training.

    The training arrays are required; the test pair is optional (both or
    neither), for validation.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: not an `.npz`, `x_train`/`y_train` missing, or an array
            with the wrong rank, dtype or length.
    """
    path = os.fspath(path)
    arrays = read_numpy_file(path)
    if not isinstance(arrays, dict) or not {"x_train", "y_train"} <= set(arrays):
        held = sorted(arrays) if isinstance(arrays, dict) else "one array (.npy)"
        raise ValueError(
            "The data file must be an .npz with x_train and y_train (x_test and "
            f"y_test optional). Received: {held} in {path!r}"
        )
    x = as_images(arrays["x_train"], "x_train", path)
    y = as_labels(arrays["y_train"], "y_train", path, len(x))
    if "x_test" in arrays and "y_test" in arrays:
        x_test = as_images(arrays["x_test"], "x_test", path)
        return x, y, (x_test, as_labels(arrays["y_test"], "y_test", path, len(x_test)))
    return x, y, None
