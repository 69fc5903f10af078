"""Property: any model hypothesis builds folds to a BN-free model that agrees.

Random Sequential chains and Functional graphs with branches joined by
`Add`, every linear layer type, BN before and/or after, built-in
activations, `same` and `valid` padding, with and without bias. Whatever the
mix, the folded model holds no BatchNormalization and matches the original
in inference mode. Examples are derandomized so the suite is reproducible.
"""

import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_bn.folding import fold_batchnorm
from tests.helpers.folding import (
    count_batchnorm,
    relative_error,
    set_statistics,
)
from tests.tolerances import FOLD_FLOAT32_RTOL

L = keras.layers
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# Input shapes per domain: sequences, images, feature vectors.
DOMAINS = {"1d": (12, 3), "2d": (10, 10, 3), "vector": (5,)}
LINEAR_TYPES = {
    "1d": ["conv", "depthwise", "separable", "transpose", "dense"],
    "2d": ["conv", "depthwise", "separable", "transpose", "dense"],
    "vector": ["dense"],
}


@st.composite
def linear_specs(draw, domain):
    return {
        "type": draw(st.sampled_from(LINEAR_TYPES[domain])),
        "channels": draw(st.integers(2, 5)),
        "multiplier": draw(st.integers(1, 2)),
        "valid": draw(st.booleans()),
        "use_bias": draw(st.booleans()),
        "activation": draw(st.sampled_from([None, None, "relu"])),
        "bn_before": draw(st.booleans()),
        "bn_after": draw(st.booleans()),
    }


def make_linear(spec, domain, spatial, channels=None):
    """A layer for `spec`; `channels` forces the output width (for Add)."""
    rank = {"1d": 1, "2d": 2}.get(domain)
    kind = spec["type"]
    out = channels or spec["channels"]
    common = {"use_bias": spec["use_bias"], "activation": spec["activation"]}
    # Unpadded only while the tensor is large enough, and never inside an
    # Add branch, whose two sides must keep the same shape.
    padding = "valid" if spec["valid"] and spatial > 5 and channels is None else "same"
    if kind == "dense" or rank is None:
        return L.Dense(out, **common)
    if kind == "depthwise" and channels is None:
        cls = {1: L.DepthwiseConv1D, 2: L.DepthwiseConv2D}[rank]
        return cls(3, depth_multiplier=spec["multiplier"], padding=padding, **common)
    if kind == "separable":
        cls = {1: L.SeparableConv1D, 2: L.SeparableConv2D}[rank]
        return cls(out, 3, padding=padding, **common)
    if kind == "transpose":
        cls = {1: L.Conv1DTranspose, 2: L.Conv2DTranspose}[rank]
        return cls(out, 3, padding="same", **common)
    cls = {1: L.Conv1D, 2: L.Conv2D}[rank]
    return cls(out, 3, padding=padding, **common)


def apply(spec, x, domain, channels=None):
    spatial = x.shape[1] if len(x.shape) > 2 else 0
    if spec["bn_before"]:
        x = L.BatchNormalization()(x)
    x = make_linear(spec, domain, spatial, channels)(x)
    if spec["bn_after"]:
        x = L.BatchNormalization()(x)
    return x


@st.composite
def sequential_specs(draw):
    domain = draw(st.sampled_from(sorted(DOMAINS)))
    specs = draw(st.lists(linear_specs(domain), min_size=1, max_size=4))
    return domain, specs, draw(st.integers(0, 2**31 - 1))


def build_sequential(domain, specs):
    inputs = keras.Input(DOMAINS[domain])
    x = inputs
    for spec in specs:
        x = apply(spec, x, domain)
    # The layers the chain created, in order, as a Sequential model.
    layers = keras.Model(inputs, x).layers[1:]
    return keras.Sequential([keras.Input(DOMAINS[domain]), *layers])


@st.composite
def functional_specs(draw):
    """A first linear block, then blocks that are linear or an Add of two paths."""
    domain = draw(st.sampled_from(sorted(DOMAINS)))
    blocks = [("linear", draw(linear_specs(domain)), None, False, False)]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            left = draw(linear_specs(domain))
            right = draw(st.one_of(st.none(), linear_specs(domain)))
            blocks.append(
                ("add", left, right, draw(st.booleans()), draw(st.booleans()))
            )
        else:
            spec = draw(linear_specs(domain))
            blocks.append(("linear", spec, None, False, draw(st.booleans())))
    return domain, blocks, draw(st.integers(0, 2**31 - 1))


def build_functional(domain, blocks):
    inputs = keras.Input(DOMAINS[domain])
    x = inputs
    for kind, first, second, bn_after_add, relu in blocks:
        if kind == "linear":
            x = apply(first, x, domain)
        else:
            width = x.shape[-1]
            left = apply(first, x, domain, channels=width)
            right = x if second is None else apply(second, x, domain, channels=width)
            x = L.Add()([left, right])
            if bn_after_add:
                x = L.BatchNormalization()(x)
        if relu:
            x = L.ReLU()(x)
    return keras.Model(inputs, x)


def check_folds(model, seed):
    rng = np.random.default_rng(seed)
    set_statistics(model, rng)
    x = rng.normal(size=(3, *model.inputs[0].shape[1:])).astype("float32")
    folded, report = fold_batchnorm(model, verify=False, return_report=True)
    assert count_batchnorm(folded) == 0, str(report)
    error = relative_error(folded(x, training=False), model(x, training=False))
    assert error <= FOLD_FLOAT32_RTOL, f"{error:.3g}\n{report}"


@SETTINGS
@given(sequential_specs())
def test_random_sequential_models_fold(case):
    domain, specs, seed = case
    check_folds(build_sequential(domain, specs), seed)


@SETTINGS
@given(functional_specs())
def test_random_functional_models_fold(case):
    domain, blocks, seed = case
    check_folds(build_functional(domain, blocks), seed)
