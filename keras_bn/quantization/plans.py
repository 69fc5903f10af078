"""Plans that build a quantization-aware graph, one small class per kind of rewrite.

They extend `keras_bn.folding.plans`: the folding engine
(`keras_bn.folding.engine.rebuild`) replays the original graph and each plan
makes its part of the new one.

- `QuantizeLinear`: a linear layer becomes a `QuantizedBlock`, with the BN
  that follows it and the ReLU/ReLU6 after that folded in;
- `Absorbed`: the call of a BN or an activation a block took in; it adds
  nothing and hands its input on;
- `QuantizeAffine`: a BN with no linear layer to fold into becomes a
  `QuantizedBlock` without one (a quantized per-channel affine);
- `QuantizeOutput`: a layer that computes new values (an `Add`, a
  concatenation, average pooling, an activation) is copied and its output
  rounded by an `ActivationQuantizer`;
- `ReadQuantizedInputs`: wraps the plan of a call that reads a model input,
  so that it reads the input rounded onto its own range.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass

import keras

from keras_bn.folding.plans import CopyLayer, Plan, ShareOperation
from keras_bn.keras_objects import rebuild_layer
from keras_bn.layers import BatchNormalization
from keras_bn.quantization.activation_quantizer import ActivationQuantizer
from keras_bn.quantization.blocks import QuantizedBlock

__all__ = [
    "Absorbed",
    "BlockOptions",
    "CopyInSimulationDtype",
    "InputQuantizers",
    "QuantizeAffine",
    "QuantizeLinear",
    "QuantizeOutput",
    "QuantizePlan",
    "QuantizerGroup",
    "ReadQuantizedInputs",
    "copy_batchnorm",
    "copy_layer",
    "simulation_dtype",
]


@dataclass(frozen=True)
class BlockOptions:
    """The `quantize_model` arguments every block and quantizer shares."""

    granularity: str = "per_channel"
    freeze_bn_after_steps: int | None = None
    range_momentum: float = 0.99


def simulation_dtype(layer):
    """The dtype policy of `layer`'s copy in a QAT model.

    A mixed-precision layer (float16 or bfloat16 compute) computes in its
    variable dtype, float32: the int8 simulation rounds onto grids that
    float16 cannot hold (255 levels of a range, off by up to a tenth of a
    step near its ends) and TensorFlow's FakeQuant ops take float32 only.
    Any other policy is kept.
    """
    policy = layer.dtype_policy
    if policy.compute_dtype != policy.variable_dtype:
        return policy.variable_dtype
    return policy


def copy_batchnorm(bn, **changes) -> BatchNormalization:
    """A `keras_bn.BatchNormalization` with `bn`'s configuration (Keras' or ours)."""
    config = {**bn.get_config(), "dtype": simulation_dtype(bn), **changes}
    return BatchNormalization.from_config(config)


class QuantizePlan(Plan):
    """A call that becomes one `QuantizedBlock` with the model's `BlockOptions`."""

    def __init__(
        self,
        layer,
        options: BlockOptions,
        *,
        activation: str | None = None,
        quantize_output: bool = True,
    ):
        super().__init__(layer)
        self.options = options
        self.activation = activation
        self.quantize_output = quantize_output

    def block(self, linear, batchnorm) -> QuantizedBlock:
        """The block of `linear` and `batchnorm` (either may be `None`)."""
        return QuantizedBlock(
            linear,
            batchnorm,
            activation=self.activation,
            granularity=self.options.granularity,
            freeze_bn_after_steps=self.options.freeze_bn_after_steps,
            quantize_output=self.quantize_output,
            range_momentum=self.options.range_momentum,
            name=self.layer.name,
            dtype=simulation_dtype(self.layer),
        )


class QuantizeLinear(QuantizePlan):
    """A linear layer, and the BN and activation after it, as one `QuantizedBlock`."""

    def __init__(self, layer, options: BlockOptions, *, batchnorm=None, **block):
        super().__init__(layer, options, **block)
        self.batchnorm = batchnorm

    def build(self):
        config = {**self.layer.get_config(), "dtype": simulation_dtype(self.layer)}
        if "activation" in config:
            config["activation"] = "linear"
        batchnorm = None if self.batchnorm is None else copy_batchnorm(self.batchnorm)
        return self.block(rebuild_layer(self.layer, config), batchnorm)

    def load_weights(self, new_layer) -> None:
        new_layer.linear.set_weights(self.layer.get_weights())
        if self.batchnorm is not None:
            new_layer.batchnorm.set_weights(self.batchnorm.get_weights())


class QuantizeAffine(QuantizePlan):
    """A BN that cannot be folded: a `QuantizedBlock` with no linear layer."""

    def build(self):
        # The block computes on (N·H·W, 1, 1, C): the channel axis is last.
        return self.block(None, copy_batchnorm(self.layer, axis=-1))

    def call_layer(self, new_layer, call, tensors):
        # Only the tensor: `training` belongs to the block, a mask propagates.
        return [new_layer(tensors[id(call.args[0])])]

    def load_weights(self, new_layer) -> None:
        new_layer.batchnorm.set_weights(self.layer.get_weights())


class Absorbed(Plan):
    """A BN or activation call a `QuantizedBlock` took in: it adds no layer."""

    def build(self):
        return None  # never called: `replay` adds no layer

    def replay(self, call, tensors, new_layers):
        return [tensors[id(call.args[0])]]


class QuantizerGroup:
    """One `ActivationQuantizer`, made on first use, for every tensor that shares a range.

    Most tensors have a range of their own (a group of one). A concatenation
    and its inputs share one: TFLite's converter gives all of them a single
    scale, so rounding each onto the concatenation's range is what the file
    does (checked on TF 2.21: inputs with ranges of their own are
    requantized twice, the file then differs by more than one step).
    """

    def __init__(self, name: str, options: BlockOptions, fixed_range=None):
        self.name = name
        self.options = options
        self.fixed_range = fixed_range
        self.quantizer: ActivationQuantizer | None = None

    def get(self, new_layers: dict) -> ActivationQuantizer:
        """The group's quantizer, registered in `new_layers` on first use."""
        if self.quantizer is None:
            self.quantizer = ActivationQuantizer(
                self.options.range_momentum,
                fixed_range=self.fixed_range,
                name=f"{self.name}_quantizer",
                dtype="float32",
            )
            new_layers[("quantizer", id(self))] = self.quantizer
        return self.quantizer


class QuantizeOutput(Plan):
    """Another plan's layer, its outputs rounded by a `QuantizerGroup`'s quantizer.

    `activation` (a Keras activation name) is applied in between: a Dense
    layer's built-in softmax, which TFLite runs as its own int8 op.
    """

    def __init__(
        self, inner: Plan, group: QuantizerGroup, activation: str | None = None
    ):
        super().__init__(inner.layer)
        self.inner = inner
        self.group = group
        self.activation = activation

    def build(self):
        return self.inner.build()

    def replay(self, call, tensors, new_layers):
        outputs = self.inner.replay(call, tensors, new_layers)
        if self.activation is not None:
            layer = keras.layers.Activation(
                self.activation,
                name=f"{self.layer.name}_{self.activation}",
                dtype=simulation_dtype(self.layer),
            )
            new_layers[("activation", id(call))] = layer
            outputs = [layer(output) for output in outputs]
        quantizer = self.group.get(new_layers)
        return [quantizer(output) for output in outputs]


class InputQuantizers:
    """One `ActivationQuantizer` per model input, made on the input's first read."""

    def __init__(self, inputs, options: BlockOptions):
        self.input_ids = {id(x) for x in inputs}
        self.options = options
        self.quantized: dict[int, object] = {}

    def view(self, tensors: dict, new_layers: dict, call) -> ChainMap:
        """`tensors` with the model inputs `call` reads replaced by their rounding."""
        for x in call.input_tensors:
            key = id(x)
            if key in self.input_ids and key not in self.quantized:
                suffix = f"_{len(self.quantized)}" if self.quantized else ""
                quantizer = ActivationQuantizer(
                    self.options.range_momentum,
                    name=f"input_quantizer{suffix}",
                    dtype="float32",
                )
                new_layers[("input_quantizer", key)] = quantizer
                self.quantized[key] = quantizer(tensors[key])
        return ChainMap(self.quantized, tensors)


class ReadQuantizedInputs(Plan):
    """Runs `inner` on the rounded model inputs instead of the raw ones."""

    def __init__(self, inner: Plan, inputs: InputQuantizers):
        super().__init__(inner.layer)
        self.inner = inner
        self.inputs = inputs

    def build(self):
        return self.inner.build()

    def replay(self, call, tensors, new_layers):
        return self.inner.replay(
            call, self.inputs.view(tensors, new_layers, call), new_layers
        )


class CopyInSimulationDtype(CopyLayer):
    """A copy of a mixed-precision layer that computes in float32 (`simulation_dtype`)."""

    def build(self):
        config = {**self.layer.get_config(), "dtype": simulation_dtype(self.layer)}
        return rebuild_layer(self.layer, config)


def copy_layer(layer) -> Plan:
    """The plan that copies `layer` (or shares a stateless operation)."""
    if not isinstance(layer, keras.layers.Layer):
        return ShareOperation(layer)
    if simulation_dtype(layer) is not layer.dtype_policy:
        return CopyInSimulationDtype(layer)
    return CopyLayer(layer)
