"""How far an exported model may drift from its Keras original, and why.

Every parity tolerance in `keras_bn.export` is computed here from the model's
structure; none is tuned by trial. Errors are measured *relative to the scale of
the output*, `max|y_file - y_keras| / max|y_keras|`: element-wise relative error
is meaningless where an output crosses zero.

**float32 (Keras model vs folded model vs LiteRT vs onnxruntime).** All four
compute the same real-valued function; they differ only in rounding. Let
`u = 2**-24` be the float32 unit roundoff.

1. *Reduction order.* A convolution or matrix product sums `n` terms per output
   (`n` = kernel height × width × input channels / groups, or the input width of
   a Dense layer). TensorFlow (oneDNN), XNNPACK and MLAS tile, vectorise and
   fuse (FMA) these sums differently. For terms of mixed sign the partial sums
   `s_k` walk randomly, each addition contributes an independent rounding error
   of at most `u|s_k|`, and the accumulated error has a standard deviation of
   about `u·√(Σ s_k²)/√3 ≈ u·√(n/6)·|y|`, so at most `u·√n` relative to the
   output's own scale. Two implementations each make such an error: the
   difference has variance `2u²n`.
2. *Propagation.* Layers of these networks keep their activations at a stable
   scale (that is what BN and He initialisation are for) and ReLU, ReLU6, max
   pooling and additions are 1-Lipschitz, so a relative perturbation reaches the
   output with a gain of about one; independent layers add in variance:
   `σ² ≈ 2u² Σ_l n_l`.
3. *Elementwise layers.* Additions and ReLU round correctly (±u/2). `exp`,
   `sigmoid`, `tanh` and swish are evaluated by polynomial approximations
   accurate to a few ulp; every layer without a reduction is charged `n = 16`
   (four ulp of standard deviation), which also covers the three roundings of
   an unfolded BN (`x·inv_std`, `+ offset`, the rsqrt).
4. *Folding.* `W' = W·γ/√(σ²+ε)` and `b' = (b−μ)·γ/√(σ²+ε)+β` are computed in
   float64 and rounded once to float32: a relative perturbation of at most
   `u/2` per weight, i.e. the same order as one more addition in the sum of
   item 1. Folding does not change the bound; the folded and unfolded exports
   are held to the same tolerance.
5. *Maximum over elements.* Both the largest error and the largest output lie
   a few standard deviations out, so their ratio stays near `σ`; a factor of 4
   covers non-Gaussian tails (ReLU outputs, sparse logits).

   `tolerance_float32 = 4 · u · √(2 · Σ_l n_l)`

   At 64×64 inputs ResNet50 `Σ n_l ≈ 5.7e4` gives `8.0e-5`, EfficientNetB0
   `5.4e-5`, MobileNetV2 (96×96) `3.7e-5`, a Conv2D→BN→ReLU block `≈ 1e-6`;
   global average pooling grows with the input (EfficientNetB0's squeeze-and-
   excite blocks pool whole feature maps: `7.2e-5` at 224×224). Measured on
   logits: about `1e-6`, one to two orders below. The closest measured case is
   EfficientNetB0 at 224×224 with its softmax head, `3.9e-5` of `7.2e-5`: the
   softmax amplification described under "Not covered".

**float16 weights (TFLite `quantize="float16"`).** Each weight is rounded to
float16 (unit roundoff `u16 = 2**-11`, a uniform relative error of standard
deviation `u16/√3`); LiteRT dequantizes them and computes in float32. A layer's
output then moves by `Σ x_i w_i δ_i`, whose standard deviation is
`u16/√3 · √(Σ (x_i w_i)²) ≈ u16/√3 · |y|` for terms of mixed sign, independent
of `n`. Over `L` weighted layers, in variance:

   `tolerance_float16 = tolerance_float32 + 4 · u16 · √(L / 3)`

(ResNet50, `L = 54`: `8.4e-3`; MobileNetV2 `8.2e-3`; EfficientNetB0, `L = 82`:
`1.03e-2`. Measured: about `2e-4`.)

**int8 (full-integer post-training quantization).** Every activation is rounded
to one of 256 levels spread over its calibrated range `R` (step `R/255`,
standard deviation `R/(255·√12)`) and every weight channel to 255 levels of its
own range. With activations calibrated so that the output's range is about
`2·max|y|`, each quantized tensor adds a relative error of standard deviation
`2/(255·√12) ≈ 2.3e-3`, and weight rounding adds as much again per layer; over
`L` weighted layers with their activations:

   `tolerance_int8 = 4 · 2.3e-3 · √(2·(L + 1))`

This assumes the inputs compared on come from the calibration distribution
(`to_tflite` uses `representative_data` for its parity check); on data outside
it, int8 saturates and no useful bound exists. For classifiers the report also
gives the top-1 agreement with the float model, which is what a user checks.

**Not covered.** Reduced-precision math modes (TF32 on NVIDIA GPUs, oneDNN's
BF16 fpmath) violate item 1, so the Keras reference is always computed on the
CPU. A final softmax turns an absolute logit error `δ` into a probability
error of at most `2δ·max p`, i.e. it multiplies the scale-relative error by up
to `2·max|z|`: the bound covers softmax outputs whose logits stay of order one
(untrained or lightly trained networks); for a confident classifier compare
the logits, or pass `inputs=` drawn from the data so that `max p` is large.
Networks whose activations grow from layer to layer break item 2: EfficientNetB0
given BN statistics unrelated to its data reaches outputs of ~6e3, and any
float32 rewrite of it, folding included, then differs by ~5e-4 relative; the
fold's verification or the parity check refuses such a model rather than
write a file that passes by luck.
"""

from __future__ import annotations

import math

import keras

from keras_bn.keras_adapter import iter_layers

FLOAT32_UNIT_ROUNDOFF = 2.0**-24
FLOAT16_UNIT_ROUNDOFF = 2.0**-11
# Item 5: a few standard deviations between an error's maximum and its spread.
TAIL_FACTOR = 4.0
# Item 3: four ulp of standard deviation for a layer without a reduction.
ELEMENTWISE_TERMS = 16
# Relative standard deviation of one int8-quantized tensor: a uniform rounding
# over 255 steps of a range twice the output's scale.
INT8_RELATIVE_STD = 2.0 / (255.0 * math.sqrt(12.0))


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every computing layer of `model`, nested models opened, inputs skipped."""
    return [
        layer
        for layer in iter_layers(model)
        if not isinstance(layer, keras.Model | keras.layers.InputLayer)
    ]


def reduction_length(layer: keras.layers.Layer) -> int:
    """Number of terms summed per output element of `layer` (item 1).

    Layers without a reduction return `ELEMENTWISE_TERMS` (item 3).
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D | keras.layers.DepthwiseConv1D):
        return max(math.prod(layer.kernel.shape[:-2]), ELEMENTWISE_TERMS)
    if isinstance(layer, keras.layers.SeparableConv2D | keras.layers.SeparableConv1D):
        depthwise = math.prod(layer.depthwise_kernel.shape[:-2])
        pointwise = math.prod(layer.pointwise_kernel.shape[:-1])
        return depthwise + pointwise
    if isinstance(layer, keras.layers.Conv2DTranspose | keras.layers.Conv1DTranspose):
        # Kernel layout (..., filters, input channels): every input channel and
        # at most every kernel tap contributes to one output element.
        return math.prod(layer.kernel.shape[:-2]) * layer.kernel.shape[-1]
    kernel = getattr(layer, "kernel", None)
    if kernel is not None and len(kernel.shape) >= 2:
        # Grouped convolutions already store (..., in_channels / groups, filters).
        return math.prod(kernel.shape[:-1])
    if isinstance(
        layer,
        keras.layers.GlobalAveragePooling1D
        | keras.layers.GlobalAveragePooling2D
        | keras.layers.GlobalAveragePooling3D,
    ):
        spatial = (
            layer.input.shape[1:-1]
            if layer.data_format == "channels_last"
            else layer.input.shape[2:]
        )
        return max(math.prod(spatial), ELEMENTWISE_TERMS)
    if isinstance(
        layer,
        keras.layers.AveragePooling1D
        | keras.layers.AveragePooling2D
        | keras.layers.AveragePooling3D,
    ):
        return max(math.prod(layer.pool_size), ELEMENTWISE_TERMS)
    return ELEMENTWISE_TERMS


def weighted_layer_count(model: keras.Model) -> int:
    """Number of layers whose weights quantization rounds (the `L` above)."""
    return sum(
        1
        for layer in leaf_layers(model)
        if any(len(w.shape) >= 2 for w in layer.weights)
    )


def float32_tolerance(model: keras.Model) -> float:
    """`4 · u · √(2 · Σ_l n_l)`: the float32 parity bound for `model`."""
    total = sum(reduction_length(layer) for layer in leaf_layers(model))
    return TAIL_FACTOR * FLOAT32_UNIT_ROUNDOFF * math.sqrt(2.0 * total)


def float16_tolerance(model: keras.Model) -> float:
    """The float32 bound plus `4 · u16 · √(L / 3)` for float16 weights."""
    layers = weighted_layer_count(model)
    return float32_tolerance(model) + TAIL_FACTOR * FLOAT16_UNIT_ROUNDOFF * math.sqrt(
        layers / 3.0
    )


def int8_tolerance(model: keras.Model) -> float:
    """`4 · 2.3e-3 · √(2(L + 1))`: the int8 parity bound on calibration data."""
    layers = weighted_layer_count(model)
    return TAIL_FACTOR * INT8_RELATIVE_STD * math.sqrt(2.0 * (layers + 1))


def parity_tolerance(model: keras.Model, quantize: str | None = None) -> float:
    """The scale-relative parity tolerance for exporting `model`.

    Args:
        model: The Keras model as the user gave it (before folding).
        quantize: `None` (float32), `"float16"` or `"int8"`.

    Returns:
        The bound on `max|y_file - y_keras| / max|y_keras|` derived above.

    Raises:
        ValueError: For any other `quantize`.
    """
    if quantize is None:
        return float32_tolerance(model)
    if quantize == "float16":
        return float16_tolerance(model)
    if quantize == "int8":
        return int8_tolerance(model)
    raise ValueError(
        f"`quantize` must be None, 'float16' or 'int8'. Received: quantize={quantize!r}"
    )
