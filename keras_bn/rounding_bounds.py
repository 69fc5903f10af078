"""How far two floating-point evaluations of the same network may drift apart.

Folding (`fold_batchnorm`'s verification) and float32 export check a rewritten
model against the original with a bound this module computes from the model's
structure and dtype policies, never tuned by trial. The bound is on the
scale-relative error `max|y_new - y| / max|y|`:

    tolerance = 4 · √(2u² Σ_l n_l + (2/3) Σ_{l reduced} u_{c,l}² (1 + w_l))

with `u = 2**-24`, `n_l` the number of terms layer `l` sums per output
(`reduction_length`), `u_c` the unit roundoff of a layer computing in float16
or bfloat16 and `w_l = 1` for a layer with a weight matrix. A float32 model
gets `4 · u · √(2 Σ_l n_l)` (ResNet50 at 64×64: `8.0e-5`). The derivation,
measurements and what the model does not cover: docs/error-model.md.
Quantized exports add their terms in `keras_bn.export.parity_bounds`.
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
