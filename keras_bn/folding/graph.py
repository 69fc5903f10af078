"""Walk a Keras graph, decide what happens to every BN, rebuild the graph.

`fold_graph(model)` works on the graph Keras records for Functional and
Sequential models (`model._nodes_by_depth`: one node per layer call, with
the tensors it reads and writes). It runs in two passes:

1. Plan. For every Batch Normalization call, try `Linear -> BN` (the BN's
   input comes from a linear layer), then `BN -> Linear` (its output goes to
   one); the first that holds is the fold. Otherwise the BN becomes a
   `ChannelAffine` and the reasons both directions failed are recorded.
   What a layer supports comes from `keras_bn.folding.rules`.
2. Rebuild. Replay the nodes in topological order on fresh `keras.Input`s
   with fresh layers: folded BNs vanish (their output is their input), their
   linear neighbours are rebuilt with folded weights (and a bias if they had
   none), other layers are copied from their config and weights, nested
   Functional/Sequential models are folded recursively.

The caller's layers are never called, built or assigned to, so the original
model stays bit-for-bit the same.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import keras
import numpy as np
from keras import tree

from keras_bn.folding import weights
from keras_bn.folding.affine import ChannelAffine
from keras_bn.folding.report import AFTER, BEFORE, FoldEntry
from keras_bn.folding.rules import LinearRule, rule_for

__all__ = ["BATCHNORM_TYPES", "check_foldable_model", "fold_graph"]

#: `keras_bn.BatchNormalization` subclasses Keras' layer, so this covers both.
BATCHNORM_TYPES = (keras.layers.BatchNormalization,)

_KEPT = "kept"
_AFFINE = "affine"


@dataclass
class _Plan:
    """What happens to one BN call."""

    action: str  # AFTER, BEFORE, _AFFINE or _KEPT
    linear_node: object = None
    reason: str | None = None


def check_foldable_model(model) -> None:
    """Raises a clear error unless `model` is a built, traceable Keras model.

    Raises:
        TypeError: `model` is not a `keras.Model`, or is a subclassed model
            whose layer graph Keras does not record.
        ValueError: `model` is a Sequential model that was never built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`fold_batchnorm` expects a Keras model (`keras.Model`, Functional or "
            f"Sequential). Received: model={model!r} of type {type(model).__name__}"
        )
    _functional_graph(model)


def _functional_graph(model):
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Model '{model.name}' has never been built, so it has no input "
                "shape and no graph to fold. Give it a `keras.Input` or call "
                f"`model.build(input_shape)` first. Received: built={model.built}"
            )
        return graph
    if getattr(model, "_nodes_by_depth", None) is None:
        raise TypeError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed model: "
            "Keras records no layer graph for it, so BN layers and their "
            "neighbours cannot be traced. Build it with the Functional or "
            f"Sequential API to fold it. Received: model of type {type(model)}"
        )
    return model


def fold_graph(model: keras.Model) -> tuple[keras.Model, list[FoldEntry]]:
    """Folds every BN in `model` into its neighbour; returns a new model.

    Args:
        model: a built Functional or Sequential model.

    Returns:
        `(folded_model, entries)`, one `FoldEntry` per BN call, nested models
        included, in graph order.
    """
    check_foldable_model(model)
    return _GraphFolder(model, prefix="", nested={}).run()


def _as_int_axes(bn, rank: int) -> list[int]:
    axes = [bn.axis] if isinstance(bn.axis, int) else list(bn.axis)
    return sorted(int(a) % rank for a in axes)


def batchnorm_scale_shift_of(bn) -> tuple[np.ndarray, np.ndarray]:
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


def _describe(op) -> str:
    return f"'{op.name}' ({type(op).__name__})"


def _has_graph(op) -> bool:
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None) is not None
    return isinstance(op, keras.Model) and bool(getattr(op, "_nodes_by_depth", None))


class _GraphFolder:
    """Plans and rebuilds one Functional graph; recurses into nested models."""

    def __init__(self, model, prefix: str, nested: dict):
        self.model = model
        self.graph = _functional_graph(model)
        self.prefix = prefix
        # id(original nested model) -> folded copy, shared by the whole fold
        # so a model used at several call sites is folded once.
        self.nested = nested
        self.nodes = [
            node
            for depth in sorted(self.graph._nodes_by_depth, reverse=True)
            for node in self.graph._nodes_by_depth[depth]
            if not node.is_input
        ]
        self.producer = {id(t): n for n in self.nodes for t in n.outputs}
        self.consumers = collections.defaultdict(list)
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers[id(tensor)].append(node)
        self.model_outputs = {id(t) for t in self.graph.outputs}
        self.calls = collections.Counter(id(n.operation) for n in self.nodes)
        self.entries: list[FoldEntry] = []
        self.plans: dict[int, _Plan] = {}
        # id(linear node) -> {AFTER: bn node, BEFORE: bn node}
        self.linear_folds: dict[int, dict[str, object]] = {}

    # -- pass 1: plan ----------------------------------------------------------

    def run(self) -> tuple[keras.Model, list[FoldEntry]]:
        for node in self.nodes:
            if isinstance(node.operation, BATCHNORM_TYPES):
                self._plan(node)
            elif _has_graph(node.operation):
                self._fold_nested(node.operation)
        return self._rebuild(), self.entries

    def _fold_nested(self, model) -> None:
        if id(model) not in self.nested:
            folder = _GraphFolder(model, f"{self.prefix}{model.name}/", self.nested)
            self.nested[id(model)], entries = folder.run()
            self.entries.extend(entries)

    def _plan(self, bn_node) -> None:
        bn = bn_node.operation
        path = self.prefix + bn.name
        if bn_node.arguments.kwargs.get("training") is True:
            reason = (
                "called with training=True, so it always uses batch statistics; kept"
            )
            self.plans[id(bn_node)] = _Plan(_KEPT, reason=reason)
            self.entries.append(FoldEntry(path, False, reason=reason))
            return
        reasons = []
        for direction, find in ((AFTER, self._after), (BEFORE, self._before)):
            # Each direction requires the BN to be the linear layer's only
            # neighbour on that side, so no layer is claimed twice per side.
            linear_node, reason = find(bn_node)
            if linear_node is None:
                reasons.append(f"{direction}: {reason}")
                continue
            self.linear_folds.setdefault(id(linear_node), {})[direction] = bn_node
            self.plans[id(bn_node)] = _Plan(direction, linear_node)
            into = self.prefix + linear_node.operation.name
            self.entries.append(FoldEntry(path, True, into=into, direction=direction))
            return
        reason = "; ".join(reasons) + " -> replaced by ChannelAffine"
        self.plans[id(bn_node)] = _Plan(_AFFINE, reason=reason)
        self.entries.append(FoldEntry(path, False, reason=reason))

    def _bn_axis(self, bn_node) -> tuple[int | None, str | None]:
        x = bn_node.arguments.args[0]
        axes = _as_int_axes(bn_node.operation, len(x.shape))
        if len(axes) != 1:
            return None, f"the BN normalizes over several axes {axes}"
        return axes[0], None

    def _linear_reason(self, node, rule: LinearRule | None) -> str | None:
        op = node.operation
        if rule is None:
            if _has_graph(op):
                return f"its neighbour is the nested model {_describe(op)}"
            return f"its neighbour {_describe(op)} is not a linear layer"
        reason = rule.unfoldable_reason(op)
        if reason is None and self.calls[id(op)] > 1:
            reason = (
                f"'{op.name}' is shared (called {self.calls[id(op)]} times), so "
                "folding into it would change its other calls"
            )
        return reason

    def _after(self, bn_node):
        """`(linear_node, None)` if the BN folds into its producer, else a reason."""
        x = bn_node.arguments.args[0]
        node = self.producer.get(id(x))
        if node is None:
            return None, "its input is a model input"
        rule = rule_for(node.operation)
        reason = self._linear_reason(node, rule)
        if reason:
            return None, reason
        uses = len(self.consumers[id(x)]) + (id(x) in self.model_outputs)
        if uses != 1:
            return None, (
                f"the output of '{node.operation.name}' is used {uses} times, "
                "not only by the BN"
            )
        return self._check_axis(bn_node, node, rule, len(x.shape))

    def _before(self, bn_node):
        """`(linear_node, None)` if the BN folds into its consumer, else a reason."""
        y = bn_node.outputs[0]
        consumers = self.consumers[id(y)]
        if id(y) in self.model_outputs:
            return None, "its output is a model output"
        if len(consumers) != 1:
            return None, f"its output feeds {len(consumers)} layers, not one"
        node = consumers[0]
        rule = rule_for(node.operation)
        reason = self._linear_reason(node, rule)
        if reason:
            return None, reason
        args = node.arguments.args
        if not args or args[0] is not y or len(node.input_tensors) != 1:
            return None, f"'{node.operation.name}' takes more than the BN output"
        reason = rule.before_reason(node.operation)
        if reason:
            return None, reason
        return self._check_axis(bn_node, node, rule, len(y.shape))

    def _check_axis(self, bn_node, linear_node, rule, rank):
        axis, reason = self._bn_axis(bn_node)
        if reason:
            return None, reason
        channel_axis = rule.channel_axis(linear_node.operation, rank)
        if axis != channel_axis:
            return None, (
                f"the BN axis {axis} is not the channel axis {channel_axis} of "
                f"'{linear_node.operation.name}'"
            )
        reason = rule.bias_reason(linear_node.operation, linear_node.outputs[0].shape)
        if reason:
            return None, reason
        return linear_node, None

    # -- pass 2: rebuild -------------------------------------------------------

    def _rebuild(self) -> keras.Model:
        tensors = {}
        for x in self.graph.inputs:
            tensors[id(x)] = keras.Input(
                batch_shape=x.shape,
                dtype=x.dtype,
                sparse=x.sparse,
                ragged=x.ragged,
                name=x._keras_history.operation.name,
            )
        new_ops: dict[int, object] = {}
        sequence = []
        for node in self.nodes:
            plan = self.plans.get(id(node))
            if plan is not None and plan.action in (AFTER, BEFORE):
                tensors[id(node.outputs[0])] = tensors[id(node.arguments.args[0])]
                continue
            op = node.operation
            first_call = id(op) not in new_ops
            if first_call:
                new_ops[id(op)] = self._new_operation(node, plan)
            new_op = new_ops[id(op)]
            if plan is not None and plan.action == _AFFINE:
                args, kwargs = (tensors[id(node.arguments.args[0])],), {}
            else:
                args, kwargs = node.arguments.fill_in(tensors)
            outputs = new_op(*args, **kwargs)
            if first_call:
                self._load_weights(node, plan, new_op)
            sequence.append(new_op)
            for x, y in zip(node.outputs, tree.flatten(outputs), strict=True):
                tensors[id(x)] = y

        def new(x):
            return tensors[id(x)]

        if isinstance(self.model, keras.Sequential):
            (x,) = self.graph.inputs
            return keras.Sequential([new(x), *sequence], name=self.model.name)
        return keras.Model(
            inputs=tree.map_structure(new, self.graph._inputs_struct),
            outputs=tree.map_structure(new, self.graph._outputs_struct),
            name=self.model.name,
        )

    def _new_operation(self, node, plan):
        op = node.operation
        if plan is not None and plan.action == _AFFINE:
            return ChannelAffine(axis=op.axis, name=op.name, dtype=op.dtype_policy)
        if id(node) in self.linear_folds:
            config = op.get_config()
            config["use_bias"] = True
            return self._from_config(op, config)
        if _has_graph(op):
            return self.nested[id(op)]
        if not isinstance(op, keras.layers.Layer):
            # Stateless operations (`keras.ops` calls in a Functional graph)
            # hold no weights; Keras' own clone_model shares them too.
            return op
        self._record_untraceable(op)
        return self._from_config(op, op.get_config())

    def _record_untraceable(self, op) -> None:
        inner = [
            layer
            for layer in op._flatten_layers(include_self=False)
            if isinstance(layer, BATCHNORM_TYPES)
        ]
        for bn in inner:
            self.entries.append(
                FoldEntry(
                    f"{self.prefix}{op.name}/{bn.name}",
                    False,
                    reason=(
                        f"inside {_describe(op)}, a subclassed layer whose graph "
                        "cannot be traced; kept"
                    ),
                )
            )

    @staticmethod
    def _from_config(op, config):
        try:
            return op.__class__.from_config(config)
        except Exception as error:
            raise TypeError(
                f"Layer {_describe(op)} cannot be rebuilt from its config, which "
                "folding needs to copy the model without touching it. Give the "
                "class a `get_config` that lists its constructor arguments. "
                f"Received: {type(error).__name__}: {error}"
            ) from error

    def _load_weights(self, node, plan, new_op) -> None:
        op = node.operation
        if plan is not None and plan.action == _AFFINE:
            scale, shift = batchnorm_scale_shift_of(op)
            dtype = new_op.scale.dtype
            new_op.set_weights([scale.astype(dtype), shift.astype(dtype)])
        elif id(node) in self.linear_folds:
            rule = rule_for(op)
            params = rule.read(op)
            folds = self.linear_folds[id(node)]
            if BEFORE in folds:
                scale, shift = batchnorm_scale_shift_of(folds[BEFORE].operation)
                params = rule.fold_before(op, params, scale, shift)
            if AFTER in folds:
                scale, shift = batchnorm_scale_shift_of(folds[AFTER].operation)
                params = rule.fold_after(op, params, scale, shift)
            rule.write(new_op, params)
        elif not _has_graph(op) and isinstance(op, keras.layers.Layer):
            new_op.set_weights(op.get_weights())
