"""What the command line prints on stdout: one JSON document, or tables."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from keras_bn.text_table import cell_text, format_table

__all__ = [
    "cell_text",
    "format_row_tables",
    "format_table",
    "jsonable",
    "print_json",
    "size_text",
]


def jsonable(value):
    """`value` with reports, dataclasses, NumPy scalars and paths made JSON-ready.

    Objects with a `to_dict()` (the library's reports) are asked for it.
    NumPy is imported here, not with the module: `--help` must not load it.
    """
    import numpy as np

    if hasattr(value, "to_dict") and not isinstance(value, type):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(payload: dict) -> None:
    """Prints `payload` as one indented JSON document on stdout."""
    print(json.dumps(jsonable(payload), indent=2))


def size_text(n: int) -> str:
    """Bytes as KiB with one decimal."""
    return f"{n / 1024:.1f} KiB"


def format_row_tables(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """One table per value of the rows' `"table"` key (benchmarks), in order.

    Each table shows the `columns` its rows have; rows without a `"table"`
    key form one table.
    """
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("table"), []).append(row)
    blocks = []
    for name, group in groups.items():
        shown = [c for c in columns if any(c in row for row in group)]
        title = f"{name}\n" if name is not None else ""
        blocks.append(title + format_table(group, shown))
    return "\n\n".join(blocks)
