"""The float64 estimate of Algorithm 2, and its all-or-nothing assignment.

The rule (docs/population.md derives it): batch b of a layer, with m_b values
in a channel (each channel its own count: a mask can hide a channel in one
batch and not in another), batch mean μ_b and batch variance σ²_b, contributes

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
    """Σ m·μ, Σ m·c·σ², Σ m per BN layer and channel, in float64 on the host.

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
        self.count = [np.zeros(s) for s in shapes]

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
        """Adds one batch: per layer, `(mean, variance, count, finite)` per call.

        `count` is per channel; a channel the call did not see (count 0)
        adds nothing, whatever its moments read.
        """
        for index, calls in enumerate(records):
            for mean, variance, count, _ in calls:
                m = np.reshape(np.asarray(count, np.float64), self.count[index].shape)
                seen = m > 0
                variance = np.asarray(variance, np.float64)
                if self.unbiased and self.corrects[index]:
                    variance = bessel_correction(variance, m)
                mean = np.asarray(mean, np.float64)
                self.weighted_mean[index] += np.where(seen, m * mean, 0.0)
                self.weighted_variance[index] += np.where(seen, m * variance, 0.0)
                self.count[index] += m

    def estimate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """`(mean, variance)` of layer `index`; NaN in channels nothing reached."""
        m = self.count[index]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(m > 0, self.weighted_mean[index] / m, np.nan)
            variance = np.where(m > 0, self.weighted_variance[index] / m, np.nan)
        return mean, variance


def assign_estimate(
    layers: Sequence[keras.layers.Layer], report: PopulationReport
) -> None:
    """Writes each reached layer's estimate into its moving statistics.

    All or nothing: if an assignment raises, every variable of `layers` gets
    its earlier value back before the error propagates. Layers (and channels)
    that were not reached keep their statistics.

    Args:
        layers: the BN layers, in the order of `report.layers`.
        report: the estimate.
    """
    saved = [(v, v.numpy()) for layer in layers for v in layer.variables]
    try:
        for layer, entry in zip(layers, report.layers, strict=True):
            if not entry.reached:
                continue
            # A channel no value reached keeps its statistics.
            seen = entry.channel_counts > 0
            mean = np.where(seen, entry.mean, np.asarray(layer.moving_mean))
            variance = np.where(seen, entry.variance, np.asarray(layer.moving_variance))
            layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
            layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
            if getattr(layer, "renorm", False):
                # Inference reads moving_variance; training's renorm corrections
                # track moving_stddev = √(variance + ε): keep them consistent.
                stddev = np.sqrt(entry.variance + layer.epsilon)
                stddev = np.where(seen, stddev, np.asarray(layer.moving_stddev))
                layer.moving_stddev.assign(stddev.astype(layer.moving_stddev.dtype))
    except BaseException:
        for variable, value in saved:
            variable.assign(value)
        raise
