"""Population statistics for Batch Normalization (Ioffe & Szegedy 2015, Algorithm 2).

A BN network should infer with per-channel statistics of its whole training
population, estimated with the final weights; Keras keeps moving averages
gathered while the weights were still changing. `population_statistics`
re-estimates them in place, `with_population_statistics` on a copy. How and
why: docs/population.md.

Modules, one job each: `report` (what the estimate found), `batches` (data as
`fit` takes it), `recorder` (each BN's batch moments in one forward pass),
`estimate` (the float64 accumulator and the assignment), `validation`, and
`statistics` (the two public functions).
"""

from keras_bn.population.batches import DEFAULT_BATCH_SIZE
from keras_bn.population.report import LayerPopulation, PopulationReport
from keras_bn.population.statistics import (
    population_statistics,
    with_population_statistics,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LayerPopulation",
    "PopulationReport",
    "population_statistics",
    "with_population_statistics",
]
