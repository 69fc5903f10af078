"""The one place keras_bn reads Keras' private model structure.

Keras 3 has no public way to list every layer of a model recursively (nested
models, sublayers of subclassed layers, a layer shared between call sites
counted once), to read a Functional graph's nodes, or to read the batch
moments a BatchNormalization layer computes inside `call`. Everything of that
kind goes through this module so that a change in Keras breaks one file, not
five.

Checked against Keras 3.15 (TensorFlow 2.21).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

#: The Keras release whose private structure this module was checked against.
#: After a Keras upgrade, run tests/test_keras_adapter.py and update it.
CHECKED_AGAINST_KERAS = "3.15"


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside `model`, depth first, each distinct layer once.

    Nested models and the sublayers that subclassed layers track are included;
    `model` itself is not. A layer shared between several call sites (or
    several parent models) is yielded once.

    Args:
        model: A `keras.Model` or any `keras.layers.Layer`.

    Returns:
        An iterator over the layers, parents before their sublayers.

    Example:

    >>> bns = [l for l in iter_layers(model) if is_batchnorm(l)]  # doctest: +SKIP
    """
    # `_flatten_layers` deduplicates by identity and descends into every
    # tracked sublayer (Keras 3.15: `keras.src.layers.layer.Layer`).
    yield from model._flatten_layers(include_self=False, recursive=True)


def is_batchnorm(layer: keras.layers.Layer) -> bool:
    """True for `keras.layers.BatchNormalization` and its subclasses.

    That includes `keras_bn.BatchNormalization`.
    """
    return isinstance(layer, keras.layers.BatchNormalization)


def batchnorm_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every BatchNormalization layer inside `model` (see `iter_layers`)."""
    return [layer for layer in iter_layers(model) if is_batchnorm(layer)]


# -- Functional graphs -----------------------------------------------------------
#
# Keras records a Functional model's graph in private attributes
# (`_nodes_by_depth`, `_inputs_struct`, `_outputs_struct`, a Sequential's
# `_functional`, a tensor's `_keras_history`) and its `keras.src.ops.node.Node`
# objects, whose attributes are public names of a private class. Everything
# below reads them; checked against Keras 3.15 (TensorFlow 2.21).


def functional_graph(model: keras.layers.Layer) -> keras.Model | None:
    """The Functional graph Keras recorded for `model`, or `None`.

    A Functional model is its own graph; a built Sequential model keeps one
    (Keras 3.15: `Sequential._functional`, `None` until it is built).
    Subclassed models, unbuilt Sequential models and plain layers have none.

    Args:
        model: Any Keras layer or model.

    Returns:
        The `keras.Model` whose nodes describe `model`'s computation, or
        `None` when Keras recorded no graph.
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and getattr(model, "_nodes_by_depth", None):
        return model
    return None


def is_subclassed_model(model: keras.Model) -> bool:
    """True for a model that is neither Functional nor Sequential.

    Keras records no layer graph for it (Keras 3.15: no `_nodes_by_depth`).
    """
    if isinstance(model, keras.Sequential):
        return False
    return getattr(model, "_nodes_by_depth", None) is None


class LayerCall:
    """One call of a layer (or a `keras.ops` operation) in a Functional graph.

    A read-only view of a Keras `Node` (`keras.src.ops.node.Node` in Keras
    3.15) holding exactly what folding needs, so no other module depends on
    the shape of that private class.

    Attributes:
        layer: The called layer or operation.
        args: The positional arguments of the call, tensors included.
        kwargs: The keyword arguments of the call (`training=...`, ...).
        input_tensors: Every tensor the call reads, flattened.
        outputs: Every tensor the call writes, flattened.
    """

    __slots__ = ("_node", "args", "input_tensors", "kwargs", "layer", "outputs")

    def __init__(self, node):
        self._node = node
        self.layer = node.operation
        self.args = node.arguments.args
        self.kwargs = node.arguments.kwargs
        self.input_tensors = node.input_tensors
        self.outputs = node.outputs

    def replay(self, layer, tensors: dict[int, object]) -> list:
        """Calls `layer` with this call's arguments mapped through `tensors`.

        Args:
            layer: The layer to call in place of `self.layer`.
            tensors: `id(original tensor) -> new tensor` for every input.

        Returns:
            The outputs of the new call, flattened like `self.outputs`.
        """
        args, kwargs = self._node.arguments.fill_in(tensors)
        return keras.tree.flatten(layer(*args, **kwargs))


def layer_calls(graph: keras.Model) -> list[LayerCall]:
    """Every layer call of a Functional graph, inputs first, in graph order.

    Args:
        graph: A model returned by `functional_graph`.

    Returns:
        One `LayerCall` per call, each after the calls producing its inputs;
        `keras.Input` placeholders are left out.
    """
    by_depth = graph._nodes_by_depth
    return [
        LayerCall(node)
        for depth in sorted(by_depth, reverse=True)
        for node in by_depth[depth]
        if not node.is_input
    ]


def input_structure(model: keras.Model):
    """`model`'s input tensors in the structure it is called with.

    One tensor, a list or a dict, as given to `keras.Model(inputs=...)`
    (Keras 3.15: `Functional._inputs_struct`); a Sequential model takes its
    one input.
    """
    structure = getattr(model, "_inputs_struct", None)
    if structure is None:
        structure = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return structure


def output_structure(graph: keras.Model):
    """A Functional graph's outputs in their structure (Keras 3.15: `_outputs_struct`)."""
    return graph._outputs_struct


def input_like(tensor) -> keras.KerasTensor:
    """A fresh `keras.Input` with `tensor`'s shape, dtype, sparsity and name.

    Args:
        tensor: An input tensor of a Functional graph.

    Returns:
        A new symbolic input; the name is that of `tensor`'s `InputLayer`
        (Keras 3.15: `KerasTensor._keras_history`), so the rebuilt model
        takes the same input names, dict keys included.
    """
    return keras.Input(
        batch_shape=tensor.shape,
        dtype=tensor.dtype,
        sparse=tensor.sparse,
        ragged=tensor.ragged,
        name=tensor._keras_history.operation.name,
    )


def is_graph_model(layer: keras.layers.Layer) -> bool:
    """True for a Sequential or Functional model: one whose graph Keras can rebuild.

    `keras.models.clone_model` rebuilds exactly these (and recurses into
    them); a subclassed model or layer is opaque to it.
    """
    return isinstance(layer, keras.Model) and not is_subclassed_model(layer)


# -- BatchNormalization's batch moments ---------------------------------------
#
# Keras has no public way to read the mean and variance a BatchNormalization
# layer computes in training mode. `population_statistics` relies on three
# behaviours of `keras.layers.BatchNormalization` (Keras 3.15,
# `keras.src.layers.normalization.batch_normalization`), pinned by
# tests/test_keras_adapter.py:
#
# 1. `call(training=True)` with `trainable=True` updates the moving statistics
#    as `moving = moving·momentum + batch·(1 − momentum)`, so `momentum=0` on a
#    zeroed moving mean and variance leaves exactly the batch mean and
#    (biased) batch variance in them. `trainable=False` would make it run in
#    inference mode instead.
# 2. Masked calls compute those moments over the unmasked values only.
# 3. `Layer.__call__` runs `self.call`, so a `call` set on the instance
#    replaces the class's for that layer alone; deleting it restores it.

#: The attributes under which a training-mode call writes the plain batch
#: moments into the moving statistics (`renorm` off: Batch Renormalization's
#: r/d corrections are not part of the plain batch moments).
BATCH_MOMENTS_SETTINGS = {"momentum": 0.0, "trainable": True, "renorm": False}


@contextlib.contextmanager
def batch_moments_mode(
    layer: keras.layers.Layer, settings: dict[str, Any] | None = None
) -> Iterator[None]:
    """Sets `layer` up so that a training-mode call writes its batch moments.

    Sets `BATCH_MOMENTS_SETTINGS` (and `settings`, a layer's own extras) as
    attributes of `layer`; on exit, whatever happened, restores every
    attribute and every variable's value and `trainable` flag.

    Args:
        layer: A built BatchNormalization layer.
        settings: Further attributes to set for the duration.

    Example:

    >>> with batch_moments_mode(layer):  # doctest: +SKIP
    ...     outputs, mean, variance = call_for_batch_moments(layer, x)
    """
    settings = {**BATCH_MOMENTS_SETTINGS, **(settings or {})}
    attributes = {name: getattr(layer, name) for name in settings}
    variables = [(v, v.numpy(), v.trainable) for v in layer.variables]
    try:
        for name, value in settings.items():
            setattr(layer, name, value)
        yield
    finally:
        for name, value in attributes.items():
            setattr(layer, name, value)
        for variable, value, trainable in variables:
            variable.assign(value)
            variable.trainable = trainable


@contextlib.contextmanager
def call_replaced(layer: keras.layers.Layer, call: Callable) -> Iterator[None]:
    """Makes `layer(...)` run `call` instead of the class's `call`, until exit.

    Keras' `Layer.__call__` (its input checks, masks, name scopes) still runs
    around `call`; only `layer` is affected, not other instances.

    Args:
        layer: Any Keras layer.
        call: Takes the arguments of the layer's `call`.
    """
    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        if "call" in vars(layer):
            object.__delattr__(layer, "call")


def call_for_batch_moments(
    layer: keras.layers.Layer, inputs, mask=None
) -> tuple[Any, tf.Tensor, tf.Tensor]:
    """Runs the class's `call` in training mode and returns its batch moments.

    Only inside `batch_moments_mode`: the moving statistics are zeroed, the
    call writes the batch moments into them, and they are read back.

    Args:
        layer: A BatchNormalization layer in `batch_moments_mode`.
        inputs: The layer's input.
        mask: Its mask, or None.

    Returns:
        `(outputs, mean, variance)`: the layer's training-mode outputs and the
        moments it wrote (per channel; whatever the layer puts into its moving
        variance, e.g. keras_bn's unbiased variance).
    """
    # A zero start makes `0·momentum-term + batch` exact, and keeps a NaN from
    # an earlier (skipped) batch out of this one.
    layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
    layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
    outputs = type(layer).call(layer, inputs, training=True, mask=mask)
    mean = tf.identity(layer.moving_mean.value)
    variance = tf.identity(layer.moving_variance.value)
    return outputs, mean, variance
