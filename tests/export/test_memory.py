"""Export memory: what the ONNX conversion leaves behind is freed as it goes.

tf2onnx 1.17 deep-copies its graph before every optimizer pass and drops the
copy it replaces as a reference cycle; `collecting_cycles` frees those during
the conversion. The figures themselves come from `keras-bn bench memory`
(docs/benchmarks.md, "Export: peak memory").
"""

import gc
import time
import weakref

import numpy as np
import pytest

from keras_bn.export.onnx_export import collecting_cycles

COPIES = 30


class GraphCopy:
    """A stand-in for a dropped tf2onnx graph: a cycle holding 8 MB of weights."""

    alive = 0

    def __init__(self):
        GraphCopy.alive += 1
        self.weights = np.ones(1_000_000)
        self.graph = self

    def __del__(self):
        GraphCopy.alive -= 1


def _drop_copies() -> int:
    """Makes and drops `COPIES` cycles; returns the most alive at once."""
    gc.collect()
    most = 0
    for _ in range(COPIES):
        GraphCopy()
        time.sleep(0.02)
        most = max(most, GraphCopy.alive)
    return most


def test_cycles_pile_up_without_the_collector():
    # The reference: a few Python objects per copy never reach the
    # collector's allocation threshold, so every dropped copy stays alive.
    try:
        assert _drop_copies() == COPIES
    finally:
        gc.collect()


def test_collecting_cycles_frees_dropped_copies_during_the_block():
    with collecting_cycles(interval_s=0.005):
        most = _drop_copies()
    assert most <= 3
    assert GraphCopy.alive == 0


def test_collecting_cycles_restores_the_collector():
    threshold = gc.get_threshold()
    with pytest.raises(RuntimeError, match="inside"):
        with collecting_cycles():
            raise RuntimeError("inside")
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold


class Cycle:
    """An object that refers to itself: only the cycle collector frees it."""

    def __init__(self):
        self.me = self


def test_collecting_cycles_leaves_what_the_caller_froze_frozen():
    # A garbage cycle the caller froze stays uncollected through the block's
    # collections; had the block unfrozen it, they would free it. (Counting
    # frozen objects is no test: frozen objects still die by refcount.)
    gc.collect()
    gc.disable()  # no collection between making the garbage and freezing it
    try:
        garbage = weakref.ref(Cycle())
        gc.freeze()
    finally:
        gc.enable()
    try:
        assert garbage() is not None
        with collecting_cycles(interval_s=0.005):
            most = _drop_copies()
        assert garbage() is not None and gc.get_freeze_count() > 0
        assert most <= 3 and GraphCopy.alive == 0
    finally:
        gc.unfreeze()
    gc.collect()
    assert garbage() is None  # it was garbage: the test saw what freezing did
