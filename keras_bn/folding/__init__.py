"""Batch Normalization folding: `fold_batchnorm(model)` and what it reports.

- `fold_batchnorm`: a new inference model with every BN merged into the
  neighbouring linear layer or, where that is impossible, a `ChannelAffine`.
- `FoldReport` / `FoldEntry`: what became of each BN, and why.
- `keras_bn.folding.weights`: the closed-form fold formulas, NumPy float64.
"""

from keras_bn.folding.affine import ChannelAffine
from keras_bn.folding.fold import fold_batchnorm
from keras_bn.folding.report import FoldEntry, FoldReport
from keras_bn.folding.verification import FoldVerificationError

__all__ = [
    "ChannelAffine",
    "FoldEntry",
    "FoldReport",
    "FoldVerificationError",
    "fold_batchnorm",
]
