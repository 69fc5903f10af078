"""How far two floating-point evaluations of the same network may drift apart.

Folding (`keras_bn.folding`) and export (`keras_bn.export`) both replace a
network by another that computes the same real-valued function, and both
check the replacement against the original. This module derives the bound
they check against from the model's structure and its dtype policies; none is
tuned by trial. Quantization (float16 weights, int8) adds its own terms in
`keras_bn.export.error_model`, which builds on this one.

Errors are measured *relative to the scale of the output*,
`max|y_new - y_keras| / max|y_keras|`: element-wise relative error is
meaningless where an output crosses zero. Let `u = 2**-24` be the float32
unit roundoff.

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
   logits: about `1e-6`, one to two orders below.
6. *Reduced-precision compute (`mixed_float16`, `mixed_bfloat16`).* Under a
   mixed policy a layer keeps float32 variables but casts its weights and its
   inputs to the compute dtype (unit roundoff `u_c`: `2**-11` for float16,
   `2**-8` for bfloat16) and rounds its output to it. The sums are taken to
   accumulate in float32 (oneDNN's reduced-precision kernels do), so item 1
   is unchanged; the measurements below, 7× inside the bound, agree. Each
   rounding is a uniform relative error of standard deviation `u_c/√3`:
   rounding a layer's output moves it by `u_c/√3` of its own scale, and
   rounding its weights moves a sum of mixed-sign terms by
   `u_c/√3 · √(Σ (x_i w_i)²) ≈ u_c/√3 · |y|`. Folded and original models round
   independently (the folded kernel `W'` is not the rounded `W` times a
   rounded scale), so each layer `l` with a reduced compute dtype adds
   `2 · (u_c²/3) · (1 + w_l)` to `σ²`, with `w_l = 1` when it has weights:

   `tolerance = 4 · √(2u² Σ_l n_l + (2/3) Σ_{l reduced} u_{c,l}² (1 + w_l))`

   A float32 model keeps `tolerance_float32`. Two Conv2D→BN→ReLU blocks with
   a pooled Dense head (`tests/folding/test_verification_dtypes.py`) get `5.3e-3` under
   `mixed_float16` and `4.2e-2` under `mixed_bfloat16`; their correct folds
   differ by at most `7.3e-4` and `7.5e-3` (five seeds), while a fold that
   ignores the mean, forgets a square root or flips one channel is off by
   `0.39`, `0.15` and `0.31` under every policy. The bound is the precision of the compute dtype itself, not a
   looser check: the issue's `mixed_float16` fold (`2.7e-4` absolute, `6.9e-4`
   relative) failed a fixed float32-sized default of `4.9e-5`.

**Not covered.** Reduced-precision *math modes* of float32 (TF32 on NVIDIA
GPUs, oneDNN's BF16 fpmath) violate item 1, so references are computed on the
CPU. Networks whose activations grow from layer to layer break item 2:
EfficientNetB0 given BN statistics unrelated to its data reaches outputs of
~6e3, and any float32 rewrite of it, folding included, then differs by ~5e-4
relative; the fold's verification or the parity check refuses such a model
rather than write a file that passes by luck.
"""

from __future__ import annotations

import math

import keras

from keras_bn.keras_adapter import iter_layers

FLOAT32_UNIT_ROUNDOFF = 2.0**-24
# Item 6: the unit roundoff of each compute dtype a mixed policy may use
# (float16: 10 stored mantissa bits, bfloat16: 7).
UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": FLOAT32_UNIT_ROUNDOFF,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
# Item 5: a few standard deviations between an error's maximum and its spread.
TAIL_FACTOR = 4.0
# Item 3: four ulp of standard deviation for a layer without a reduction.
ELEMENTWISE_TERMS = 16


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


def has_weight_matrix(layer: keras.layers.Layer) -> bool:
    """Whether `layer` holds a weight of rank ≥ 2 (a kernel that rounding moves)."""
    return any(len(w.shape) >= 2 for w in layer.weights)


def compute_unit_roundoff(layer: keras.layers.Layer) -> float:
    """The unit roundoff of `layer`'s compute dtype (item 6).

    Raises:
        ValueError: For a compute dtype that is not a float type.
    """
    dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    if dtype not in UNIT_ROUNDOFF:
        raise ValueError(
            f"Layer '{layer.name}' computes in {dtype}, which the error model "
            f"does not bound; expected one of {sorted(UNIT_ROUNDOFF)}. "
            f"Received: compute_dtype={dtype!r}"
        )
    return UNIT_ROUNDOFF[dtype]


def float32_variance(model: keras.Model) -> float:
    """`2u² Σ_l n_l`: the accumulation term of items 1–3, in `σ²` units."""
    total = sum(reduction_length(layer) for layer in leaf_layers(model))
    return 2.0 * FLOAT32_UNIT_ROUNDOFF**2 * total


def reduced_precision_variance(model: keras.Model) -> float:
    """`(2/3) Σ u_c² (1 + w_l)` over layers computing below float32 (item 6)."""
    variance = 0.0
    for layer in leaf_layers(model):
        unit = compute_unit_roundoff(layer)
        if unit > FLOAT32_UNIT_ROUNDOFF:
            roundings = 1 + int(has_weight_matrix(layer))
            variance += 2.0 * unit**2 / 3.0 * roundings
    return variance


def float32_tolerance(model: keras.Model) -> float:
    """`4 · u · √(2 · Σ_l n_l)`: the bound for `model` computed in float32."""
    return TAIL_FACTOR * math.sqrt(float32_variance(model))


def rounding_tolerance(model: keras.Model) -> float:
    """The bound on `max|y_new - y| / max|y|` for a rewrite of `model` (item 6).

    Two evaluations of the same function, folded or converted, each under
    `model`'s dtype policies, differ by at most this much relative to the
    output's scale. For a float32 model it is `float32_tolerance(model)`.

    Args:
        model: The model as the user gave it (before folding).

    Returns:
        `4 · √(2u² Σ_l n_l + (2/3) Σ u_c² (1 + w_l))`.

    Raises:
        ValueError: If a layer computes in a dtype other than float64,
            float32, float16 or bfloat16.

    Example:

    >>> keras.mixed_precision.set_global_policy("mixed_float16")  # doctest: +SKIP
    >>> rounding_tolerance(model) > float32_tolerance(model)  # doctest: +SKIP
    True
    """
    variance = float32_variance(model) + reduced_precision_variance(model)
    return TAIL_FACTOR * math.sqrt(variance)
