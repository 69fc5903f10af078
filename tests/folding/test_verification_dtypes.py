"""Fold verification's default bound follows the model's compute dtype.

Issue 12, case 5: a correct fold of a `mixed_float16` model failed
`fold_batchnorm`'s fixed default tolerance (2.68e-4 against 4.9e-5); the
difference is float16 rounding. The default now comes from
`keras_bn.rounding_bounds.rounding_tolerance`, so a correct fold passes under
every policy while a wrong fold (here: formulas deliberately broken) still
fails by default.
"""

import math

import keras
import numpy as np
import pytest

import keras_bn
from keras_bn import rounding_bounds
from keras_bn.export import parity_tolerance
from keras_bn.folding import FoldVerificationError, fold_batchnorm, weights
from keras_bn.folding.verification import compare_models, random_batch
from keras_bn.stand_in_statistics import set_stand_in_statistics

L = keras.layers
POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]


def conv_net(seed: int) -> keras.Model:
    """Two Conv2D→BN→ReLU blocks (both BN classes) and a Dense head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(16, 3, use_bias=False)(inputs)
    x = keras_bn.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(32, 3, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(10)(x))
    set_stand_in_statistics(model, seed=seed)
    return model


def test_bound_is_the_formula_under_mixed_float16(mixed_precision):
    mixed_precision("mixed_float16")
    model = conv_net(0)
    u, u16 = 2.0**-24, 2.0**-11
    # Σ n: conv 3·3·3, BN, ReLU, conv 3·3·16, BN, ReLU, the pooling of the
    # 12×12 map, Dense 32 (elementwise layers are charged 16).
    terms = 27 + 16 + 16 + 144 + 16 + 16 + 12 * 12 + 32
    # All eight layers round their output to float16; three also their kernel.
    reduced = 8 + 3
    expected = 4 * math.sqrt(2 * u**2 * terms + 2 / 3 * u16**2 * reduced)
    assert rounding_bounds.rounding_tolerance(model) == pytest.approx(expected)
    assert parity_tolerance(model) == pytest.approx(expected)


def test_float32_bound_is_unchanged(mixed_precision):
    mixed_precision("float32")
    model = conv_net(0)
    assert rounding_bounds.rounding_tolerance(
        model
    ) == rounding_bounds.float32_tolerance(model)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_fold_passes_default_verification(policy, seed, mixed_precision):
    mixed_precision(policy)
    model = conv_net(seed)
    folded, report = fold_batchnorm(model, return_report=True)
    # The verification's own measurement, repeated independently on another batch.
    batch = random_batch(model, seed=seed + 100)
    error = compare_models(model, folded, batch, rtol=np.inf, atol=0.0)
    assert report.max_error <= rounding_bounds.rounding_tolerance(model)
    assert error <= rounding_bounds.rounding_tolerance(model)


def test_issue_case_failed_the_old_fixed_tolerance(mixed_precision):
    # The fold is right, yet float16 rounding exceeds the float32-sized bound
    # that used to be the default: explicit tolerances still win.
    mixed_precision("mixed_float16")
    model = conv_net(0)
    with pytest.raises(FoldVerificationError, match="rtol=1e-06"):
        fold_batchnorm(model, rtol=1e-6, atol=0.0)


def _mean_ignored(scale_shift):
    def wrong(mean, variance, epsilon, gamma=None, beta=None):
        return scale_shift(np.zeros_like(mean), variance, epsilon, gamma, beta)

    return wrong


def _variance_for_std(scale_shift):
    def wrong(mean, variance, epsilon, gamma=None, beta=None):
        # γ/(σ²+ε) instead of γ/√(σ²+ε): what forgetting the square root gives.
        return scale_shift(mean, np.square(variance + epsilon), 0.0, gamma, beta)

    return wrong


def _one_channel_negated(scale_shift):
    def wrong(mean, variance, epsilon, gamma=None, beta=None):
        scale, shift = scale_shift(mean, variance, epsilon, gamma, beta)
        scale, shift = scale.copy(), shift.copy()
        scale[0], shift[0] = -scale[0], -shift[0]
        return scale, shift

    return wrong


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "corrupt", [_mean_ignored, _variance_for_std, _one_channel_negated]
)
def test_wrong_fold_fails_default_verification(
    policy, corrupt, mixed_precision, monkeypatch
):
    mixed_precision(policy)
    model = conv_net(0)
    monkeypatch.setattr(
        weights,
        "batchnorm_scale_shift",
        corrupt(weights.batchnorm_scale_shift),
    )
    with pytest.raises(FoldVerificationError, match="differs from the original"):
        fold_batchnorm(model)


def test_explicit_tolerance_wins_over_the_default(mixed_precision, monkeypatch):
    mixed_precision("mixed_bfloat16")
    model = conv_net(0)
    monkeypatch.setattr(
        weights, "batchnorm_scale_shift", _mean_ignored(weights.batchnorm_scale_shift)
    )
    folded = fold_batchnorm(model, rtol=1e3)
    assert isinstance(folded, keras.Model)
