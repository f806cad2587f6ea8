"""Terminal output that never loses data, whatever the width or when piped.

Guarantees: :func:`print_records` shows every character of every cell. Rows
that fit the console's width side by side are a table; otherwise each record
becomes a block of ``field  value`` lines, values wrapping (long words folded)
rather than cut. Output that goes to no terminal and is given no width
(``COLUMNS``), a pipe, is always a table at its own width: nothing wraps.
Ids are never shortened. The formatting helpers here (times, money) are
shared by every report.

Recorded strings are data, not terminal commands: :func:`printable` shows
control characters (an escape sequence in a session name, a bidirectional
override) as visible symbols, and every console :func:`new_console` makes
applies it to what it prints, its own styling excepted: text printed
directly and table cells (:func:`print_records`) before they are laid out;
anything nested elsewhere loses them (they take no column, so no layout
moves). ``--json`` output does not pass through here and stays exact.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import click

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderResult
    from rich.measure import Measurement

__all__ = [
    "BadOption",
    "Column",
    "Row",
    "money",
    "new_console",
    "note_behind",
    "print_records",
    "printable",
    "when",
]

SECOND = 1_000_000_000
_GAP = 2  # spaces between table columns


# C0 controls as their Unicode control pictures (ESC → ␛), DEL as ␡; C1 controls
# and the bidirectional overrides and isolates (which reorder what follows) as �.
# Line breaks and tabs stay: they are layout, not commands.
_VISIBLE: dict[int, str] = {
    **{code: chr(0x2400 + code) for code in range(0x20) if chr(code) not in "\n\t"},
    0x7F: "\u2421",
    **{code: "\ufffd" for code in range(0x80, 0xA0)},
    **{code: "\ufffd" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}


def printable(text: str) -> str:
    """``text`` with every control character a terminal would act on shown as a symbol."""
    return text.translate(_VISIBLE)


_DROPPED: dict[int, None] = dict.fromkeys(_VISIBLE)


class _Printable:
    """A renderable whose text segments carry no control character (the console's
    own control segments, cursor moves and the like, pass as they are).

    Laid out already, so the characters are dropped rather than shown: the
    layout gave them no column, and a symbol would push the line past it.
    """

    def __init__(self, renderable: ConsoleRenderable) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        for segment in console.render(self.renderable, options):
            if segment.control is None and not segment.text.isprintable():
                segment = Segment(segment.text.translate(_DROPPED), segment.style)
            yield segment

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.renderable)


def new_console(**settings: Any) -> Console:
    """A console for a command's human output: no highlighting, no soft wrap, and
    recorded text shown, never obeyed (:func:`printable`)."""
    from rich.console import Console, RenderHook

    class Neutralise(RenderHook):
        def process_renderables(
            self, renderables: list[ConsoleRenderable]
        ) -> list[ConsoleRenderable]:
            return [_shown(r) for r in renderables]

    console = Console(highlight=False, soft_wrap=False, **settings)
    console.push_render_hook(Neutralise())
    return console


def _shown(renderable: ConsoleRenderable) -> ConsoleRenderable:
    from rich.text import Text

    if isinstance(renderable, Text):
        # One character for one: the styles' spans keep their places.
        shown = renderable.copy()
        shown.plain = printable(renderable.plain)
        return _Printable(shown)
    return _Printable(renderable)


def _piped(console: Console) -> bool:
    """Output to no terminal with no width given: a pipe or a file, read by a program."""
    return not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit()


class BadOption(click.UsageError):
    """An option value or combination the user can fix: a usage mistake (exit status 2)."""


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

    records = [
        Row([printable(c) for c in r.cells], r.style)
        if isinstance(r, Row)
        else Row([printable(c) for c in r])
        for r in rows
    ]
    widths = [cell_len(c.header) for c in columns]
    for record in records:
        for index, cell in enumerate(record.cells):
            widest = max((cell_len(line) for line in cell.splitlines()), default=0)
            widths[index] = max(widths[index], widest)
    needed = sum(widths) + _GAP * (len(columns) - 1)
    if title:
        console.print(Text(title, style="bold"))
    piped = _piped(console)
    if needed <= console.width or piped:
        table = Table(box=None, pad_edge=False, padding=(0, _GAP // 2), show_edge=False)
        for column, width in zip(columns, widths, strict=True):
            table.add_column(column.header, justify=column.justify, no_wrap=True, min_width=width)
        for record in records:
            table.add_row(*(Text(cell) for cell in record.cells), style=record.style)
        if piped and needed > console.width:
            # No terminal to fit: a console as wide as the table, on the same output.
            new_console(file=console.file, width=needed).print(table)
            return
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


def note_behind(behind: int) -> None:
    """Say, on stderr, how far behind the log the stored projections a report read are.

    On stderr so that piped output (a table, CSV) stays data; ``--json`` output
    carries the same figure as ``projections_behind``.
    """
    if behind > 0:
        click.echo(
            f"note: projections {behind:,} events behind the log (folded in for this report; "
            "`codetape projections catch-up` stores them)",
            err=True,
        )
