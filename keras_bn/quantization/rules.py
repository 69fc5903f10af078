"""How each family of linear layers computes with a quantized, BN-folded kernel.

`keras_bn.folding.rules` says where a family's channels are and how a BN folds
into its weights in NumPy. Quantization-aware training needs the same fold
inside the training graph, in TensorFlow, on every step: one small class per
family, extending the folding rule, answers

- which kernels the layer has and, for each, the axes that are *not* its
  output channel (a per-channel int8 scale is taken over them, the way
  TFLite lays out that kernel);
- how a per-output-channel scale multiplies the kernel that produces the
  output (`γ/σ` of the folded BN);
- how the layer computes `W x` with given kernels (no bias, no activation).

`AffineRule` stands for a BN that has no linear layer to fold into: its
per-channel `x · scale` is a 1×1 depthwise convolution, the one TFLite int8
op that multiplies each channel by its own quantized factor.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf
from keras import ops

from keras_bn.folding import rules as folding_rules

__all__ = ["AffineRule", "QuantizationRule", "quantization_rule_for"]


class QuantizationRule:
    """What a quantization-aware block needs to know about its linear layer."""

    #: The kernels to quantize, in `get_weights()` order.
    kernel_names: tuple[str, ...] = ("kernel",)
    #: The kernel the output channels come from (the BN scale goes there).
    output_kernel = "kernel"

    def unsupported_reason(self, layer) -> str | None:
        """Why a quantization-aware block cannot stand for `layer`, or `None`."""
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            return (
                f"'{layer.name}' is channels_first; TFLite's integer kernels are "
                "channels_last, so quantize a channels_last model"
            )
        return None

    def tflite_float_op(self, layer) -> str | None:
        """The TFLite op of `layer` that has no int8 kernel, or `None`."""
        return None

    def reduce_axes(self, name: str, rank: int) -> tuple[int, ...]:
        """Every axis of kernel `name` (of rank `rank`) but its output channel's."""
        return tuple(range(rank - 1))

    def scale_output(self, kernel: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        """`kernel` with output channel `c` multiplied by `scale[c]`."""
        return kernel * scale

    def kernels(self, layer) -> dict[str, tf.Tensor]:
        """The layer's current kernels, by name."""
        return {name: getattr(layer, name) for name in self.kernel_names}

    def bias(self, layer):
        """The layer's bias variable, or `None`."""
        return layer.bias if layer.use_bias else None

    def apply(self, layer, x, kernels: dict, between: Callable | None = None):
        """`W x` of `layer` with `kernels`; `between` rounds an inner tensor."""
        return layer.convolution_op(x, kernels["kernel"])

    def prepare(self, x):
        """The block's input as the layer computes on it."""
        return x

    def restore(self, y, x):
        """The block's output `y` in the layer's output shape (`x` its input)."""
        return y


class DenseRule(QuantizationRule, folding_rules.DenseRule):
    def apply(self, layer, x, kernels, between=None):
        return ops.matmul(x, kernels["kernel"])


class ConvRule(QuantizationRule, folding_rules.ConvRule):
    def tflite_float_op(self, layer):
        # TF 2.21's converter keeps CONV_3D in float32, with its bias ADD.
        return "CONV_3D" if layer.rank == 3 else None

    def apply(self, layer, x, kernels, between=None):
        if layer.padding == "causal":
            # As keras.layers.Conv1D.call: pad on the left, then "valid".
            x = ops.pad(x, layer._compute_causal_padding())
            return ops.conv(
                x,
                kernels["kernel"],
                strides=layer.strides,
                padding="valid",
                data_format=layer.data_format,
                dilation_rate=layer.dilation_rate,
            )
        return layer.convolution_op(x, kernels["kernel"])


class DepthwiseConvRule(QuantizationRule, folding_rules.DepthwiseConvRule):
    def reduce_axes(self, name, rank):
        return tuple(range(rank - 2))

    def scale_output(self, kernel, scale):
        return kernel * tf.reshape(scale, kernel.shape[-2:])

    def apply(self, layer, x, kernels, between=None):
        return ops.depthwise_conv(
            x,
            kernels["kernel"],
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )


class SeparableConvRule(QuantizationRule, folding_rules.SeparableConvRule):
    kernel_names = ("depthwise_kernel", "pointwise_kernel")
    output_kernel = "pointwise_kernel"

    def reduce_axes(self, name, rank):
        if name == "depthwise_kernel":
            return tuple(range(rank - 2))
        return tuple(range(rank - 1))

    def apply(self, layer, x, kernels, between=None):
        # TFLite runs a separable convolution as DEPTHWISE_CONV_2D then
        # CONV_2D, with the tensor between them in int8 too.
        y = ops.depthwise_conv(
            x,
            kernels["depthwise_kernel"],
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
        if between is not None:
            y = between(y)
        return ops.conv(
            y,
            kernels["pointwise_kernel"],
            strides=1,
            padding="valid",
            data_format=layer.data_format,
        )


class ConvTransposeRule(QuantizationRule, folding_rules.ConvTransposeRule):
    def tflite_float_op(self, layer):
        # As CONV_3D: float32 only in TF 2.21's converter.
        return "CONV_3D_TRANSPOSE" if layer.rank == 3 else None

    def reduce_axes(self, name, rank):
        return (*range(rank - 2), rank - 1)

    def scale_output(self, kernel, scale):
        return kernel * tf.reshape(scale, (-1, 1))

    def apply(self, layer, x, kernels, between=None):
        return ops.conv_transpose(
            x,
            kernels["kernel"],
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )


class AffineRule(QuantizationRule):
    """A BN with no linear neighbour: `x · kernel` per channel, kernel 1 before folding.

    The kernel is a vector of ones of the channel count, so the folded kernel
    is the BN's `γ/σ`, quantized like any kernel (per channel it is exact:
    each channel's one weight is its own 127 steps).
    """

    def kernels(self, layer):
        raise TypeError("AffineRule has no layer; the block holds its kernel")

    def bias(self, layer):
        return None

    def reduce_axes(self, name, rank):
        return ()

    def apply(self, layer, x, kernels, between=None):
        kernel = kernels["kernel"]
        return ops.depthwise_conv(x, ops.reshape(kernel, (1, 1, kernel.shape[0], 1)))

    def prepare(self, x):
        # Batch and spatial axes flattened: one 1×1 depthwise convolution
        # (one int8 TFLite op, its bias and rounding included) whatever the
        # rank; `restore` reshapes once the output is rounded.
        return ops.reshape(x, (-1, 1, 1, x.shape[-1]))

    def restore(self, y, x):
        return ops.reshape(y, (-1, *x.shape[1:]))


RULES: tuple[QuantizationRule, ...] = (
    DenseRule(),
    ConvTransposeRule(),
    DepthwiseConvRule(),
    SeparableConvRule(),
    ConvRule(),
)


def quantization_rule_for(layer) -> QuantizationRule | None:
    """The rule for `layer` (a linear layer keras_bn folds into), or `None`."""
    if isinstance(layer, keras.layers.Layer):
        for rule in RULES:
            if rule.matches(layer):
                return rule
    return None
