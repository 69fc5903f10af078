"""A float64 NumPy implementation of Ioffe & Szegedy's Algorithm 2, the reference
for `keras_bn.population_statistics`.

A model is run through a *forward recipe*: a Python function `forward(x, apply)`
that calls `apply(layer, h, **kwargs)` for every layer in the order the model
does. The Keras model is built from the same recipe with `apply = keras_call`,
so the reference walks exactly the graph Keras walks, but computes each BN with
`tests.helpers.reference` (NumPy float64) in training mode (batch mean, biased
variance, per ghost batch, under the mask) and runs every other layer in Keras' inference mode. Nothing of
`keras_bn.population` or of the layer's statistics code is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np

from tests.helpers.reference import batch_moments, normalize


def keras_call(layer, h, **kwargs):
    return layer(h, **kwargs)


def sequential_recipe(model: keras.Sequential) -> Callable:
    """The recipe of a Sequential model (nested Sequential models included)."""

    def forward(x, apply):
        h = x
        for layer in model.layers:
            if isinstance(layer, keras.Sequential):
                h = sequential_recipe(layer)(h, apply)
            else:
                h = apply(layer, h)
        return h

    return forward


def _channel_axes(layer, rank: int) -> list[int]:
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    return sorted(a % rank for a in axes)


def bn_train_numpy(layer, h: np.ndarray, mask: np.ndarray | None = None):
    """One BN call in training mode, float64: (output, [(mean, var, count)] per ghost batch)."""
    h = np.asarray(h, np.float64)
    channels = _channel_axes(layer, h.ndim)
    reduce = tuple(a for a in range(h.ndim) if a not in channels)
    weights = np.ones(h.shape)
    if mask is not None:
        expanded = np.asarray(mask, np.float64)
        for a in channels:
            expanded = np.expand_dims(expanded, a)
        weights = np.broadcast_to(expanded, h.shape)
    k = getattr(layer, "virtual_batch_size", None) or h.shape[0]
    out = np.empty_like(h)
    groups = []
    for start in range(0, h.shape[0], k):
        g, w = h[start : start + k], weights[start : start + k]
        count = w.sum(axis=reduce, keepdims=True)
        mean, variance = batch_moments(g, reduce, w)
        gamma = np.asarray(layer.gamma, np.float64) if layer.scale else 1.0
        beta = np.asarray(layer.beta, np.float64) if layer.center else 0.0
        shape = [g.shape[a] if a in channels else 1 for a in range(h.ndim)]
        gamma, beta = np.reshape(gamma, shape), np.reshape(beta, shape)
        out[start : start + k] = normalize(
            g, mean, variance, layer.epsilon, gamma, beta
        )
        squeeze = np.reshape(count, -1)[0]
        groups.append((mean.reshape(-1), variance.reshape(-1), float(squeeze)))
    return out.astype(np.float32), groups


def algorithm2(
    forward: Callable, batches: Iterable[np.ndarray], unbiased: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Population mean, variance and count per BN layer name.

    Each batch contributes its count m_b (values per channel) as weight; a
    layer with ghost batches contributes the average of its ghost batches'
    statistics, each variance corrected by its own m/(m−1), as the layer's
    moving statistics do. Equal batches give Algorithm 2 exactly.
    """
    sums: dict[str, list] = {}

    def apply(layer, h, mask=None, **kwargs):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return np.asarray(layer(h, training=False, **kwargs))
        out, groups = bn_train_numpy(layer, h, mask)
        means = np.mean([mean for mean, _, _ in groups], axis=0)
        variances = np.mean(
            [v * (n / (n - 1) if unbiased else 1.0) for _, v, n in groups], axis=0
        )
        count = sum(n for _, _, n in groups)
        entry = sums.setdefault(layer.name, [0.0, 0.0, 0.0])
        entry[0] = entry[0] + count * means
        entry[1] = entry[1] + count * variances
        entry[2] += count
        return out

    for x in batches:
        forward(x, apply)
    return {name: (s[0] / s[2], s[1] / s[2], s[2]) for name, s in sums.items()}


def array_batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [x[s : s + batch_size] for s in range(0, len(x), batch_size)]


def assert_matches(report, reference, rtol: float) -> None:
    """Every reported layer's estimate equals the reference's, relative to scale."""
    assert {layer.name for layer in report.layers} == set(reference)
    for layer in report.layers:
        mean, variance, count = reference[layer.name]
        assert layer.count == count, layer.name
        sigma = np.sqrt(variance)
        np.testing.assert_array_less(np.abs(layer.mean - mean), rtol * sigma + 1e-12)
        np.testing.assert_allclose(layer.variance, variance, rtol=rtol)


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v) for v in model.variables]


def assert_unchanged(model: keras.Model, before: list[np.ndarray]) -> None:
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
