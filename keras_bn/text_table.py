"""Plain-text tables, aligned in columns: the one renderer of the library and the CLI.

TensorFlow-free and NumPy-free, so the command line can draw a table without
loading either.
"""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table, aligned, with `columns` as the header.

    Args:
        rows: One dict per row, keyed by column; a missing key is an empty cell.
        columns: The header, in the order the columns are shown.

    Returns:
        The header, a line of dashes, then one line per row (`cell_text` of
        each value), columns separated by two spaces.

    Example:

    >>> print(format_table([{"layer": "bn", "count": 2}], ["layer", "count"]))  # doctest: +SKIP
    """
    cells = [[cell_text(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells
    ]
    return "\n".join(lines)


def cell_text(value: object) -> str:
    """A table cell: floats to 3 significant digits, `None` empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
