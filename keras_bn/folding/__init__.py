"""Batch Normalization folding: `fold_batchnorm(model)` and what it reports.

- `fold_batchnorm`: a new inference model with every BN merged into the
  neighbouring linear layer or, where that is impossible, a `ChannelAffine`.
- `FoldReport` / `FoldEntry`: what became of each BN, and why.
- `keras_bn.folding.weights`: the closed-form fold formulas, NumPy float64.

Inside, data flows one way: `rules` (one class per linear-layer family)
uses `weights`; `graph` walks a model and gives every layer call a plan
from `plans` (fold into a neighbour, replace by `ChannelAffine`, keep,
copy); `engine` replays the graph, each plan building its own layer and
weights; `fold` adds the report and the verification. Keras' private graph
structure is read only through `keras_bn.keras_adapter`.
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
