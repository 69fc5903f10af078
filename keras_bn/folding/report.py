"""`FoldReport`: what `fold_batchnorm` did with every Batch Normalization."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FoldEntry", "FoldReport"]

AFTER = "after"
BEFORE = "before"


@dataclass(frozen=True)
class FoldEntry:
    """One call of a Batch Normalization layer and what became of it.

    Attributes:
        batchnorm: path of the BN layer, nested models separated by `/`
            (`"backbone/conv1_bn"`).
        folded: whether the BN went into a linear layer's weights.
        into: path of that linear layer, or `None`.
        direction: `"after"` when the BN followed the linear layer
            (`Conv -> BN`), `"before"` when it preceded it (`BN -> Dense`),
            `None` when not folded.
        reason: why it was not folded (`None` when folded). An unfolded BN
            is replaced by a `ChannelAffine` layer unless the reason says it
            was kept.
    """

    batchnorm: str
    folded: bool
    into: str | None = None
    direction: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One line: `"bn -> folded after conv"` or `"bn -> not folded: why"`."""
        if self.folded:
            return f"{self.batchnorm}: folded {self.direction} '{self.into}'"
        return f"{self.batchnorm}: not folded ({self.reason})"


@dataclass
class FoldReport:
    """Every Batch Normalization call in a model and how it was folded.

    Returned by `fold_batchnorm(..., return_report=True)`. Iterating gives
    `FoldEntry` objects in graph order; `str(report)` is a readable summary.

    Attributes:
        entries: one `FoldEntry` per BN call, nested models included.
        max_error: the largest difference between original and folded
            outputs on the verification batch, relative to the output's
            largest magnitude, or `None` when `verify=False`.
        population: the `keras_bn.PopulationReport` of the statistics
            re-estimated before folding (`population_data=`), or `None`.
    """

    entries: list[FoldEntry] = field(default_factory=list)
    max_error: float | None = None
    population: Any = None

    def __iter__(self) -> Iterator[FoldEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def folded(self) -> list[FoldEntry]:
        """The entries whose BN went into a linear layer."""
        return [e for e in self.entries if e.folded]

    @property
    def not_folded(self) -> list[FoldEntry]:
        """The entries whose BN became a `ChannelAffine` (or was kept)."""
        return [e for e in self.entries if not e.folded]

    def entry(self, batchnorm: str) -> FoldEntry:
        """The entry of the BN at path `batchnorm`.

        Raises:
            KeyError: if no BN has that path.
        """
        for e in self.entries:
            if e.batchnorm == batchnorm:
                return e
        known = [e.batchnorm for e in self.entries]
        raise KeyError(
            f"No Batch Normalization at path {batchnorm!r}. Known paths: {known}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready fields."""
        return {
            "entries": [asdict(entry) for entry in self.entries],
            "folded": len(self.folded),
            "total": len(self.entries),
            "max_error": self.max_error,
            "population": None
            if self.population is None
            else self.population.to_dict(),
        }

    def __str__(self) -> str:
        head = (
            f"{len(self.folded)} of {len(self.entries)} Batch Normalization "
            "calls folded"
        )
        if self.population is not None:
            head += (
                "; population statistics re-estimated on "
                f"{self.population.batches} batches"
            )
        if self.max_error is not None:
            head += f"; verified, max relative error {self.max_error:.2e}"
        return "\n".join([head, *("  " + e.describe() for e in self.entries)])
