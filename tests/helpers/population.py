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
    """One BN call in training mode, float64.

    Returns `(output, groups)`: one `(mean, variance, count)` per ghost batch
    (the whole batch without ghost batches), each per channel. A Keras mask
    gains a trailing axis and is broadcast to `h`, so behind `Masking` with
    `axis=1` each channel has its own count; a channel with count 0 has NaN
    moments (it says nothing).
    """
    h = np.asarray(h, np.float64)
    channels = _channel_axes(layer, h.ndim)
    reduce = tuple(a for a in range(h.ndim) if a not in channels)
    weights = np.ones(h.shape)
    if mask is not None:
        expanded = np.asarray(mask, bool)[..., None].astype(np.float64)
        weights = np.broadcast_to(expanded, h.shape)
    k = getattr(layer, "virtual_batch_size", None) or h.shape[0]
    out = np.empty_like(h)
    groups = []
    for start in range(0, h.shape[0], k):
        g, w = h[start : start + k], weights[start : start + k]
        count = w.sum(axis=reduce, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean, variance = batch_moments(g, reduce, w)
        gamma = np.asarray(layer.gamma, np.float64) if layer.scale else 1.0
        beta = np.asarray(layer.beta, np.float64) if layer.center else 0.0
        shape = [g.shape[a] if a in channels else 1 for a in range(h.ndim)]
        gamma, beta = np.reshape(gamma, shape), np.reshape(beta, shape)
        out[start : start + k] = normalize(
            g, mean, variance, layer.epsilon, gamma, beta
        )
        groups.append((mean.reshape(-1), variance.reshape(-1), count.reshape(-1)))
    return out.astype(np.float32), groups


def algorithm2(
    forward: Callable, batches: Iterable[np.ndarray], unbiased: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Population mean, variance and count per BN layer name, each per channel.

    Every ghost batch (the whole batch without ghost batches) of every call is
    one term of Algorithm 2, weighted by its own count in each channel: a
    channel's estimate is Σ n·μ / Σ n and Σ n·c·σ² / Σ n over the terms where
    that channel saw values, c = n/(n−1) if unbiased. Equal batches give
    Algorithm 2 exactly.
    """
    sums: dict[str, list] = {}

    def apply(layer, h, mask=None, **kwargs):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return np.asarray(layer(h, training=False, **kwargs))
        out, groups = bn_train_numpy(layer, h, mask)
        entry = sums.setdefault(layer.name, [0.0, 0.0, 0.0])
        for mean, variance, n in groups:
            seen = n > 0
            correction = n / np.maximum(n - 1, 1) if unbiased else 1.0
            entry[0] = entry[0] + np.where(seen, n * mean, 0.0)
            entry[1] = entry[1] + np.where(seen, n * correction * variance, 0.0)
            entry[2] = entry[2] + n
        return out

    for x in batches:
        forward(x, apply)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: (s[0] / s[2], s[1] / s[2], s[2]) for name, s in sums.items()}


def array_batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [x[s : s + batch_size] for s in range(0, len(x), batch_size)]


def assert_matches(report, reference, rtol: float) -> None:
    """Every reported layer's estimate equals the reference's, relative to scale.

    Channels the reference saw no value in must be NaN in the report.
    """
    assert {layer.name for layer in report.layers} == set(reference)
    for layer in report.layers:
        mean, variance, count = reference[layer.name]
        np.testing.assert_array_equal(layer.channel_counts, count, err_msg=layer.name)
        assert layer.count == np.max(count), layer.name
        seen = count > 0
        assert np.isnan(layer.mean[~seen]).all(), layer.name
        sigma = np.sqrt(variance[seen])
        np.testing.assert_array_less(
            np.abs(layer.mean[seen] - mean[seen]), rtol * sigma + 1e-12
        )
        np.testing.assert_allclose(layer.variance[seen], variance[seen], rtol=rtol)


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v) for v in model.variables]


def assert_unchanged(model: keras.Model, before: list[np.ndarray]) -> None:
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
