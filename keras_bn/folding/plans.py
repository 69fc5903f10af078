"""Plans: what the folded graph does with each layer call, and how to build it.

Planning (`keras_bn.folding.graph`) gives every call of the original graph
one plan; the engine (`keras_bn.folding.engine`) replays the graph and lets
each plan make its part of the new one. A plan builds its own layer and
weights from the original layer it holds, so adding a kind of rewrite means
adding a class here, not a branch in the engine.

For a Batch Normalization call the plan is one of

- `FoldIntoNeighbour`: the BN vanishes; its linear neighbour's plan,
  `AbsorbBatchNorms`, rebuilds that layer with folded weights;
- `ReplaceByAffine`: a `ChannelAffine` computing the BN's inference map;
- `KeepBatchNorm`: a copy of the BN (it was called with `training=True`).

Every other call is copied (`CopyLayer`), shares a stateless operation
(`ShareOperation`) or uses an already folded nested model (`UseModel`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_bn.folding import weights
from keras_bn.folding.affine import ChannelAffine
from keras_bn.folding.report import FoldEntry
from keras_bn.folding.rules import LinearRule
from keras_bn.keras_adapter import LayerCall
from keras_bn.keras_objects import rebuild_layer

__all__ = [
    "AbsorbBatchNorms",
    "CopyLayer",
    "FoldIntoNeighbour",
    "KeepBatchNorm",
    "Plan",
    "ReplaceByAffine",
    "ShareOperation",
    "UseModel",
    "batchnorm_scale_shift_of",
]

#: `rule.fold_after` or `rule.fold_before`: `(layer, params, scale, shift) -> params`.
FoldFormula = Callable[..., dict]


def batchnorm_scale_shift_of(bn: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    """`(scale, shift)` in float64 of a built BN layer's inference form."""

    def value(variable):
        return np.asarray(variable.numpy(), dtype=np.float64)

    return weights.batchnorm_scale_shift(
        value(bn.moving_mean),
        value(bn.moving_variance),
        bn.epsilon,
        gamma=value(bn.gamma) if bn.scale else None,
        beta=value(bn.beta) if bn.center else None,
    )


def describe(layer) -> str:
    """`'name' (ClassName)`, how errors and reasons name a layer."""
    return f"'{layer.name}' ({type(layer).__name__})"


class Plan(abc.ABC):
    """What the folded graph does with one call of one original layer.

    The engine calls `replay` once per call. The default makes the new layer
    on the layer's first call (`build`), calls it, then gives it its weights
    (`load_weights`): most layers only create their variables when called.
    Later calls of a shared layer reuse the new layer.
    """

    def __init__(self, layer):
        self.layer = layer

    @abc.abstractmethod
    def build(self):
        """The new layer (or operation) standing for `self.layer`."""

    def load_weights(self, new_layer) -> None:
        """Gives the freshly called `new_layer` its weights; none by default."""
        # A shared operation or an already folded model brings its own.
        return None

    def call_layer(self, new_layer, call: LayerCall, tensors: dict) -> list:
        """Calls `new_layer` as `call` called the original layer."""
        return call.replay(new_layer, tensors)

    def replay(self, call: LayerCall, tensors: dict, new_layers: dict) -> list:
        """Adds `call` to the new graph; returns its new output tensors.

        Args:
            call: The original call.
            tensors: `id(original tensor) -> new tensor`, inputs included.
            new_layers: `id(original layer) -> new layer`, shared by every
                call of the graph so that a shared layer stays shared.
        """
        key = id(call.layer)
        first_call = key not in new_layers
        if first_call:
            new_layers[key] = self.build()
        outputs = self.call_layer(new_layers[key], call, tensors)
        if first_call:
            self.load_weights(new_layers[key])
        return outputs


class CopyLayer(Plan):
    """A copy of the layer: same class, config and weights."""

    def build(self):
        return rebuild_layer(self.layer)

    def load_weights(self, new_layer) -> None:
        new_layer.set_weights(self.layer.get_weights())


class ShareOperation(Plan):
    """A stateless operation (a `keras.ops` call in the graph), shared as is.

    It holds no weights; Keras' own `clone_model` shares such operations too.
    """

    def build(self):
        return self.layer


class UseModel(Plan):
    """A nested model, replaced by its folded copy (made once per model)."""

    def __init__(self, layer, folded: keras.Model):
        super().__init__(layer)
        self.folded = folded

    def build(self):
        return self.folded


class KeepBatchNorm(CopyLayer):
    """A BN that stays: a copy of it, reported as not folded."""

    def __init__(self, layer, path: str, reason: str):
        super().__init__(layer)
        self.entry = FoldEntry(path, False, reason=reason)


class ReplaceByAffine(Plan):
    """A BN that cannot be folded becomes a `ChannelAffine` of its inference map."""

    def __init__(self, layer, path: str, reason: str):
        super().__init__(layer)
        self.entry = FoldEntry(path, False, reason=reason)

    def build(self):
        bn = self.layer
        return ChannelAffine(axis=bn.axis, name=bn.name, dtype=bn.dtype_policy)

    def call_layer(self, new_layer, call, tensors):
        # Only the tensor: `training` and other BN arguments mean nothing to
        # the affine map, and a mask propagates by itself.
        return [new_layer(tensors[id(call.args[0])])]

    def load_weights(self, new_layer) -> None:
        scale, shift = batchnorm_scale_shift_of(self.layer)
        dtype = new_layer.scale.dtype
        new_layer.set_weights([scale.astype(dtype), shift.astype(dtype)])


class FoldIntoNeighbour(Plan):
    """A BN folded into the linear layer next to it: its call disappears.

    Attributes:
        neighbour: the linear layer's call.
        formula: the rule's `fold_after` (the BN follows the neighbour) or
            `fold_before` (it precedes it).
        entry: the report line.
    """

    def __init__(
        self,
        layer,
        path: str,
        *,
        direction: str,
        neighbour: LayerCall,
        into: str,
        formula: FoldFormula,
    ):
        super().__init__(layer)
        self.neighbour = neighbour
        self.formula = formula
        self.entry = FoldEntry(path, True, into=into, direction=direction)

    def build(self):
        return None  # never called: `replay` adds no layer

    def replay(self, call, tensors, new_layers):
        # The BN's output is its input: the neighbour does its work.
        return [tensors[id(call.args[0])]]

    def fold_weights(self, params: dict) -> dict:
        """The neighbour's weights `params` with this BN folded in."""
        scale, shift = batchnorm_scale_shift_of(self.layer)
        return self.formula(self.neighbour.layer, params, scale, shift)


class AbsorbBatchNorms(Plan):
    """A linear layer rebuilt with a bias and the folded weights of its BNs."""

    def __init__(self, layer, rule: LinearRule, folds: Sequence[FoldIntoNeighbour]):
        super().__init__(layer)
        self.rule = rule
        # Graph order puts a BN before the layer ahead of one after it, the
        # order the algebra needs: BN_after(W · BN_before(x) + b).
        self.folds = tuple(folds)

    def build(self):
        config = self.layer.get_config()
        config["use_bias"] = True
        return rebuild_layer(self.layer, config)

    def load_weights(self, new_layer) -> None:
        params = self.rule.read(self.layer)
        for fold in self.folds:
            params = fold.fold_weights(params)
        self.rule.write(new_layer, params)
