"""`data` as `model.fit` takes `x`, as an iterator of input batches."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

DEFAULT_BATCH_SIZE = 32  # as `model.fit`


def is_array(value: Any) -> bool:
    """Whether `value` is one array, as `fit` takes one.

    A NumPy array or a TensorFlow tensor, or any array-like NumPy can read
    (`__array__` and a `shape`: a JAX array, a pandas DataFrame), as Keras'
    array adapter reads them.
    """
    if isinstance(value, (np.ndarray, tf.Tensor)):
        return True
    return hasattr(value, "__array__") and hasattr(value, "shape")


def is_array_data(data: Any, num_inputs: int) -> bool:
    """Whether `data` is `x` as arrays (as `fit` takes it) rather than batches.

    A list or tuple of arrays is one array per input when the model has that
    many inputs, as in `fit`; otherwise it is a sequence of batches.
    """
    if is_array(data):
        return True
    if isinstance(data, dict):
        return all(is_array(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return len(data) == num_inputs and all(is_array(v) for v in data)
    return False


def num_inputs(model: keras.Model) -> int:
    """The number of inputs `model` takes (1 for a subclassed model)."""
    try:
        return len(model.inputs)
    except (AttributeError, ValueError):  # a subclassed model
        return 1


def open_batch_spec(array) -> tf.TensorSpec:
    """The `tf.TensorSpec` of `array` with the batch axis left open."""
    array = tf.convert_to_tensor(array)
    return tf.TensorSpec((None, *array.shape[1:]), array.dtype)


def relaxed_signature(signature: Any, x: Any) -> Any:
    """`signature` widened to take batch `x` too (None where sizes differ).

    A model with `Input((None, 3))` takes sequences of any length: one
    signature per batch shape would retrace for every length, a fixed one
    would refuse the second. Each axis whose size varies between batches is
    left open, once, and the pass is traced again.

    Args:
        signature: the structure of `tf.TensorSpec`s so far, or None.
        x: the next batch.

    Returns:
        `signature` itself when it takes `x`, a wider one otherwise.
    """
    specs = tf.nest.map_structure(open_batch_spec, x)
    if signature is None:
        return specs
    try:
        tf.nest.assert_same_structure(signature, specs)
    except (TypeError, ValueError):
        return specs  # another structure: a trace of its own
    pairs = list(zip(tf.nest.flatten(signature), tf.nest.flatten(specs), strict=True))
    if all(old.is_compatible_with(new) for old, new in pairs):
        return signature
    wider = [old.most_specific_common_supertype([new]) or new for old, new in pairs]
    return tf.nest.pack_sequence_as(signature, wider)


class Batches:
    """`data` as `model.fit` takes `x`, as an iterator of input batches.

    Arrays (one, or a list/dict of them) are cut into batches of
    `batch_size` (default 32, as `fit`); a `tf.data.Dataset`, a
    `keras.utils.PyDataset` or another iterable yields its own batches.
    Labels and sample weights in `(x, y[, w])` elements are dropped.

    Args:
        data: the data, as `model.fit` takes `x`.
        batch_size: the batch size for array data; must be None otherwise.
        steps: yield at most this many batches (all if None).
        num_inputs: how many inputs the model takes (see `is_array_data`).

    Raises:
        ValueError: arrays of unequal or zero length, or `batch_size` with
            data that batches itself.
        TypeError: `data` is neither arrays nor batches.
    """

    def __init__(
        self, data: Any, batch_size: int | None, steps: int | None, num_inputs: int
    ):
        self.steps = steps
        self.arrays = None
        self.source = None
        if is_array_data(data, num_inputs):
            self._init_arrays(data, batch_size)
            return
        if batch_size is not None:
            raise ValueError(
                "`batch_size` applies to array data only: a dataset or generator "
                f"yields batches already. Received: batch_size={batch_size} with "
                f"data of type {type(data).__name__}"
            )
        if not isinstance(data, (Iterable, keras.utils.PyDataset)):
            raise TypeError(
                "`data` must be a NumPy array (or a list/dict of them), a tf.data."
                "Dataset, a keras.utils.PyDataset or an iterable of batches. "
                f"Received: data of type {type(data).__name__}"
            )
        self.source = data

    def _init_arrays(self, data: Any, batch_size: int | None) -> None:
        self.arrays = tf.nest.map_structure(np.asarray, data)
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        lengths = [len(a) if a.ndim else 0 for a in tf.nest.flatten(self.arrays)]
        if len(set(lengths)) != 1 or 0 in lengths:
            raise ValueError(
                "`data` must hold at least one example, and every input array "
                f"the same number of them. Received arrays of lengths {sorted(lengths)}"
            )
        self.length = lengths[0]

    @property
    def total(self) -> int | None:
        """The number of batches, when it is known in advance."""
        known = None
        if self.arrays is not None:
            known = math.ceil(self.length / self.batch_size)
        elif isinstance(self.source, tf.data.Dataset):
            cardinality = int(self.source.cardinality())
            known = cardinality if cardinality >= 0 else None
        elif isinstance(self.source, keras.utils.PyDataset):
            known = len(self.source)
        if self.steps is None:
            return known
        return self.steps if known is None else min(known, self.steps)

    def __iter__(self) -> Iterator[Any]:
        total = self.total
        for index, element in enumerate(self._elements()):
            if total is not None and index >= total:
                return
            if self.arrays is not None:
                yield element  # `x` itself: a list of arrays is one per input
                continue
            x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
            yield x

    def _elements(self) -> Iterator[Any]:
        if self.arrays is not None:
            for start in range(0, self.length, self.batch_size):
                yield tf.nest.map_structure(
                    lambda a, s=start: a[s : s + self.batch_size], self.arrays
                )
        elif isinstance(self.source, keras.utils.PyDataset):
            for index in range(len(self.source)):
                yield self.source[index]
        else:
            yield from self.source
