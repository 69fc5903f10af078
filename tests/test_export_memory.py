"""Export memory: what the ONNX conversion leaves behind is freed as it goes.

tf2onnx 1.17 deep-copies its graph before every optimizer pass and drops the
copy it replaces as a reference cycle; `collecting_cycles` frees those during
the conversion. The bench's measurement (`keras_bn.bench.memory`) is checked
against an allocation of known size.
"""

import gc
import sys
import time

import numpy as np
import pytest

from keras_bn.bench.memory import peak_rss_mb
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


@pytest.mark.parametrize("megabytes", [200, 400])
def test_peak_rss_sees_an_allocation_of_known_size(megabytes):
    allocate = f"import numpy; a = numpy.ones({megabytes * 1_000_000 // 8}); a += 1"
    baseline = peak_rss_mb([sys.executable, "-c", "import numpy"])
    peak = peak_rss_mb([sys.executable, "-c", allocate])
    # The array is touched (ones, then +=), so every page is resident once;
    # the interpreter and NumPy are the same in both processes.
    assert peak - baseline == pytest.approx(megabytes, rel=0.1)


def test_a_failing_command_is_one_line():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        peak_rss_mb([sys.executable, "-c", "1 / 0"])
