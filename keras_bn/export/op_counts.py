"""What is left of Batch Normalization in an exported graph or a Keras model.

The one definition of "BN ops left", used by the export report, the demo, the
tests and notebook 5:

- operators that *are* a BN: ONNX `BatchNormalization`, TensorFlow's
  `FusedBatchNorm`, `FusedBatchNormV2`, `FusedBatchNormV3`, and their TFLite
  Flex forms (`FlexFusedBatchNormV3`, ...: a BN the TFLite converter could not
  lower to builtins runs as a TensorFlow kernel under that name);
- plus the elementwise `Mul`, `Add`, `Sub` and `Div` operators beyond those of
  the same network exported with every BN replaced by a pass-through
  (`keras_bn.export.without_batchnorm`): a BN that a converter only half folded
  leaves exactly such a scale-and-shift behind.

`Div` counts because a BN evaluated as `(x - mean) / sqrt(variance + ε)`
leaves one; it cannot inflate the count, which is an excess over the BN-free
network, whose own divisions cancel. `Sqrt`/`Rsqrt` are not counted: a
converter that keeps them also keeps a Mul or Div, which already counts.

TFLite builtins are upper-case (`MUL`), ONNX op types capitalised (`Mul`);
both spellings are listed.
"""

from __future__ import annotations

import collections
import os

BATCHNORM_OP_TYPES = frozenset(
    {
        "BatchNormalization",
        "FusedBatchNorm",
        "FusedBatchNormV2",
        "FusedBatchNormV3",
        "FlexFusedBatchNorm",
        "FlexFusedBatchNormV2",
        "FlexFusedBatchNormV3",
    }
)
ELEMENTWISE_OP_TYPES = frozenset(
    {"MUL", "ADD", "SUB", "DIV", "Mul", "Add", "Sub", "Div"}
)


def count_ops(histogram: dict[str, int], op_types) -> int:
    """Number of operators in `histogram` whose type is one of `op_types`."""
    return sum(histogram.get(op, 0) for op in op_types)


def bn_ops_left(
    histogram: dict[str, int], reference: dict[str, int] | None = None
) -> int:
    """BN operators left in an exported graph (see the module docstring).

    Args:
        histogram: Operator type → count of the exported file.
        reference: The histogram of the same network exported without BN
            (`without_batchnorm`, `fold=False`). Without it only operators that
            are a BN are counted.

    Returns:
        BN operators plus the elementwise operators in excess of `reference`.

    Example:

    >>> bn_ops_left({"CONV_2D": 1, "MUL": 1, "ADD": 2}, {"CONV_2D": 1, "ADD": 1})
    2
    """
    left = count_ops(histogram, BATCHNORM_OP_TYPES)
    if reference is not None:
        excess = count_ops(histogram, ELEMENTWISE_OP_TYPES) - count_ops(
            reference, ELEMENTWISE_OP_TYPES
        )
        left += max(0, excess)
    return left


def bn_layers_left(model) -> int:
    """BatchNormalization and `ChannelAffine` layers in a Keras model, nested included.

    `ChannelAffine` is the inference form of a BN that could not be folded, so
    it counts as a BN left.
    """
    from keras_bn.folding import ChannelAffine
    from keras_bn.keras_adapter import is_batchnorm, iter_layers

    return sum(
        is_batchnorm(layer) or isinstance(layer, ChannelAffine)
        for layer in iter_layers(model)
    )


def op_histogram(path: str | os.PathLike) -> dict[str, int]:
    """Operator type → count, read from the file (not from a runtime's plan).

    Args:
        path: A `.tflite` or `.onnx` file, recognised by content.

    Returns:
        TFLite builtin names (`"CONV_2D"`), custom and Flex op names as the
        file stores them, or ONNX op types (`"Conv"`).
    """
    from keras_bn.export.runtimes import detect_format

    path = os.fspath(path)
    if detect_format(path) == "onnx":
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
        return dict(collections.Counter(node.op_type for node in graph.node))
    return tflite_op_histogram(path)


def tflite_op_histogram(path: str) -> dict[str, int]:
    """Operator histogram of a TFLite flatbuffer, every subgraph included."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k[0] != "_"}
    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Builtin codes above 127 live in BuiltinCode; DeprecatedBuiltinCode
        # holds the older ones (schema v3a), hence the max.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append(code.CustomCode().decode())
        else:
            codes.append(names.get(builtin, str(builtin)))
    histogram = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            histogram[codes[subgraph.Operators(o).OpcodeIndex()]] += 1
    return dict(histogram)
