"""`keras_bn.timing`: the medians are of the step's own time, forced to finish."""

import statistics

import numpy as np
import pytest

from keras_bn import timing


class FakeClock:
    """`time.perf_counter` that advances by a scripted duration per step call."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Forced:
    """A result whose `.numpy()` records that it was forced."""

    def __init__(self, log):
        self.log = log

    def numpy(self):
        self.log.append("forced")


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_median_ms_is_the_median_of_the_timed_calls_after_warmup(clock):
    durations = iter([5.0, 5.0, 0.001, 0.003, 0.002, 0.010, 0.004])  # seconds

    def step():
        clock.now += next(durations)

    ms = timing.median_ms(step, repeats=5, warmup=2)
    assert ms == pytest.approx(statistics.median([1.0, 3.0, 2.0, 10.0, 4.0]))


def test_every_result_is_forced_before_the_clock_stops():
    log = []

    def step():
        log.append("called")
        return [Forced(log), (Forced(log),)]

    timing.median_ms(step, repeats=3, warmup=1)
    assert log == ["called", "forced", "forced"] * 4


def test_interleaved_median_ms_calls_each_step_once_per_round(clock):
    order = []
    costs = {"a": 0.002, "b": 0.005}

    def make(name):
        def step():
            order.append(name)
            clock.now += costs[name]

        return step

    ms = timing.interleaved_median_ms(
        {"a": make("a"), "b": make("b")}, repeats=4, warmup=1
    )
    assert order == ["a", "b"] * 5
    np.testing.assert_allclose([ms["a"], ms["b"]], [2.0, 5.0])
