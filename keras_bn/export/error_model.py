"""How far an exported model may drift from its Keras original, and why.

Every parity tolerance in `keras_bn.export` is computed here from the model's
structure; none is tuned by trial. Errors are measured *relative to the scale of
the output*, `max|y_file - y_keras| / max|y_keras|`: element-wise relative error
is meaningless where an output crosses zero.

**float32 (Keras model vs folded model vs LiteRT vs onnxruntime).** All four
compute the same real-valued function; they differ only in rounding. That part
of the model is `keras_bn.error_model` (items 1–6 there: reduction order,
propagation, elementwise layers, folding, the maximum over elements, and
reduced-precision compute policies), shared with the fold's verification:

   `tolerance_float32 = 4 · u · √(2 · Σ_l n_l)`,  `u = 2**-24`

and `keras_bn.error_model.rounding_tolerance`, which adds the rounding of a
`mixed_float16` / `mixed_bfloat16` policy (export itself takes float32
models only: `keras_bn.export.prepare`). The closest measured case is
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

*The data rule.* An int8 file is tuned to the ranges
its calibration samples reached and saturates beyond them. Parity is therefore
judged on data the calibration did not see: `x_test` (`inputs=`,
`evaluation=`) when there is one, else every fifth sample of the calibration
data, held out from calibration (`keras_bn.export.prepare.split_int8_data`).
`to_tflite`, `export_files` and `check_parity(..., calibration=)` all apply
that one rule, so an export and a later check of the same file on the same
data judge the same samples and give one verdict. Judging on the calibration
samples themselves (as before) hid the errors that matter: a small digits CNN
passed at `1.1e-2` on `x_train` and failed at `4.5e-2` on `x_test`.

*The spread across held-out samples.* The bound must cover the worst of the
held-out samples, not a typical one. Calibration sets each range to the
extremes of its `n` samples; a held-out sample exceeds one of them with
probability `1/(n + 1)` (order statistics of exchangeable samples), and then
that tensor saturates. The same CNN calibrated on 500 samples had that one
`4.5e-2` outlier among 360 held-out digits (mean `6.2e-3`, standard deviation
`2.7e-3`: 14 of them); calibrated on all 1,437 the worst held-out sample was
`1.2e-2`, within the bound of `2.2e-2`. So calibration takes every sample
given, up to 2,000 evenly spaced (`keras_bn.export.tflite`), and the bound
keeps the formula above. Measured on 360 held-out digits: the demo CNN's
worst sample `1.5e-2` of `2.9e-2`; nine one-block CNNs (flattened, pooled
with softmax, pooled logits; three seeds each) `8.4e-3` to `1.9e-2` of
`2.2e-2`. The closest is a softmax head whose probabilities stay near 0.1:
TFLite fixes an int8 softmax's output step at `1/256`, which alone is
`1.6e-2` of an output scale of 0.12 (see "Not covered"). On data outside the calibration distribution int8 saturates
and no useful bound exists. For classifiers the report also gives the top-1
agreement with the float model, which is what a user checks.

**Not covered.** Besides what `keras_bn.error_model` leaves out (reduced-
precision math modes, networks whose activations grow from layer to layer):
a final softmax turns an absolute logit error `δ` into a probability error of
at most `2δ·max p`, i.e. it multiplies the scale-relative error by up to
`2·max|z|`: the bound covers softmax outputs whose logits stay of order one
(untrained or lightly trained networks); for a confident classifier compare
the logits, or pass `inputs=` drawn from the data so that `max p` is large.
An int8 softmax output is stored in fixed steps of `1/256` whatever its
scale, so a head whose largest probability `p` is small carries up to
`1/(512·p)` of rounding relative to its scale: compare the logits of an
untrained or unsure classifier.
"""

from __future__ import annotations

import math

import keras

from keras_bn.error_model import (
    TAIL_FACTOR,
    float32_tolerance,
    has_weight_matrix,
    leaf_layers,
    reduction_length,
    rounding_tolerance,
)

__all__ = [
    "float16_tolerance",
    "float32_tolerance",
    "int8_tolerance",
    "parity_tolerance",
    "reduction_length",
    "rounding_tolerance",
    "weighted_layer_count",
]

FLOAT16_UNIT_ROUNDOFF = 2.0**-11
# Relative standard deviation of one int8-quantized tensor: a uniform rounding
# over 255 steps of a range twice the output's scale.
INT8_RELATIVE_STD = 2.0 / (255.0 * math.sqrt(12.0))


def weighted_layer_count(model: keras.Model) -> int:
    """Number of layers whose weights quantization rounds (the `L` above)."""
    return sum(1 for layer in leaf_layers(model) if has_weight_matrix(layer))


def float16_tolerance(model: keras.Model) -> float:
    """The rounding bound plus `4 · u16 · √(L / 3)` for float16 weights."""
    layers = weighted_layer_count(model)
    return rounding_tolerance(model) + TAIL_FACTOR * FLOAT16_UNIT_ROUNDOFF * math.sqrt(
        layers / 3.0
    )


def int8_tolerance(model: keras.Model) -> float:
    """`4 · 2.3e-3 · √(2(L + 1))`: the int8 parity bound on held-out data."""
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
        return rounding_tolerance(model)
    if quantize == "float16":
        return float16_tolerance(model)
    if quantize == "int8":
        return int8_tolerance(model)
    raise ValueError(
        f"`quantize` must be None, 'float16' or 'int8'. Received: quantize={quantize!r}"
    )
