"""Table values as the report shows them: the number format, and a table of formatted strings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

MISSING = "—"


def fmt_value(value: Any) -> str:
    """Format one table value.

    None/NaN -> "—"; int -> thousands separators ("1,234"); float -> 1 decimal when |v| >= 100,
    2 decimals when |v| >= 1, else 3 decimals; anything else -> ``str``.
    """
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        magnitude = abs(value)
        if magnitude >= 100 or math.isinf(value):
            return f"{value:,.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    """A ratio as people say it: 1.42×."""
    return MISSING if value is None or math.isnan(value) else f"{value:.2f}×"


def fmt_gib(n_bytes: int | None) -> str:
    return MISSING if n_bytes is None else f"{n_bytes / 2**30:.2f} GiB"


@dataclass(frozen=True)
class Column:
    key: str  # column of the source frame
    header: str  # full header (Markdown, and HTML when there is no group)
    group: str | None = None  # HTML: grouped header cell spanning consecutive columns
    sub: str | None = None  # HTML: header under the group
    numeric: bool = True


@dataclass(frozen=True)
class Table:
    """Every value already a string: the HTML and Markdown writers only escape and lay out."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, columns: Sequence[Column], caption: str = "") -> Table:
        rows = tuple(tuple(fmt_value(rec.get(c.key)) for c in columns) for rec in frame.iter_rows(named=True))
        return cls(tuple(columns), rows, caption)

    @classmethod
    def from_records(cls, records: Sequence[dict], columns: Sequence[Column], caption: str = "") -> Table:
        rows = tuple(tuple(fmt_value(rec.get(c.key)) for c in columns) for rec in records)
        return cls(tuple(columns), rows, caption)

    @property
    def header_groups(self) -> list[tuple[Column, int]] | None:
        """HTML's top header row: (first column, span) per group or ungrouped column; None when no group."""
        if not any(c.group for c in self.columns):
            return None
        out, i, cols = [], 0, self.columns
        while i < len(cols):
            j = i + 1
            if cols[i].group is not None:
                while j < len(cols) and cols[j].group == cols[i].group:
                    j += 1
            out.append((cols[i], j - i))
            i = j
        return out


def kv_table(rows: Sequence[tuple[str, str]], caption: str = "") -> Table:
    return Table((Column("key", "Key", numeric=False), Column("value", "Value", numeric=False)), tuple(rows), caption)
