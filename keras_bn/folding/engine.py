"""The rebuild engine: replay a Functional graph, each call by its plan.

The engine knows nothing about Batch Normalization. It makes fresh inputs
like the original ones, walks the calls in graph order and hands each to its
plan (`keras_bn.folding.plans.Plan.replay`), which adds its new layer (or
nothing) and returns the new output tensors. The new model has the original's
name and input and output structure; a Sequential model stays Sequential.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import tree

from keras_bn.folding.plans import Plan
from keras_bn.keras_adapter import (
    LayerCall,
    input_like,
    input_structure,
    output_structure,
)

__all__ = ["rebuild"]


def rebuild(
    model: keras.Model, graph: keras.Model, steps: Sequence[tuple[LayerCall, Plan]]
) -> keras.Model:
    """A new model computing `graph` with every call replaced by its plan.

    Args:
        model: the model being rebuilt (its name and kind are kept).
        graph: its Functional graph (`keras_adapter.functional_graph`).
        steps: every call of `graph` in graph order, with its plan.

    Returns:
        A new `keras.Model`, or a `keras.Sequential` if `model` is one.
    """
    tensors = {id(x): input_like(x) for x in graph.inputs}
    new_layers: dict[int, object] = {}
    for call, plan in steps:
        outputs = plan.replay(call, tensors, new_layers)
        for x, y in zip(call.outputs, outputs, strict=True):
            tensors[id(x)] = y

    def new(x):
        return tensors[id(x)]

    if isinstance(model, keras.Sequential):
        (x,) = graph.inputs
        # One new layer per original layer, in order; folded BNs made none.
        return keras.Sequential([new(x), *new_layers.values()], name=model.name)
    return keras.Model(
        inputs=tree.map_structure(new, input_structure(graph)),
        outputs=tree.map_structure(new, output_structure(graph)),
        name=model.name,
    )
