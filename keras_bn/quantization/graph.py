"""Plan a quantization-aware copy of a Keras graph, with folding's matcher.

Every Batch Normalization call is matched by `keras_bn.folding.graph.plan_batchnorm`,
the rule `fold_batchnorm` uses, so QAT folds exactly the `Linear → BN` pairs
folding does:

- folded after a linear layer: that layer's plan becomes `QuantizeLinear`
  with the BN (and a ReLU/ReLU6 that is the BN output's only reader);
- anything else (no linear layer before it, or only one after it): a
  `QuantizeAffine`, reported with folding's reason;

every other linear layer is a `QuantizeLinear` without BN; layers that
compute new values get their output rounded (`QuantizeOutput`), layers that
only move values (reshape, max pooling, dropout) are copied. A layer of any
other kind is refused by name: its int8 behaviour is unknown here.
"""

from __future__ import annotations

import keras

from keras_bn.folding.graph import GraphView, check_foldable_model, plan_batchnorm
from keras_bn.folding.plans import FoldIntoNeighbour, KeepBatchNorm, Plan, describe
from keras_bn.folding.report import AFTER, FoldEntry
from keras_bn.keras_adapter import LayerCall, functional_graph, is_batchnorm
from keras_bn.quantization import plans
from keras_bn.quantization.activation_quantizer import SOFTMAX_RANGE
from keras_bn.quantization.rules import quantization_rule_for

__all__ = ["PlannedGraph", "plan_quantization"]

#: Layers that only move, select or drop values: the int8 grid passes through.
PASS_THROUGH = (
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.Identity,
)
#: Layers whose output is a new tensor with its own int8 range.
NEW_VALUES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Softmax,
    keras.layers.Activation,
)
#: Outputs TFLite's int8 kernels give a fixed scale (softmax, logistic: 1/256
#: from -128; tanh: 1/128 around 0).
FIXED_RANGES = {
    "softmax": SOFTMAX_RANGE,
    "sigmoid": SOFTMAX_RANGE,
    "tanh": (-1.0, 127.0 / 128.0),
}


def activation_name(layer) -> str | None:
    """`"relu"`, `"relu6"`, `"linear"`, ... for an activation layer; `None` otherwise."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.negative_slope == 0 and layer.threshold == 0
        if plain and layer.max_value is None:
            return "relu"
        if plain and layer.max_value is not None and float(layer.max_value) == 6.0:
            return "relu6"
        return "relu_variant"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", None)
    return None


def builtin_activation(layer) -> str | None:
    """The name of a linear layer's own activation; `None` for linear."""
    activation = getattr(layer, "activation", None)
    if activation is None or activation is keras.activations.linear:
        return None
    return getattr(activation, "__name__", repr(activation))


class PlannedGraph:
    """The plan of every call, the BN report entries, and which tensors are rounded."""

    def __init__(self, view: GraphView, options: plans.BlockOptions):
        self.view = view
        self.options = options
        self.plans: dict[int, Plan] = {}
        self.entries: list[FoldEntry] = []
        self.groups: dict[int, plans.QuantizerGroup] = {}

    def sole_reader(self, tensor) -> LayerCall | None:
        """The one call reading `tensor`, if exactly one does and it is no output."""
        readers = self.view.consumers(tensor)
        if len(readers) == 1 and not self.view.is_output(tensor):
            return readers[0]
        return None

    def fused_activation(self, tensor) -> tuple[str | None, LayerCall | None]:
        """A ReLU/ReLU6 that only `tensor` feeds, which TFLite fuses into its producer."""
        reader = self.sole_reader(tensor)
        if reader is not None and activation_name(reader.layer) in ("relu", "relu6"):
            return activation_name(reader.layer), reader
        return None, None

    def group(self, call: LayerCall, fixed_range=None) -> plans.QuantizerGroup:
        """The range group named after `call`'s layer (one per call)."""
        if id(call) not in self.groups:
            name = getattr(call.layer, "name", "op")
            self.groups[id(call)] = plans.QuantizerGroup(
                name, self.options, fixed_range
            )
        return self.groups[id(call)]

    def rounding(self, tensor, call: LayerCall) -> plans.QuantizerGroup | None:
        """Who rounds `tensor`, the output of `call`: a group, or `None`.

        A concatenation reading it rounds it (the two share one scale in the
        file); a ReLU that is its only reader does (an `ADD` with a fused
        ReLU is one op at the ReLU's scale); otherwise its own range.
        """
        for reader in self.view.consumers(tensor):
            if isinstance(reader.layer, keras.layers.Concatenate):
                return self.group(reader)
        reader = self.sole_reader(tensor)
        if reader is not None and activation_name(reader.layer) in ("relu", "relu6"):
            return None
        return self.group(call)

    def output_plan(self, plan, tensor, call: LayerCall) -> Plan:
        """`plan` (a block rounding its own output) with `tensor`'s rounding."""
        group = self.rounding(tensor, call)
        if group is not None and group is self.groups.get(id(call)):
            return plan
        plan.quantize_output = False
        return plan if group is None else plans.QuantizeOutput(plan, group)


def plan_quantization(model: keras.Model, options: plans.BlockOptions) -> PlannedGraph:
    """A plan for every call of `model`'s graph; raises for what cannot be quantized.

    Raises:
        TypeError: `model` is not a Functional/Sequential model.
        ValueError: a layer has no int8 simulation here (named), or the model
            has no Dense, convolution or BN layer at all.
    """
    check_foldable_model(model)
    graph = functional_graph(model)
    planned = PlannedGraph(GraphView(graph), options)
    for call in planned.view.calls:
        if is_batchnorm(call.layer):
            _plan_batchnorm(planned, call)
    for call in planned.view.calls:
        if id(call) not in planned.plans:
            planned.plans[id(call)] = _plan_other(planned, call)
    blocks = (plans.QuantizeLinear, plans.QuantizeAffine)
    if not any(isinstance(p, blocks) for p in planned.plans.values()):
        raise ValueError(
            f"Model '{model.name}' has nothing to quantize: no Dense, convolution "
            "or Batch Normalization layer. Received: layers "
            f"{[type(c.layer).__name__ for c in planned.view.calls]}"
        )
    inputs = plans.InputQuantizers(graph.inputs, options)
    for call in planned.view.calls:
        if any(id(x) in inputs.input_ids for x in call.input_tensors):
            planned.plans[id(call)] = plans.ReadQuantizedInputs(
                planned.plans[id(call)], inputs
            )
    return planned


def _check_batchnorm(bn) -> None:
    if getattr(bn, "renorm", False) or getattr(bn, "virtual_batch_size", None):
        raise ValueError(
            f"Layer {describe(bn)} uses Batch Renormalization or ghost batches, "
            "whose training map the folded int8 simulation does not reproduce. "
            f"Received: renorm={bn.renorm}, "
            f"virtual_batch_size={getattr(bn, 'virtual_batch_size', None)}"
        )


def _plan_batchnorm(planned: PlannedGraph, call: LayerCall) -> None:
    bn = call.layer
    _check_batchnorm(bn)
    plan = plan_batchnorm(planned.view, call, "")
    if isinstance(plan, KeepBatchNorm):
        raise ValueError(
            f"Layer {describe(bn)} is called with training=True, so it always "
            "uses batch statistics and has no int8 form. Received: "
            f"training={call.kwargs.get('training')}"
        )
    output = call.outputs[0]
    activation, activation_call = planned.fused_activation(output)
    if activation_call is not None:
        planned.plans[id(activation_call)] = plans.Absorbed(activation_call.layer)
        output = activation_call.outputs[0]
    planned.plans[id(call)] = plans.Absorbed(bn)
    if isinstance(plan, FoldIntoNeighbour) and plan.entry.direction == AFTER:
        planned.entries.append(plan.entry)
        block = plans.QuantizeLinear(
            plan.neighbour.layer, planned.options, batchnorm=bn, activation=activation
        )
        planned.plans[id(plan.neighbour)] = planned.output_plan(
            block, output, plan.neighbour
        )
        return
    if isinstance(plan, FoldIntoNeighbour):
        reason = (
            f"before '{plan.entry.into}': QAT folds a BN only into the layer before it"
        )
    else:
        reason = plan.entry.reason.replace("replaced by ChannelAffine", "").rstrip(
            " ->"
        )
    planned.entries.append(
        FoldEntry(
            plan.entry.batchnorm,
            False,
            reason=f"{reason} -> quantized per-channel affine",
        )
    )
    block = plans.QuantizeAffine(bn, planned.options, activation=activation)
    planned.plans[id(call)] = planned.output_plan(block, output, call)


def _plan_other(planned: PlannedGraph, call: LayerCall) -> Plan:
    layer = call.layer
    if functional_graph(layer) is not None:
        raise ValueError(
            f"Layer {describe(layer)} is a nested model; quantize_model works on "
            "one flat graph. Rebuild the model without nesting (call the inner "
            "model's layers directly)."
        )
    rule = quantization_rule_for(layer)
    if rule is not None:
        return _plan_linear(planned, call, rule)
    if isinstance(layer, PASS_THROUGH) or activation_name(layer) == "linear":
        return plans.copy_layer(layer)
    if isinstance(layer, NEW_VALUES) or not isinstance(layer, keras.layers.Layer):
        name = activation_name(layer)
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)) and (
            name not in ("relu", "relu6", *FIXED_RANGES)
        ):
            raise ValueError(
                f"Layer {describe(layer)}: activation '{name}' has no int8 "
                "simulation in keras_bn (relu, relu6, softmax, sigmoid and tanh "
                "have)."
            )
        inner = plans.copy_layer(layer)
        if name in FIXED_RANGES:
            return plans.QuantizeOutput(inner, planned.group(call, FIXED_RANGES[name]))
        group = planned.rounding(call.outputs[0], call)
        if isinstance(layer, keras.layers.Concatenate):
            group = planned.group(call)
        return inner if group is None else plans.QuantizeOutput(inner, group)
    raise ValueError(
        f"Layer {describe(layer)} has no int8 simulation in keras_bn: quantize_model "
        "handles Dense and convolution layers, Batch Normalization, additions, "
        "concatenations, pooling, reshaping and ReLU/softmax activations."
    )


def _plan_linear(planned: PlannedGraph, call: LayerCall, rule) -> Plan:
    layer = call.layer
    reason = rule.unsupported_reason(layer)
    if reason:
        raise ValueError(f"Layer {describe(layer)} cannot be quantized: {reason}")
    activation = builtin_activation(layer)
    if activation in FIXED_RANGES:
        # TFLite runs it as its own op, with its fixed output scale.
        block = plans.QuantizeLinear(layer, planned.options)
        group = plans.QuantizerGroup(
            f"{layer.name}_{activation}", planned.options, FIXED_RANGES[activation]
        )
        return plans.QuantizeOutput(block, group, activation=activation)
    if activation not in (None, "relu", "relu6"):
        raise ValueError(
            f"Layer {describe(layer)} has the built-in activation '{activation}', "
            "which has no int8 simulation in keras_bn (relu, relu6, softmax, "
            "sigmoid and tanh have)."
        )
    output = call.outputs[0]
    if activation is None:
        activation, activation_call = planned.fused_activation(output)
        if activation_call is not None:
            planned.plans[id(activation_call)] = plans.Absorbed(activation_call.layer)
            output = activation_call.outputs[0]
    block = plans.QuantizeLinear(layer, planned.options, activation=activation)
    return planned.output_plan(block, output, call)
