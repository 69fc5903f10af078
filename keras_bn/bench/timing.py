"""Timing and table printing shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_ms(step: Callable[[], object], *, repeats: int, warmup: int = 2) -> float:
    """Median wall time of `step()` in milliseconds, after `warmup` calls.

    The step must return something whose `.numpy()` (or itself) forces the
    work to finish, so asynchronous execution is not mistaken for speed.
    """
    for _ in range(warmup):
        _block(step())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(step())
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
            _block(step())
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            _block(step())
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _block(result: object) -> None:
    if isinstance(result, (list, tuple)):
        for r in result:
            _block(r)
    elif hasattr(result, "numpy"):
        result.numpy()


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table, aligned, with `columns` as the header."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
