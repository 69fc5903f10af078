"""Every numerical tolerance the tests use, each with where it comes from.

Import the named constant you need; a test never writes a bare tolerance.
"""

# --- layer and ops (tests/layer/) -----------------

# tf.test.compute_gradient's central differences in float64 (step ~1e-3 scaled
# by the input) leave a truncation error of order h² · |f'''| ≈ 1e-7 on
# unit-scale data; the issue asks for ≤ 1e-6.
GRADIENT_CHECK_FLOAT64 = 1e-6

# Two float32 implementations of the same formula differ by reduction order:
# a sum of m terms carries a relative error of about log2(m) · 2^-24 ≈ 1e-6
# for the batch sizes used; the issue asks for ≤ 1e-5 relative.
PARITY_FLOAT32_RTOL = 1e-5
PARITY_FLOAT32_ATOL = 1e-6

# The output of float16 / bfloat16 compute is rounded once at the end: half a
# unit in the last place of a value of order 1 (2^-11 for float16, 2^-8 for
# bfloat16), doubled for the rounding of the input itself.
HALF_PRECISION_ATOL = {"float16": 2e-3, "bfloat16": 1.6e-2}

# Mean 1e4, std 0.1 in float32, compared with float64 statistics of the same
# float32 values. The bound for the variance is 1e-3 relative (a raw
# E[x²] − E[x]² misses it by orders of magnitude). For the normalized output a
# shifted two-pass computation loses a few ulp of x̂ (|x̂| ≲ 4, ulp 4.8e-7):
# measured 4.6e-7; Keras' `x·inv + (β − mean·inv)` under XLA measured 1.5e-2.
LARGE_MEAN_VARIANCE_RTOL = 1e-3
LARGE_MEAN_OUTPUT_ATOL = 1e-5

# A quantity that is zero in exact arithmetic, relative to the size of the
# terms it cancels from: a float64 sum over a few hundred values.
ZERO_GRADIENT_RTOL = 1e-6

# --- export (tests/export/) ----------------------------------------
# The parity requirements, checked against keras_bn.export.parity_bounds,
# whose derived bounds for every tested model lie below them (asserted in
# tests/export/test_parity_bounds.py): float32 4·u·√(2Σn) is 8.0e-5 for ResNet50,
# the largest tested network; float16 weights add 4·u16·√(L/3), 8.4e-3 for
# ResNet50's 54 weighted layers.
EXPORT_FLOAT32_RTOL = 1e-4
EXPORT_FLOAT16_RTOL = 1e-2
# int8 of the digits CNN: the 1 percentage point of held-out accuracy.
# The error model puts int8 outputs within ~1e-2 of the float scale, which can
# only flip predictions whose top two classes are that close.
EXPORT_INT8_ACCURACY_DROP = 0.01

# --- folding (tests/folding/) --------------------------------------
# Errors are max|folded − original| / max|original| over a whole output: the
# rounding of a float32 layer scales with the largest terms it sums, not with
# each element, so an element-wise relative error is meaningless near zero.
#
# Fold formulas in float64 against a float64 evaluation of the unfolded
# layers: ~1e-16 per operation over sums of at most a few hundred terms.
FOLD_WEIGHTS_FLOAT64_RTOL = 1e-12
# Folded vs original model in float32: one extra rounding per folded weight
# (2^-24 ≈ 6e-8) and a different summation order, over sums of a few hundred
# terms: measured ≤ 3.1e-7 over the pattern models. The issue asks for ≤ 1e-5.
FOLD_FLOAT32_RTOL = 1e-5
# keras.applications (ResNet50, MobileNetV2, EfficientNetB0) with random
# weights: the per-layer error above compounds over 50+ layers (measured
# ≤ 7.2e-7 on the logits); the issue asks for ≤ 1e-4.
FOLD_APPLICATIONS_RTOL = 1e-4
# mixed_float16: the folded layer rounds γ/σ·W to float16 and its output once,
# where Keras' BN normalises in float32 and rounds at the end: a few float16
# ulp (2^-11 ≈ 4.9e-4) of the output's largest value; measured ≤ 9.6e-4.
FOLD_FLOAT16_RTOL = 4e-3
# ChannelAffine against x·scale + shift in NumPy float64: one float32 multiply
# and one add, each rounded once (2^-24 ≈ 6e-8 of the larger term), so at
# most ~1.2e-7 of the largest term; 1e-6 leaves room for a fused multiply-add.
AFFINE_FLOAT32_RTOL = 1e-6

# --- command line and demo (tests/cli/) -------------------------------
# One epoch of the demo CNN on the digits (seed 0) reaches 93.9% held-out
# accuracy in every format, int8 included; chance is 10%. The floor leaves room
# for other CPUs' and library versions' rounding while still failing a model
# that did not train or an export that scrambles its outputs.
DEMO_MIN_ACCURACY_ONE_EPOCH = 0.8

# --- population statistics, conversion (tests/population/, tests/test_conversion.py)
# Population statistics against the float64 NumPy Algorithm 2 (tests/helpers/
# population.py): the layer computes each batch's moments in float32 (a
# reduction over m ≤ a few thousand values, relative error ~ log2(m)·2^-24
# ≈ 1e-6), the activations feeding later BNs carry float32 rounding, and the
# host sums in float64. Mean errors are measured in units of the channel's σ.
# The issue asks for ≤ 1e-5 relative; measured 1.5e-7 (mean) and 1.2e-7
# (variance) on the Sequential test model.
POPULATION_RTOL = 1e-5
# keras.applications.ResNet50V2 converted to keras_bn.BatchNormalization vs the
# original, inference mode, relative to max|output|: the two layers evaluate
# the same inference formula in float32 in a different order (ours centres
# first), one rounding apart per BN over 49 BNs (measured 6.3e-7). The issue asks for ≤ 1e-6.
CONVERSION_INFERENCE_RTOL = 1e-6
# ResNet50V2 in training mode at batch 4 / 64×64 (2×2 maps in the last stage)
# amplifies rounding by ~2e5: float32 gradients (Keras' autodiff or ours) are
# ~1e-2 from the float64 one. In float64 that amplification leaves ~2e-11
# (2e5 × 1.1e-16); the converted model's analytic gradient against Keras'
# float64 autodiff gradient is held to 1e-8, well above that and far below any
# formula error.
CONVERSION_GRADIENT_FLOAT64_RTOL = 1e-8

# --- quantization (tests/quantization/) ---------------------------------
# A QAT block in float32 against the same folded, rounded kernel in a float64
# Keras layer: the rounded kernels agree exactly (both take max|w|/127 of the
# same float32-rounded fold, and a value landing within 2^-24 of a rounding
# boundary is unlikely at these sizes), so what is left is float32 summation
# over at most a few dozen products: ~1e-7 of the output's scale, measured
# ≤ 4e-7.
QAT_BLOCK_FLOAT32_RTOL = 1e-5
# The bias's rounding read off as the difference of two float32 outputs of
# order 10: a few float32 ulps of those outputs (2^-20 ≈ 1e-6 each), far
# below the rounding steps compared (≥ 1e-3 here).
QAT_BIAS_DIFFERENCE_ATOL = 1e-4

# --- JAX (tests/jax/) ---------------------------------------------------------
# The closed-form gradient against JAX autodiff through a plain two-pass BN,
# both in float64: two exact formulas evaluated in different orders, ~1e-16
# per operation over sums of a few dozen terms (the TF test of the same kind
# in tests/layer/test_ops.py uses the same bounds).
GRADIENT_AUTODIFF_FLOAT64_RTOL = 1e-10
GRADIENT_AUTODIFF_FLOAT64_ATOL = 1e-12
