"""Numbers as text: one cell formatter for the terminal's tables and the report's, and the terminal's tables."""
from __future__ import annotations

import math


def fmt(value, digits: int = 3, nan: str = "-", grouped_from: float = math.inf) -> str:
    """A table cell as text: floats to ``digits`` significant digits, or whole with thousands
    separators from ``grouped_from`` up; NaN as ``nan``; anything else as ``str``."""
    if isinstance(value, float):
        if math.isnan(value):
            return nan
        return f"{value:,.0f}" if abs(value) >= grouped_from else f"{value:.{digits}g}"
    return str(value)


def show(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as an aligned table of ``columns`` (floats to 3 significant digits, NaN as '-')."""
    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
