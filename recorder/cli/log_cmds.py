"""Commands that read the log's sessions: sessions, show.

Every id and name is printed whole (a session's name or id is the handle the
other commands take); tables too wide for the terminal become one block per
record (see :mod:`recorder.cli.render`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from recorder.cli.app import db_option, emit_json, get_console, json_option, main, open_store
from recorder.cli.render import Column, print_records, when

if TYPE_CHECKING:
    from recorder.events import StoredEvent

__all__ = ["sessions", "show"]


@main.command()
@db_option
@json_option
def sessions(db: str | None, as_json: bool) -> None:
    """List the sessions in the log, oldest first (by when each was opened)."""
    from recorder.store.plain_read import list_sessions

    # The log's order is the order of recording or import: a session imported
    # today may have been opened a year ago.
    found = sorted(list_sessions(db), key=lambda s: s.opened_at_ns)
    if as_json:
        emit_json(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "labels": s.labels,
                    "opened_at": when(s.opened_at_ns),
                    "closed": s.closed,
                    "exchanges": s.exchanges,
                    "source": s.source,
                    "partial": s.metadata.get("partial"),
                }
                for s in found
            ],
            "sessions",
        )
        return
    if not found:
        click.echo("no sessions yet: record one, or `codetape import FILE`")
        return
    rows = []
    for s in found:
        labels = ", ".join(f"{k}={v}" for k, v in s.labels.items())
        state = "" if s.closed else " (open)"
        if s.metadata.get("partial"):
            state += " (partial)"
        rows.append([s.id, s.name + state, when(s.opened_at_ns), str(s.exchanges), labels])
    print_records(
        get_console(),
        [
            Column("id"),
            Column("name"),
            Column("opened (UTC)"),
            Column("exchanges", "right"),
            Column("labels"),
        ],
        rows,
    )


def _event_row(ev: StoredEvent) -> dict[str, Any]:
    from recorder.events import EventKind

    row: dict[str, Any] = {
        "position": ev.position,
        "seq": ev.seq,
        "kind": ev.kind.value,
        "bytes": len(ev.payload),
        "offset_ms": None if ev.offset_ns is None else round(ev.offset_ns / 1e6, 3),
    }
    if ev.sse_type is not None:
        row["type"] = ev.sse_type
    if ev.sequence_number is not None:
        row["sequence_number"] = ev.sequence_number
    if ev.kind in (EventKind.REQUEST, EventKind.RESPONSE_HEAD, EventKind.EXCHANGE_END):
        meta = ev.meta
        meta.pop("headers", None)
        row["meta"] = meta
    return row


@main.command()
@click.argument("session")
@db_option
@json_option
def show(session: str, db: str | None, as_json: bool) -> None:
    """Show a session's exchanges and their events (types, sizes, offsets)."""
    from rich.text import Text

    with open_store(db) as store:
        info = store.find_session(session)
        exchanges = store.exchanges(info.id)
        events_by_exchange = {x.id: store.exchange_events(x.id) for x in exchanges}
    if as_json:
        emit_json(
            {
                "id": info.id,
                "name": info.name,
                "labels": info.labels,
                "metadata": info.metadata,
                "source": info.source,
                "opened_at": when(info.opened_at_ns),
                "closed": info.closed,
                "exchanges": [
                    {
                        "id": x.id,
                        "method": x.method,
                        "url": x.url,
                        "status": x.status,
                        "outcome": x.outcome,
                        "reason": x.reason,
                        "events": [_event_row(e) for e in events_by_exchange[x.id]],
                    }
                    for x in exchanges
                ],
            },
            "show",
        )
        return
    console = get_console()
    console.print(
        Text(info.name, style="bold"), Text(f"{info.id}  opened {when(info.opened_at_ns)} UTC")
    )
    if info.source:
        console.print(f"source: {info.source}", markup=False)
    if info.metadata.get("partial"):
        console.print(Text(f"partial: {info.metadata['partial']}", style="yellow"))
    if not info.closed:
        console.print("the session is still open (being recorded, or its recorder died)")
    for n, x in enumerate(exchanges, start=1):
        ending = x.outcome or "open"
        if x.reason:
            ending += f" ({x.reason})"
        console.print()
        console.print(
            Text(f"#{n}", style="bold"),
            Text(f"{x.method} {x.url} -> {x.status} · {ending} · {x.sse_events} SSE events"),
        )
        print_records(
            console,
            [
                Column("seq", "right"),
                Column("kind"),
                Column("type"),
                Column("bytes", "right"),
                Column("offset ms", "right"),
            ],
            [
                [
                    str(ev.seq),
                    ev.kind.value,
                    ev.sse_type or "",
                    str(len(ev.payload)),
                    "" if ev.offset_ns is None else f"{ev.offset_ns / 1e6:.1f}",
                ]
                for ev in events_by_exchange[x.id]
            ],
        )
