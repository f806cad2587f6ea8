"""Terminal output that never loses data, whatever the width or when piped.

Guarantees: :func:`print_records` shows every character of every cell. Rows
that fit the console's width side by side are a table; otherwise each record
becomes a block of ``field  value`` lines, values wrapping (long words folded)
rather than cut. Ids are never shortened. The formatting helpers here
(times, money) are shared by every report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from recorder.errors import CodetapeError
from recorder.events import now_ns

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "BadOption",
    "Column",
    "Row",
    "money",
    "note_behind",
    "parse_time",
    "print_records",
    "when",
]

SECOND = 1_000_000_000
_GAP = 2  # spaces between table columns


class BadOption(CodetapeError):
    """An option value the user can fix (a time, a grouping)."""


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"


@dataclass(frozen=True, slots=True)
class Row:
    cells: Sequence[str]
    style: str | None = None


def print_records(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Row | Sequence[str]],
    *,
    title: str | None = None,
) -> None:
    """``rows`` as a table if each fits on one line at the console's width, else as blocks."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    records = [r if isinstance(r, Row) else Row(r) for r in rows]
    widths = [cell_len(c.header) for c in columns]
    for record in records:
        for index, cell in enumerate(record.cells):
            widest = max((cell_len(line) for line in cell.splitlines()), default=0)
            widths[index] = max(widths[index], widest)
    needed = sum(widths) + _GAP * (len(columns) - 1)
    if title:
        console.print(Text(title, style="bold"))
    if needed <= console.width:
        table = Table(box=None, pad_edge=False, padding=(0, _GAP // 2), show_edge=False)
        for column, width in zip(columns, widths, strict=True):
            table.add_column(column.header, justify=column.justify, no_wrap=True, min_width=width)
        for record in records:
            table.add_row(*(Text(cell) for cell in record.cells), style=record.style)
        console.print(table)
        return
    label_width = max(cell_len(c.header) for c in columns)
    for number, record in enumerate(records):
        if number:
            console.print()
        grid = Table.grid(padding=(0, _GAP))
        grid.add_column(no_wrap=True, min_width=label_width, style="bold")
        grid.add_column(overflow="fold", style=record.style)
        for column, cell in zip(columns, record.cells, strict=True):
            grid.add_row(Text(column.header), Text(cell))
        console.print(grid)


def when(ns: int | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, or ``—`` when unknown."""
    if ns is None:
        return "—"
    return dt.datetime.fromtimestamp(ns // SECOND, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def money(value: str | Decimal | None) -> str:
    """``$0.0308`` with at least two decimals and no trailing zeros beyond them."""
    if value is None:
        return "unknown"
    amount = Decimal(value)
    text = f"{amount:.8f}".rstrip("0")
    if text.endswith("."):
        text += "00"
    elif len(text.split(".")[1]) < 2:
        text += "0"
    return "$" + text


def parse_time(value: str | None, option: str) -> int | None:
    """``now``, a date (``2026-03-31``) or an ISO datetime (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value == "now":
        return now_ns()
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadOption(
            f"{option} {value!r} is not a time: use now, YYYY-MM-DD or "
            "YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * SECOND + parsed.microsecond * 1000


def note_behind(behind: int) -> None:
    """Say, on stderr, how far behind the log the stored projections a report read are.

    On stderr so that piped output (a table, CSV) stays data; ``--json`` output
    carries the same figure as ``projections_behind``.
    """
    if behind > 0:
        import click

        click.echo(
            f"note: projections {behind:,} events behind the log (folded in for this report; "
            "`codetape projections catch-up` stores them)",
            err=True,
        )
