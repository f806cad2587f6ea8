"""``audit``: every piece of code that ran, with its outputs and the log positions behind it.

The terminal view loses nothing at any width: code lines wrap (under their
line number), and the ids and positions are ordinary wrapped text, never a
panel title that the border would cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from recorder.cli.app import db_option, emit_json, get_console, json_option, main, open_store
from recorder.cli.render import note_behind, when

if TYPE_CHECKING:
    from recorder.projections import AuditEntry

__all__ = ["audit", "print_audit"]


def _image(url: str) -> str:
    if not url.startswith("data:"):
        return f"image: {url}"
    media = url.removeprefix("data:").split(";", 1)[0].split(",", 1)[0]
    return f"image: {media} data URL, {len(url) // 1024} KB (whole in --json)"


def print_audit(entries: list[AuditEntry]) -> None:
    from rich.console import Group
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.text import Text

    console = get_console()
    if not entries:
        console.print("no code interpreter code in the log")
        return
    for n, e in enumerate(entries, start=1):
        header = Text(
            f"#{n} {e.status} · call {e.call_id} · container {e.container_id or '—'} · "
            f"response {e.response_id or '—'}",
            style="bold",
        )
        origin = Text(
            f"session {e.session_id} · started {when(e.started_at_ns)} UTC · "
            f"log positions {e.first_position}–{e.last_position} "
            f"(vouching: {', '.join(map(str, e.positions))})",
            style="dim",
        )
        code = Syntax(e.code.replace("\r\n", "\n"), "python", line_numbers=True, word_wrap=True)
        parts: list[Any] = [header, origin, code]
        if e.outputs is None:
            parts.append(Text("outputs not recorded (the request did not include them)", "dim"))
        for o in e.outputs or []:
            if o.get("type") == "logs":
                parts.append(Text("logs:", "bold"))
                parts.append(Text(str(o.get("logs", "")), "green"))
            elif o.get("type") == "image":
                parts.append(Text(_image(str(o.get("url", ""))), "yellow"))
            else:
                parts.append(Text(f"{o.get('type')}: {o}", "yellow"))
        console.print(Panel(Group(*parts)))


@main.command()
@click.argument("session", required=False)
@db_option
@json_option
def audit(session: str | None, db: str | None, as_json: bool) -> None:
    """Every piece of code that ran, in order, with outputs and the log positions behind it.

    `codetape verify` re-derives the hash chain over those positions.
    """
    from recorder import projections as P

    with open_store(db) as store:
        sid = store.find_session(session).id if session else None
        read = P.read_audit(store, sid)
    if as_json:
        emit_json(
            {
                "session_id": sid,
                "entries": [e.to_json() for e in read.value],
                "projections_behind": read.behind,
            },
            "audit",
        )
        return
    print_audit(read.value)
    note_behind(read.behind)
