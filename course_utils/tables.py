"""Tables: the course's CSV data files read with their line numbers, and plain-text tables readable
in a terminal, in a notebook, and in a committed .ipynb on the web."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["format_table", "read_csv_rows"]


def read_csv_rows(path: str | Path, what: str) -> list[tuple[str, dict[str, str]]]:
    """Each data row of a CSV file with a header, as ("file.csv line N", row); ValueError if there is none.

    ``what`` names the rows in that error ("price", "model", ...). Line numbers count the header
    as line 1, as an editor shows them, so a loader's error can point at the line to fix.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no {what} rows")
    return [(f"{path.name} line {line}", row) for line, row in enumerate(rows, 2)]


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of dicts (same keys) as an aligned text table; numbers right-aligned."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    cells = [[_cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows) for c in cols]

    def line(values: list[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])
