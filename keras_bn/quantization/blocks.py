"""`QuantizedBlock`: a linear layer, its folded BN and fused activation, trained in int8 simulation."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_bn import ops as bn_ops
from keras_bn.defaults import WEIGHT_GRANULARITIES
from keras_bn.layers import BatchNormalization
from keras_bn.quantization.activation_quantizer import ActivationQuantizer
from keras_bn.quantization.quantizers import quantize_weights, weight_scale
from keras_bn.quantization.rules import AffineRule, quantization_rule_for

__all__ = ["FUSED_ACTIVATIONS", "QuantizedBlock"]

#: Activations TFLite fuses into the integer op before it (`fused_activation_function`).
FUSED_ACTIVATIONS = {"relu": tf.nn.relu, "relu6": tf.nn.relu6}


def _layer(value):
    if value is None or isinstance(value, keras.layers.Layer):
        return value
    return keras.saving.deserialize_keras_object(value)


@keras.saving.register_keras_serializable(package="keras_bn")
class QuantizedBlock(keras.layers.Layer):
    """One integer op of the exported file, simulated in float for training.

    A TFLite int8 file computes `Conv → BN → ReLU6` as one `CONV_2D` whose
    weights are the BN-folded kernel `W·γ/σ` rounded to int8, whose bias is
    `β + (b − μ)·γ/σ`, and whose output is rounded to the int8 grid of its
    range. This layer computes exactly that in inference, so the QAT model is
    the simulation of its integer file. In training it follows Jacob et al.
    (2018, §3.2) so that the weights see the rounding they will get while
    the BN keeps learning from batch statistics:

        y = (σ/σ_B) · W_q x + β + γ·(b − μ_B)/σ_B,   W_q = round(W·γ/σ)

    with `μ_B, σ_B` the statistics of the float `W x + b` and `σ` the moving
    standard deviation; the moving statistics keep updating. Once the BN is
    frozen (`freeze_bn_after_steps`, or `freeze_bn_statistics(model)`)
    training uses the moving statistics, `y = W_q x + β + (b − μ)·γ/σ`, the
    inference map. The gradient before freezing is the float network's: the
    BN's analytic backward pass (`keras_bn.ops`) through the statistics, the
    rounding error a constant (straight-through); after freezing it flows
    through the rounded weights, straight through the rounding.

    With `linear=None` the block is a BN that had no linear layer to fold
    into: `x·γ/σ` with `γ/σ` quantized like a kernel (a 1×1 depthwise
    convolution in the file). With `batchnorm=None` it is a linear layer
    without BN (a Dense head).

    Args:
        linear: the linear layer (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D,
            SeparableConv1D/2D, Conv1D/2D/3DTranspose), built or not, with a
            linear activation; its weights are trained.
        batchnorm: a `keras_bn.BatchNormalization` over the linear layer's
            output channels, or `None`.
        activation: `None`, `"relu"` or `"relu6"`, applied before the output
            is rounded (TFLite fuses it).
        granularity: `"per_channel"` or `"per_tensor"` weight scales.
        freeze_bn_after_steps: freeze the BN statistics after this many
            training steps of this block; `None` never freezes on its own.
        quantize_output: round the output onto its own tracked range
            (`False` where the consumer sets the scale: a concatenation).
        range_momentum: momentum of the tracked activation ranges.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: the linear layer's input (channels_last).
        training: train-mode (batch statistics until frozen, ranges tracked).
    """

    def __init__(
        self,
        linear=None,
        batchnorm=None,
        activation: str | None = None,
        granularity: str = "per_channel",
        freeze_bn_after_steps: int | None = None,
        quantize_output: bool = True,
        range_momentum: float = 0.99,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.linear = _layer(linear)
        self.batchnorm = _layer(batchnorm)
        self._check(activation, granularity, freeze_bn_after_steps)
        self.activation = activation
        self.granularity = granularity
        self.freeze_bn_after_steps = freeze_bn_after_steps
        self.quantize_output = bool(quantize_output)
        self.range_momentum = float(range_momentum)
        self.rule = (
            AffineRule() if self.linear is None else quantization_rule_for(self.linear)
        )
        self.output_quantizer = (
            ActivationQuantizer(
                range_momentum, name="output_quantizer", dtype="float32"
            )
            if self.quantize_output
            else None
        )
        self.between_quantizer = (
            ActivationQuantizer(
                range_momentum, name="between_quantizer", dtype="float32"
            )
            if len(self.rule.kernel_names) > 1
            else None
        )

    def _check(self, activation, granularity, freeze_after) -> None:
        if self.linear is None and self.batchnorm is None:
            raise ValueError(
                f"Layer '{self.name}': give a `linear` layer, a `batchnorm` or "
                "both. Received: linear=None, batchnorm=None"
            )
        if self.linear is not None and quantization_rule_for(self.linear) is None:
            raise TypeError(
                f"Layer '{self.name}': `linear` must be a Dense or convolution "
                f"layer. Received: {type(self.linear).__name__}"
            )
        if self.batchnorm is not None and not isinstance(
            self.batchnorm, BatchNormalization
        ):
            raise TypeError(
                f"Layer '{self.name}': `batchnorm` must be a "
                "keras_bn.BatchNormalization. Received: "
                f"{type(self.batchnorm).__name__}"
            )
        if activation not in (None, *FUSED_ACTIVATIONS):
            raise ValueError(
                f"Layer '{self.name}': `activation` must be None, 'relu' or "
                f"'relu6'. Received: activation={activation!r}"
            )
        if granularity not in WEIGHT_GRANULARITIES:
            raise ValueError(
                f"Layer '{self.name}': `granularity` must be one of "
                f"{WEIGHT_GRANULARITIES}. Received: granularity={granularity!r}"
            )
        if freeze_after is not None and (
            isinstance(freeze_after, bool)
            or not isinstance(freeze_after, int)
            or freeze_after < 0
        ):
            raise ValueError(
                f"Layer '{self.name}': `freeze_bn_after_steps` must be None or a "
                f"non-negative int. Received: freeze_bn_after_steps={freeze_after!r}"
            )

    # -- build ----------------------------------------------------------------

    def build(self, input_shape):
        if self.linear is not None:
            if not self.linear.built:
                self.linear.build(input_shape)
            output_shape = self.linear.compute_output_shape(input_shape)
        else:
            output_shape = input_shape
        channels = output_shape[-1]
        if self.batchnorm is not None and not self.batchnorm.built:
            # Without a linear layer the block computes on (N·H·W, 1, 1, C).
            bn_shape = (None, 1, 1, channels) if self.linear is None else output_shape
            self.batchnorm.build(bn_shape)
        for quantizer in (self.output_quantizer, self.between_quantizer):
            if quantizer is not None and not quantizer.built:
                quantizer.build(None)
        self._channels = channels
        # Scalar state, zero at first: training steps taken, whether the BN is
        # frozen, and the step of the int8 grid of the block's input (set by
        # `keras_bn.quantization.sync_input_steps`; 0 until then).
        for name in ("steps", "bn_frozen", "input_step"):
            state = self.add_weight(
                shape=(),
                name=name,
                initializer="zeros",
                trainable=False,
                autocast=False,
            )
            setattr(self, name, state)

    def compute_output_shape(self, input_shape):
        if self.linear is None:
            return input_shape
        return self.linear.compute_output_shape(input_shape)

    # -- the computation --------------------------------------------------------

    def call(self, inputs, training=None):
        training = bool(training) and self.trainable
        x = self.rule.prepare(tf.cast(inputs, self._dtype()))
        if self.batchnorm is None:
            y = self._linear_only(x, training)
        elif training:
            y = self._train(x, training)
            self.steps.assign_add(1.0)
        elif self._population_pass():
            y = self._train(x, training)
        else:
            y = self._folded(x, training)
        if self.activation is not None:
            y = FUSED_ACTIVATIONS[self.activation](y)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, training=training)
        return tf.cast(self.rule.restore(y, inputs), self.compute_dtype)

    def _dtype(self) -> tf.DType:
        # float32 whatever the policy (statistics and rounding need it);
        # float64 for a float64 layer (the gradient checks).
        return bn_ops.statistics_dtype(tf.as_dtype(self.compute_dtype))

    def _value(self, variable) -> tf.Tensor:
        return tf.cast(tf.convert_to_tensor(variable), self._dtype())

    def is_frozen(self) -> tf.Tensor:
        """Whether training uses the moving statistics now (a boolean tensor)."""
        frozen = self.bn_frozen > 0
        if self.freeze_bn_after_steps is not None:
            frozen = frozen | (self.steps >= float(self.freeze_bn_after_steps))
        return frozen

    def _kernels(self) -> dict:
        if self.linear is None:
            return {"kernel": tf.ones((self._channels,), self._dtype())}
        return {k: self._value(v) for k, v in self.rule.kernels(self.linear).items()}

    def _bias(self):
        bias = None if self.linear is None else self.rule.bias(self.linear)
        if bias is None:
            return tf.zeros((self._channels,), self._dtype())
        return self._value(bias)

    def _quantized_output(self, x, kernels, training):
        """`W_q x`: every kernel rounded; the separable inner tensor too."""
        quantized = {
            name: quantize_weights(
                kernel, self.rule.reduce_axes(name, kernel.shape.rank), self.granularity
            )
            for name, kernel in kernels.items()
        }

        def between(t):
            return self.between_quantizer(t, training=training)

        return self.rule.apply(self.linear, x, quantized, between=between)

    def _linear_only(self, x, training):
        kernels = self._kernels()
        bias = self._rounded_bias(self._bias(), kernels)
        return self._quantized_output(x, kernels, training) + bias

    def _rounded_bias(self, bias, kernels):
        """`bias` on the int32 grid of the file, `s_in·s_w` per output channel.

        TFLite and onnxruntime add the bias in the accumulator's scale, the
        input step times the weight step. For a per-tensor kernel whose
        channels' ranges spread (depthwise, BN folded) that grid can be
        coarser than the output's own, so the simulation rounds it too
        (straight through). Left unrounded until the input step is known.
        """
        name = self.rule.output_kernel
        kernel = kernels[name]
        axes = self.rule.reduce_axes(name, kernel.shape.rank)
        weight_step = tf.reshape(weight_scale(kernel, axes, self.granularity), (-1,))
        if self.between_quantizer is not None:
            quantizer = self.between_quantizer
            input_step = (quantizer.range_max - quantizer.range_min) / 255.0
        else:
            input_step = self.input_step
        input_step = tf.cast(tf.convert_to_tensor(input_step), self._dtype())
        step = tf.stop_gradient(input_step * weight_step)
        safe = tf.where(step > 0, step, tf.ones_like(step))
        rounded = tf.round(bias / safe) * safe
        return tf.where(step > 0, bias + tf.stop_gradient(rounded - bias), bias)

    def _bn_parameters(self):
        bn = self.batchnorm
        ones = tf.ones((self._channels,), self._dtype())
        gamma = self._value(bn.gamma) if bn.scale else ones
        beta = self._value(bn.beta) if bn.center else tf.zeros_like(ones)
        return gamma, beta

    def _with_scale(self, kernels, scale):
        name = self.rule.output_kernel
        return {**kernels, name: self.rule.scale_output(kernels[name], scale)}

    def _folded(self, x, training):
        """The inference map: `W_q x + β + (b − μ)·γ/σ` with moving statistics."""
        gamma, beta = self._bn_parameters()
        moving_mean, moving_std = self._moving_statistics()
        scale = gamma / moving_std
        kernels = self._with_scale(self._kernels(), scale)
        shift = self._rounded_bias(beta + (self._bias() - moving_mean) * scale, kernels)
        return self._quantized_output(x, kernels, training) + shift

    def _moving_statistics(self):
        bn = self.batchnorm
        mean = self._value(bn.moving_mean)
        return mean, tf.sqrt(self._value(bn.moving_variance) + bn.epsilon)

    def _population_pass(self) -> bool:
        """Whether `keras_bn.population_statistics` is recording this block's BN.

        The estimate replaces the BN's `call` on the instance for its pass
        (`keras_bn.keras_adapter.call_replaced`) and runs the model in
        inference mode; the block then feeds its BN the float `W x + b` on
        batch statistics, as training does, so that the pass records them
        (Algorithm 2), without counting a training step or moving a range.
        """
        return self.batchnorm is not None and "call" in vars(self.batchnorm)

    def _train(self, x, training):
        """Jacob et al.'s correction until frozen, the inference map after.

        Both share `W_q x` (the kernel is folded with the moving σ either
        way); the float `W x + b` goes through the BN layer for its
        statistics, its analytic gradient and its moving-average update,
        which is undone once frozen. A `tf.cond` cannot hold the BN's
        `tf.custom_gradient` (its closure is not captured across the branch,
        TF 2.21), so the frozen state selects with `tf.where`.
        """
        bn = self.batchnorm
        gamma, beta = self._bn_parameters()
        moving_mean, moving_std = self._moving_statistics()
        old_statistics = (
            tf.convert_to_tensor(bn.moving_mean),
            tf.convert_to_tensor(bn.moving_variance),
        )
        scale = gamma / moving_std
        kernels = self._kernels()
        bias = self._bias()
        folded_kernels = self._with_scale(kernels, scale)
        quantized = self._quantized_output(x, folded_kernels, training=training)
        z = self.rule.apply(self.linear, x, kernels) + bias
        stats = bn_ops.moments(z, list(range(z.shape.rank - 1)))
        batch_mean = tf.reshape(stats.mean, (-1,))
        batch_std = tf.sqrt(tf.reshape(stats.variance, (-1,)) + bn.epsilon)
        corrected = (moving_std / batch_std) * quantized + (
            beta + gamma * (bias - batch_mean) / batch_std
        )
        # The float BN: its analytic gradient, its moving-statistics update.
        normalized = tf.cast(bn(z, training=True), self._dtype())
        corrected = normalized + tf.stop_gradient(corrected - normalized)
        folded = quantized + self._rounded_bias(
            beta + (bias - moving_mean) * scale, folded_kernels
        )
        frozen = self.is_frozen()
        for variable, old in zip(
            (bn.moving_mean, bn.moving_variance), old_statistics, strict=True
        ):
            variable.assign(tf.where(frozen, old, tf.convert_to_tensor(variable)))
        return tf.where(frozen, folded, corrected)

    # -- config ---------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "linear": None
                if self.linear is None
                else keras.saving.serialize_keras_object(self.linear),
                "batchnorm": None
                if self.batchnorm is None
                else keras.saving.serialize_keras_object(self.batchnorm),
                "activation": self.activation,
                "granularity": self.granularity,
                "freeze_bn_after_steps": self.freeze_bn_after_steps,
                "quantize_output": self.quantize_output,
                "range_momentum": self.range_momentum,
            }
        )
        return config
