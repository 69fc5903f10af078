"""The float64 estimate of Algorithm 2, and its all-or-nothing assignment.

The rule (docs/population.md derives it): batch b of a layer, with m_b values
per channel, batch mean μ_b and batch variance σ²_b, contributes

    mean     = Σ_b m_b μ_b / Σ_b m_b
    variance = Σ_b m_b c_b σ²_b / Σ_b m_b,   c_b = m_b/(m_b−1) if unbiased else 1
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_bn.layers import BatchNormalization
from keras_bn.ops import bessel_correction
from keras_bn.population.report import PopulationReport


class Accumulator:
    """Σ m·μ, Σ m·c·σ², Σ m per BN layer, in float64 on the host.

    Args:
        layers: the BN layers, in the order of the records.
        unbiased: apply c = m/(m−1). `keras_bn.BatchNormalization` layers
            already wrote corrected variances (per ghost batch), so they are
            not corrected again.
    """

    def __init__(self, layers: list[keras.layers.Layer], unbiased: bool):
        self.unbiased = unbiased
        self.corrects = [not isinstance(layer, BatchNormalization) for layer in layers]
        shapes = [tuple(layer.moving_mean.shape) for layer in layers]
        self.weighted_mean = [np.zeros(s) for s in shapes]
        self.weighted_variance = [np.zeros(s) for s in shapes]
        self.count = [0.0 for _ in shapes]

    @staticmethod
    def batch_is_valid(input_finite, records: Sequence[Sequence[tuple]]) -> bool:
        """False when the input, a BN's input or a BN's moments held NaN/Inf."""
        if not bool(input_finite):
            return False
        return all(
            bool(finite) and np.isfinite(mean).all() and np.isfinite(variance).all()
            for calls in records
            for mean, variance, _, finite in calls
        )

    def add(self, records: Sequence[Sequence[tuple]]) -> None:
        """Adds one batch: per layer, `(mean, variance, count, finite)` per call."""
        for index, calls in enumerate(records):
            for mean, variance, count, _ in calls:
                m = float(count)
                if m <= 0:
                    continue  # a fully masked call holds nothing
                variance = np.asarray(variance, np.float64)
                if self.unbiased and self.corrects[index]:
                    variance = bessel_correction(variance, m)
                self.weighted_mean[index] += m * np.asarray(mean, np.float64)
                self.weighted_variance[index] += m * variance
                self.count[index] += m

    def estimate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """`(mean, variance)` of layer `index`; NaN when nothing reached it."""
        m = self.count[index]
        if m == 0:
            nan = np.full_like(self.weighted_mean[index], np.nan)
            return nan, nan
        return self.weighted_mean[index] / m, self.weighted_variance[index] / m


def assign_estimate(
    layers: Sequence[keras.layers.Layer], report: PopulationReport
) -> None:
    """Writes each reached layer's estimate into its moving statistics.

    All or nothing: if an assignment raises, every variable of `layers` gets
    its earlier value back before the error propagates. Layers that were not
    reached keep their statistics.

    Args:
        layers: the BN layers, in the order of `report.layers`.
        report: the estimate.
    """
    saved = [(v, v.numpy()) for layer in layers for v in layer.variables]
    try:
        for layer, entry in zip(layers, report.layers, strict=True):
            if not entry.reached:
                continue
            layer.moving_mean.assign(entry.mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(
                entry.variance.astype(layer.moving_variance.dtype)
            )
            if getattr(layer, "renorm", False):
                # Inference reads moving_variance; training's renorm corrections
                # track moving_stddev = √(variance + ε): keep them consistent.
                stddev = np.sqrt(entry.variance + layer.epsilon)
                layer.moving_stddev.assign(stddev.astype(layer.moving_stddev.dtype))
    except BaseException:
        for variable, value in saved:
            variable.assign(value)
        raise
