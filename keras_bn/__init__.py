"""keras_bn: Batch Normalization for Keras 3 with an analytic backward pass.

- `keras_bn.BatchNormalization`: drop-in for `keras.layers.BatchNormalization`.
- `keras_bn.fold_batchnorm`: an inference model with every BN folded away.
- `keras_bn.export`: TFLite and ONNX files of the folded model, parity-checked
  (imported on first use: it loads the converters).
"""

import importlib

__version__ = "0.1.0"

from keras_bn.folding import FoldReport, fold_batchnorm  # noqa: E402
from keras_bn.layers import BatchNormalization  # noqa: E402

__all__ = [
    "BatchNormalization",
    "FoldReport",
    "__version__",
    "export",
    "fold_batchnorm",
]


def __getattr__(name: str):
    if name == "export":
        return importlib.import_module("keras_bn.export")
    raise AttributeError(f"module 'keras_bn' has no attribute {name!r}")
