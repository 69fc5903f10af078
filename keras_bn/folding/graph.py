"""Walk a Keras graph and plan what happens to every Batch Normalization.

For every BN call of a Functional or Sequential model (read through
`keras_bn.keras_adapter`), `plan_graph` tries `Linear -> BN`
(`match_producer`), then `BN -> Linear` (`match_consumer`); the first that
holds is the fold, otherwise the BN becomes a `ChannelAffine` and both
reasons are recorded. What a layer supports comes from
`keras_bn.folding.rules`, what each call becomes is a plan from
`keras_bn.folding.plans`, and `keras_bn.folding.engine.rebuild` builds the new
model. Nested models are folded recursively, once each. The caller's layers
are never called, built or assigned to, so the original model stays
bit-for-bit the same. The whole chain: docs/folding.md.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import keras

from keras_bn.folding.engine import rebuild
from keras_bn.folding.plans import (
    AbsorbBatchNorms,
    CopyLayer,
    FoldFormula,
    FoldIntoNeighbour,
    KeepBatchNorm,
    Plan,
    ReplaceByAffine,
    ShareOperation,
    UseModel,
    describe,
)
from keras_bn.folding.report import AFTER, BEFORE, FoldEntry
from keras_bn.folding.rules import LinearRule, rule_for
from keras_bn.keras_adapter import (
    LayerCall,
    batchnorm_layers,
    functional_graph,
    is_batchnorm,
    is_subclassed_model,
    layer_calls,
)
from keras_bn.keras_objects import check_model
from keras_bn.ops import channel_axes

__all__ = [
    "GraphView",
    "Match",
    "check_foldable_model",
    "fold_graph",
    "match_consumer",
    "match_producer",
    "plan_batchnorm",
    "plan_graph",
]


def check_foldable_model(model) -> None:
    """Raises a clear error unless `model` is a built, traceable Keras model.

    Raises:
        TypeError: `model` is not a `keras.Model`, or is a subclassed model
            whose layer graph Keras does not record.
        ValueError: `model` is a Sequential model that was never built.
    """
    check_model(model)
    if isinstance(model, keras.Sequential) and functional_graph(model) is None:
        raise ValueError(
            f"Model '{model.name}' has never been built, so it has no input "
            "shape and no graph to fold. Give it a `keras.Input` or call "
            f"`model.build(input_shape)` first. Received: built={model.built}"
        )
    if is_subclassed_model(model):
        raise TypeError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed model: "
            "Keras records no layer graph for it, so BN layers and their "
            "neighbours cannot be traced. Build it with the Functional or "
            f"Sequential API to fold it. Received: model of type {type(model)}"
        )


def fold_graph(
    model: keras.Model, prefix: str = "", folded_models: dict | None = None
) -> tuple[keras.Model, list[FoldEntry]]:
    """Folds every BN in `model` into its neighbour; returns a new model.

    Args:
        model: a built Functional or Sequential model (one that passes
            `check_foldable_model`).
        prefix: path of `model` inside the outermost model, `"a/b/"`.
        folded_models: `id(model) -> folded copy` for the nested models
            folded so far, so that a model used at several call sites is
            folded once; `None` starts a new fold.

    Returns:
        `(folded_model, entries)`, one `FoldEntry` per BN call, nested models
        included, in graph order.
    """
    graph = functional_graph(model)
    if graph is None:
        check_foldable_model(model)  # raises the precise error
    view = GraphView(graph)
    plans, entries = plan_graph(
        view, prefix, {} if folded_models is None else folded_models
    )
    steps = [(call, plans[id(call)]) for call in view.calls]
    return rebuild(model, graph, steps), entries


class GraphView:
    """Who produces and who reads each tensor of one Functional graph.

    Attributes:
        calls: every `LayerCall`, in graph order.
    """

    def __init__(self, graph: keras.Model):
        self.calls = layer_calls(graph)
        self._producer = {id(t): c for c in self.calls for t in c.outputs}
        self._consumers = collections.defaultdict(list)
        for call in self.calls:
            for tensor in call.input_tensors:
                self._consumers[id(tensor)].append(call)
        self._outputs = {id(t) for t in graph.outputs}
        self._call_counts = collections.Counter(id(c.layer) for c in self.calls)

    def producer(self, tensor) -> LayerCall | None:
        """The call that writes `tensor`, `None` for a model input."""
        return self._producer.get(id(tensor))

    def consumers(self, tensor) -> list[LayerCall]:
        """The calls that read `tensor`."""
        return self._consumers.get(id(tensor), [])

    def is_output(self, tensor) -> bool:
        """Whether `tensor` is an output of the graph."""
        return id(tensor) in self._outputs

    def call_count(self, layer) -> int:
        """How many times the graph calls `layer`."""
        return self._call_counts[id(layer)]


@dataclass(frozen=True)
class Match:
    """A linear neighbour a BN can fold into, and the formula that does it."""

    call: LayerCall
    rule: LinearRule
    formula: FoldFormula


def plan_graph(
    view: GraphView, prefix: str, folded_models: dict
) -> tuple[dict[int, Plan], list[FoldEntry]]:
    """A plan for every call of `view`, and the report entries.

    Returns:
        `(plans, entries)`: `id(call) -> Plan`, and the `FoldEntry` of every
        BN call (nested models' inlined where they are first called), then
        those of BNs inside subclassed layers, which are kept.
    """
    plans: dict[int, Plan] = {}
    entries: list[FoldEntry] = []
    for call in view.calls:
        if is_batchnorm(call.layer):
            plans[id(call)] = plan = plan_batchnorm(view, call, prefix)
            entries.append(plan.entry)
        elif functional_graph(call.layer) is not None:
            folded = _fold_nested(call.layer, prefix, folded_models, entries)
            plans[id(call)] = UseModel(call.layer, folded)
    absorbed = collections.defaultdict(list)
    for plan in plans.values():
        if isinstance(plan, FoldIntoNeighbour):
            absorbed[id(plan.neighbour)].append(plan)
    copied = set()
    for call in view.calls:
        if id(call) in plans:
            continue
        if id(call) in absorbed:
            rule = rule_for(call.layer)
            plans[id(call)] = AbsorbBatchNorms(call.layer, rule, absorbed[id(call)])
        elif not isinstance(call.layer, keras.layers.Layer):
            plans[id(call)] = ShareOperation(call.layer)
        else:
            plans[id(call)] = CopyLayer(call.layer)
            if id(call.layer) not in copied:
                copied.add(id(call.layer))
                entries.extend(_untraceable_entries(call.layer, prefix))
    return plans, entries


def _fold_nested(model, prefix, folded_models, entries) -> keras.Model:
    if id(model) not in folded_models:
        folded, nested_entries = fold_graph(
            model, f"{prefix}{model.name}/", folded_models
        )
        folded_models[id(model)] = folded
        entries.extend(nested_entries)
    return folded_models[id(model)]


def _untraceable_entries(layer, prefix: str) -> list[FoldEntry]:
    reason = (
        f"inside {describe(layer)}, a subclassed layer whose graph cannot be "
        "traced; kept"
    )
    return [
        FoldEntry(f"{prefix}{layer.name}/{bn.name}", False, reason=reason)
        for bn in batchnorm_layers(layer)
    ]


def plan_batchnorm(view: GraphView, call: LayerCall, prefix: str) -> Plan:
    """The plan for one BN call: fold it, replace it by an affine layer, or keep it.

    Each direction requires the BN to be the linear layer's only neighbour
    on that side, so no layer is claimed twice per side.
    """
    bn = call.layer
    path = prefix + bn.name
    if call.kwargs.get("training") is True:
        reason = "called with training=True, so it always uses batch statistics; kept"
        return KeepBatchNorm(bn, path, reason)
    reasons = []
    for direction, match in ((AFTER, match_producer), (BEFORE, match_consumer)):
        found = match(view, call)
        if isinstance(found, str):
            reasons.append(f"{direction}: {found}")
            continue
        return FoldIntoNeighbour(
            bn,
            path,
            direction=direction,
            neighbour=found.call,
            into=prefix + found.call.layer.name,
            formula=found.formula,
        )
    reason = "; ".join(reasons) + " -> replaced by ChannelAffine"
    return ReplaceByAffine(bn, path, reason)


def match_producer(view: GraphView, bn_call: LayerCall) -> Match | str:
    """The linear call the BN can fold into as `Linear -> BN`, or why not."""
    x = bn_call.args[0]
    call = view.producer(x)
    if call is None:
        return "its input is a model input"
    rule = rule_for(call.layer)
    reason = _linear_reason(view, call, rule)
    if reason:
        return reason
    uses = len(view.consumers(x)) + view.is_output(x)
    if uses != 1:
        return f"the output of '{call.layer.name}' is used {uses} times, not only by the BN"
    return _match_axis(bn_call, Match(call, rule, rule.fold_after), len(x.shape))


def match_consumer(view: GraphView, bn_call: LayerCall) -> Match | str:
    """The linear call the BN can fold into as `BN -> Linear`, or why not."""
    y = bn_call.outputs[0]
    consumers = view.consumers(y)
    if view.is_output(y):
        return "its output is a model output"
    if len(consumers) != 1:
        return f"its output feeds {len(consumers)} layers, not one"
    (call,) = consumers
    rule = rule_for(call.layer)
    reason = _linear_reason(view, call, rule)
    if reason:
        return reason
    if not call.args or call.args[0] is not y or len(call.input_tensors) != 1:
        return f"'{call.layer.name}' takes more than the BN output"
    reason = rule.before_reason(call.layer)
    if reason:
        return reason
    return _match_axis(bn_call, Match(call, rule, rule.fold_before), len(y.shape))


def _linear_reason(view: GraphView, call: LayerCall, rule: LinearRule | None):
    layer = call.layer
    if rule is None:
        if functional_graph(layer) is not None:
            return f"its neighbour is the nested model {describe(layer)}"
        return f"its neighbour {describe(layer)} is not a linear layer"
    reason = rule.unfoldable_reason(layer)
    count = view.call_count(layer)
    if reason is None and count > 1:
        reason = (
            f"'{layer.name}' is shared (called {count} times), so folding into it "
            "would change its other calls"
        )
    return reason


def _match_axis(bn_call: LayerCall, match: Match, rank: int) -> Match | str:
    bn = bn_call.layer
    axes = channel_axes(bn.axis, [None] * rank)
    if len(axes) != 1:
        return f"the BN normalizes over several axes {axes}"
    layer = match.call.layer
    channel_axis = match.rule.channel_axis(layer, rank)
    if axes[0] != channel_axis:
        return (
            f"the BN axis {axes[0]} is not the channel axis {channel_axis} of "
            f"'{layer.name}'"
        )
    return match.rule.bias_reason(layer, match.call.outputs[0].shape) or match
