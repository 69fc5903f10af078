"""`FoldReport` and `FoldEntry`: what a fold tells its caller.

Hand-made reports check the text, the partition and the lookup against the
entries they were made from; a real fold checks that the report names
exactly the model's BN layers and the layers they went into.
"""

import keras
import pytest

from keras_bn.folding import FoldEntry, FoldReport, fold_batchnorm
from keras_bn.keras_adapter import batchnorm_layers
from tests.helpers.folding import set_statistics

L = keras.layers

CONV_BN = FoldEntry("conv_bn", True, into="conv", direction="after")
HEAD_BN = FoldEntry("net/head_bn", True, into="net/head", direction="before")
ADD_BN = FoldEntry("add_bn", False, reason="its neighbour 'add' is not linear")


def test_entry_describes_itself():
    assert CONV_BN.describe() == "conv_bn: folded after 'conv'"
    assert HEAD_BN.describe() == "net/head_bn: folded before 'net/head'"
    assert ADD_BN.describe() == (
        "add_bn: not folded (its neighbour 'add' is not linear)"
    )


def test_entries_are_immutable():
    with pytest.raises(AttributeError):
        CONV_BN.folded = False


def test_folded_and_not_folded_partition_the_entries():
    report = FoldReport(entries=[CONV_BN, ADD_BN, HEAD_BN])
    assert report.folded == [CONV_BN, HEAD_BN]
    assert report.not_folded == [ADD_BN]
    assert list(report) == [CONV_BN, ADD_BN, HEAD_BN] and len(report) == 3


def test_str_is_a_count_then_one_line_per_entry():
    report = FoldReport(entries=[CONV_BN, ADD_BN])
    assert str(report).splitlines() == [
        "1 of 2 Batch Normalization calls folded",
        "  conv_bn: folded after 'conv'",
        "  add_bn: not folded (its neighbour 'add' is not linear)",
    ]
    report.max_error = 1.234e-7
    assert str(report).splitlines()[0] == (
        "1 of 2 Batch Normalization calls folded; verified, max relative error 1.23e-07"
    )
    assert str(FoldReport()) == "0 of 0 Batch Normalization calls folded"


def test_entry_lookup_by_path():
    report = FoldReport(entries=[CONV_BN, HEAD_BN])
    assert report.entry("net/head_bn") is HEAD_BN
    with pytest.raises(KeyError, match=r"'head_bn'.*\['conv_bn', 'net/head_bn'\]"):
        report.entry("head_bn")


def test_a_fold_reports_every_bn_of_the_model(rng):
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="conv")(i)
    x = L.BatchNormalization(name="conv_bn")(x)
    x = L.Add(name="add")([x, L.Conv2D(4, 3, name="side")(i)])
    x = L.BatchNormalization(name="add_bn")(x)
    x = L.Flatten()(x)
    x = L.BatchNormalization(name="head_bn")(x)
    model = keras.Model(i, L.Dense(2, name="head")(x))
    set_statistics(model, rng)
    folded, report = fold_batchnorm(model, return_report=True)
    assert sorted(e.batchnorm for e in report) == sorted(
        bn.name for bn in batchnorm_layers(model)
    )
    assert [(e.batchnorm, e.into, e.direction) for e in report.folded] == [
        ("conv_bn", "conv", "after"),
        ("head_bn", "head", "before"),
    ]
    (unfolded,) = report.not_folded
    assert unfolded.batchnorm == "add_bn" and "'add' (Add)" in unfolded.reason
    assert all(folded.get_layer(e.into).use_bias for e in report.folded)
    assert report.max_error is not None and report.max_error >= 0
