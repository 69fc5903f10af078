"""One rule per family of linear layers: where its channels are, how it folds.

A rule answers three questions about a layer and leaves the graph to
`keras_bn.folding.graph`:

- can this layer absorb anything at all (no built-in activation, not
  quantized, no LoRA adapter)?
- which tensor axis holds its input and output channels, for a given
  `data_format` and rank?
- how do its weights change when a BN before or after it is folded in
  (a formula from `keras_bn.folding.weights`), and when can a BN before it
  not be folded (zero padding)?

Rules are tried in order and the first whose `layer_types` match wins, so a
new linear layer is supported by adding one class to `RULES`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from keras_bn.folding import weights

__all__ = ["RULES", "LinearRule", "rule_for"]


class LinearRule:
    """Base rule: a layer `y = W x + b` with weights `[kernel, bias?]`."""

    layer_types: tuple[type, ...] = ()
    #: Names of the weights in `get_weights()` order, bias last.
    weight_names: tuple[str, ...] = ("kernel", "bias")

    def matches(self, layer) -> bool:
        return isinstance(layer, self.layer_types)

    # -- structure -----------------------------------------------------------

    def unfoldable_reason(self, layer) -> str | None:
        """Why this layer can absorb no BN at all, or `None`."""
        activation = getattr(layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            name = getattr(activation, "__name__", repr(activation))
            return f"'{layer.name}' has a built-in activation '{name}'"
        if getattr(layer, "quantization_mode", None):
            return f"'{layer.name}' is quantized ({layer.quantization_mode})"
        if getattr(layer, "lora_enabled", False):
            return f"'{layer.name}' has a LoRA adapter"
        return None

    def channel_axis(self, layer, rank: int) -> int:
        """The channel axis of the layer's input and output tensors."""
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            return 1
        return rank - 1

    def before_reason(self, layer) -> str | None:
        """Why a BN right before this layer cannot be folded, or `None`."""
        padding = getattr(layer, "padding", "valid")
        if padding != "valid":
            return (
                f"'{layer.name}' uses padding='{padding}': the padded zeros are "
                "not shifted by BN, so the fold would be inexact at the borders"
            )
        return None

    def bias_reason(self, layer, output_shape) -> str | None:
        """Why a folded bias would be added on the wrong axis, or `None`.

        Keras 3.15's TensorFlow bias add picks NHWC whenever the last
        dimension equals the channel count, so a `channels_first` layer whose
        last output dimension equals its channels (or is unknown) adds a bias
        along the wrong axis: a folded, different bias would change the
        output (docs/folding.md).
        """
        channels_first = getattr(layer, "data_format", None) == "channels_first"
        if not channels_first or keras.backend.backend() != "tensorflow":
            return None
        channels, last = output_shape[1], output_shape[-1]
        if last is None or last == channels:
            return (
                f"'{layer.name}' is channels_first with last output dimension "
                f"{last} and {channels} channels: Keras' TensorFlow bias add "
                "would apply a folded bias along the last axis"
            )
        return None

    # -- weights -------------------------------------------------------------

    def read(self, layer) -> dict[str, np.ndarray | None]:
        values = layer.get_weights()
        names = self.weight_names if layer.use_bias else self.weight_names[:-1]
        if len(values) != len(names):
            raise ValueError(
                f"Layer '{layer.name}': expected weights {names}, found "
                f"{len(values)} arrays. Received: {[v.shape for v in values]}"
            )
        params = dict(zip(names, values, strict=True))
        params.setdefault("bias", None)
        return params

    def write(self, layer, params: dict[str, np.ndarray]) -> None:
        layer.set_weights([params[name] for name in self.weight_names])

    # The `weights` formulas of a `(kernel, bias)` layer; a family whose
    # weights differ overrides `fold_after` / `fold_before` instead.
    after_formula: Callable | None = None
    before_formula: Callable | None = None

    def fold_after(self, layer, params, scale, shift) -> dict[str, np.ndarray]:
        """Weights of `layer` followed by the BN `x * scale + shift`."""
        kernel, bias = self.after_formula(
            params["kernel"], params["bias"], scale, shift
        )
        return {"kernel": kernel, "bias": bias}

    def fold_before(self, layer, params, scale, shift) -> dict[str, np.ndarray]:
        """Weights of the BN `x * scale + shift` followed by `layer`."""
        kernel, bias = self.before_formula(
            scale, shift, params["kernel"], params["bias"]
        )
        return {"kernel": kernel, "bias": bias}


class DenseRule(LinearRule):
    layer_types = (keras.layers.Dense,)
    after_formula = staticmethod(weights.fold_bn_after_dense)
    before_formula = staticmethod(weights.fold_bn_before_dense)

    def channel_axis(self, layer, rank):
        return rank - 1

    def before_reason(self, layer):
        return None


class ConvTransposeRule(LinearRule):
    layer_types = (
        keras.layers.Conv1DTranspose,
        keras.layers.Conv2DTranspose,
        keras.layers.Conv3DTranspose,
    )
    after_formula = staticmethod(weights.fold_bn_after_conv_transpose)

    def before_reason(self, layer):
        return (
            f"'{layer.name}' is a transposed convolution: border outputs receive "
            "fewer input taps than inner ones, so a BN shift before it cannot "
            "become one bias per channel"
        )

    def fold_before(self, layer, params, scale, shift):
        raise ValueError(self.before_reason(layer))


class DepthwiseConvRule(LinearRule):
    layer_types = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    after_formula = staticmethod(weights.fold_bn_after_depthwise_conv)
    before_formula = staticmethod(weights.fold_bn_before_depthwise_conv)


class SeparableConvRule(LinearRule):
    layer_types = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
    weight_names = ("depthwise_kernel", "pointwise_kernel", "bias")

    def fold_after(self, layer, params, scale, shift):
        pointwise, bias = weights.fold_bn_after_conv(
            params["pointwise_kernel"], params["bias"], scale, shift
        )
        return {**params, "pointwise_kernel": pointwise, "bias": bias}

    def fold_before(self, layer, params, scale, shift):
        depthwise, pointwise, bias = weights.fold_bn_before_separable_conv(
            scale,
            shift,
            params["depthwise_kernel"],
            params["pointwise_kernel"],
            params["bias"],
        )
        return {
            "depthwise_kernel": depthwise,
            "pointwise_kernel": pointwise,
            "bias": bias,
        }


class ConvRule(LinearRule):
    layer_types = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    after_formula = staticmethod(weights.fold_bn_after_conv)

    def fold_before(self, layer, params, scale, shift):
        # `groups` decides which input channels meet which kernel rows.
        kernel, bias = weights.fold_bn_before_conv(
            scale, shift, params["kernel"], params["bias"], groups=layer.groups
        )
        return {"kernel": kernel, "bias": bias}


RULES: tuple[LinearRule, ...] = (
    DenseRule(),
    ConvTransposeRule(),
    DepthwiseConvRule(),
    SeparableConvRule(),
    ConvRule(),
)


def rule_for(layer) -> LinearRule | None:
    """The rule for `layer`, or `None` if it is not a linear layer we fold into."""
    for rule in RULES:
        if rule.matches(layer):
            return rule
    return None
