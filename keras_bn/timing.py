"""The timers shared by the benchmarks, the demo and `export.runtimes`.

A step is timed only once its result is ready: TensorFlow may return before
the work is done, so anything with `.numpy()` is forced (`block`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(step: Callable[[], object], *, repeats: int, warmup: int = 2) -> float:
    """Median wall time of `step()` in milliseconds, after `warmup` calls.

    The step must return something whose `.numpy()` (or itself) forces the
    work to finish, so asynchronous execution is not mistaken for speed.
    """
    for _ in range(warmup):
        block(step())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(step())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved_median_ms(
    steps: dict[str, Callable[[], object]], *, repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median ms per step, calling every step once per round.

    Interleaving spreads slow drifts of a shared machine (another process,
    thermal throttling) evenly over the steps being compared.
    """
    for _ in range(warmup):
        for step in steps.values():
            block(step())
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            block(step())
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def block(result: object) -> None:
    """Waits until `result` (a tensor, or a list or tuple of them) is computed."""
    if isinstance(result, (list, tuple)):
        for r in result:
            block(r)
    elif hasattr(result, "numpy"):
        result.numpy()


def latency_columns(
    ms: dict[str, float], ratios: tuple[tuple[str, str], ...]
) -> dict[str, float]:
    """A benchmark row's timing columns: `"NAME ms"` per entry, then `"A/B"` ratios.

    Every ratio is taken between two timings of the same run, so a loaded
    machine moves both sides alike.

    Example:

    >>> latency_columns({"folded": 2.0, "unfolded": 4.0}, (("folded", "unfolded"),))
    {'folded ms': 2.0, 'unfolded ms': 4.0, 'folded/unfolded': 0.5}
    """
    columns = {f"{name} ms": value for name, value in ms.items()}
    columns.update({f"{a}/{b}": ms[a] / ms[b] for a, b in ratios})
    return columns
