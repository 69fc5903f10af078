"""What `population_statistics` reports: one `LayerPopulation` per BN layer."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_bn.text_table import format_table

SUMMARY_COLUMNS = ("layer", "values/channel", "max |Δmean| (σ)", "variance ratio")


@dataclasses.dataclass(frozen=True)
class LayerPopulation:
    """The population estimate of one BN layer, and how far its moving statistics are.

    Attributes:
        name: the layer's name.
        count: values per channel seen over the used batches (all calls of a
            shared layer); 0 if the layer was never reached. Where a mask
            hides channels unevenly (`Masking` before `axis=1`), the most any
            channel saw; `channel_counts` holds each channel's.
        mean, variance: the population estimate (float64, per channel); NaN
            in channels that saw no value.
        moving_mean, moving_variance: the layer's statistics before the
            estimate (float64).
        epsilon: the layer's ε.
        channel_counts: values seen per channel (float64, the shape of
            `mean`); each channel is estimated from its own.
    """

    name: str
    count: float
    mean: np.ndarray
    variance: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    epsilon: float
    channel_counts: np.ndarray

    @classmethod
    def of_layer(
        cls,
        layer: keras.layers.Layer,
        mean: np.ndarray,
        variance: np.ndarray,
        channel_counts: np.ndarray,
    ) -> LayerPopulation:
        """The entry of `layer` for an estimate, with the layer's current statistics."""
        channel_counts = np.asarray(channel_counts, np.float64)
        return cls(
            name=layer.name,
            count=float(np.max(channel_counts)),
            channel_counts=channel_counts,
            mean=mean,
            variance=variance,
            moving_mean=np.asarray(layer.moving_mean, np.float64),
            moving_variance=np.asarray(layer.moving_variance, np.float64),
            epsilon=float(layer.epsilon),
        )

    @property
    def reached(self) -> bool:
        """Whether any value reached the layer."""
        return self.count > 0

    @property
    def max_mean_shift(self) -> float:
        """max over the channels reached of |moving_mean − mean| / √(variance + ε), in σ."""
        seen = self.channel_counts > 0
        sigma = np.sqrt(self.variance[seen] + self.epsilon)
        return float(np.max(np.abs(self.moving_mean[seen] - self.mean[seen]) / sigma))

    @property
    def variance_ratio_range(self) -> tuple[float, float]:
        """min and max over the channels reached of (moving_variance + ε) / (variance + ε).

        The ratio of the squared denominators inference uses to the ones the
        population calls for; 1 is right, and ε keeps dead channels finite.
        """
        seen = self.channel_counts > 0
        ratio = (self.moving_variance[seen] + self.epsilon) / (
            self.variance[seen] + self.epsilon
        )
        return float(np.min(ratio)), float(np.max(ratio))

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no per-channel arrays)."""
        low, high = self.variance_ratio_range if self.reached else (None, None)
        return {
            "name": self.name,
            "count": self.count,
            "channels": int(self.mean.size),
            "max_mean_shift_sigma": self.max_mean_shift if self.reached else None,
            "variance_ratio_min": low,
            "variance_ratio_max": high,
        }

    def summary_row(self) -> dict:
        """This layer's row of `PopulationReport.summary`."""
        if not self.reached:
            values = ("0", "not reached", "kept")
        else:
            low, high = self.variance_ratio_range
            values = (
                f"{self.count:.0f}",
                f"{self.max_mean_shift:.3g}",
                f"{low:.3g} – {high:.3g}",
            )
        return dict(zip(SUMMARY_COLUMNS, (self.name, *values), strict=True))


@dataclasses.dataclass(frozen=True)
class PopulationReport:
    """What `population_statistics` estimated, per BN layer.

    Attributes:
        layers: one `LayerPopulation` per BN layer, in `iter_layers` order.
        batches: batches used.
        skipped_batches: batches skipped because they held NaN/Inf.
        unbiased: whether the variance carries the m/(m−1) correction.
        applied: whether the estimate was assigned to the model.
    """

    layers: list[LayerPopulation]
    batches: int
    skipped_batches: int
    unbiased: bool
    applied: bool

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no per-channel arrays)."""
        return {
            "batches": self.batches,
            "skipped_batches": self.skipped_batches,
            "unbiased": self.unbiased,
            "applied": self.applied,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def summary(self) -> str:
        """A table: per layer the values seen, mean shift (σ) and variance ratio."""
        table = format_table(
            [layer.summary_row() for layer in self.layers], SUMMARY_COLUMNS
        )
        verb = "applied" if self.applied else "not applied (apply=False)"
        return (
            f"{table}\n{self.batches} batches used, {self.skipped_batches} skipped "
            f"(NaN/Inf); {'unbiased' if self.unbiased else 'biased'} variance; {verb}"
        )

    def __str__(self) -> str:
        return self.summary()
