"""keras_bn: Batch Normalization for Keras 3 with an analytic backward pass.

- `keras_bn.BatchNormalization`: drop-in for `keras.layers.BatchNormalization`.
- `keras_bn.fold_batchnorm`: an inference model with every BN folded away.
- `keras_bn.population_statistics`: re-estimates the BN statistics (Algorithm 2);
  `convert_batchnorm` puts our layer into any model, `freeze_batchnorm` freezes
  BN for fine-tuning.
- `keras_bn.export`: TFLite and ONNX files of the folded model, parity-checked
  (imported on first use: it loads the converters).
"""

import importlib

__version__ = "0.1.0"

from keras_bn.conversion import convert_batchnorm  # noqa: E402
from keras_bn.folding import FoldReport, fold_batchnorm  # noqa: E402
from keras_bn.freezing import freeze_batchnorm  # noqa: E402
from keras_bn.layers import BatchNormalization  # noqa: E402
from keras_bn.population import (  # noqa: E402
    PopulationReport,
    population_statistics,
    with_population_statistics,
)

__all__ = [
    "BatchNormalization",
    "FoldReport",
    "PopulationReport",
    "__version__",
    "convert_batchnorm",
    "export",
    "fold_batchnorm",
    "freeze_batchnorm",
    "population_statistics",
    "with_population_statistics",
]


def __getattr__(name: str):
    if name == "export":
        return importlib.import_module("keras_bn.export")
    raise AttributeError(f"module 'keras_bn' has no attribute {name!r}")
