"""``demo``: record a bundled real code interpreter session and show every report on it.

No API key and no network: the openai SDK streams the bundled tape through
the recorder wrapped around a replay of it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recorder.cli.app import OutputFile, db_option, get_console, main
from recorder.cli.audit_cmd import print_audit
from recorder.cli.container_cmds import print_containers
from recorder.cli.cost_cmd import print_cost
from recorder.cli.render import SECOND, money, when
from recorder.cli.stream_cmds import print_chunks, print_stages

if TYPE_CHECKING:
    from recorder.projections import Stage

__all__ = ["demo"]


class _LiveEvents:
    """Prints the SDK's stream events as they arrive; a run of one kind is one line with a count.

    ``header`` is printed before the first event (so not at all when nothing streams).
    """

    def __init__(self, header: str) -> None:
        self.header = header
        self.key: str | None = None
        self.count = 0
        self.total = 0

    def __call__(self, event: Any) -> None:
        if not self.total:
            get_console().print(self.header, markup=False)
        self.total += 1
        key = str(getattr(event, "type", type(event).__name__))
        item = getattr(event, "item", None)
        if item is not None and getattr(item, "type", None):
            key += f" ({item.type})"
        if key == self.key:
            self.count += 1
            return
        self._line()
        self.key, self.count = key, 1

    def _line(self) -> None:
        if self.key is not None:
            count = f" ×{self.count}" if self.count > 1 else ""
            get_console().print(f"  {self.key}{count}", markup=False)

    def done(self) -> None:
        self._line()
        self.key = None


def _original_date_fees(report: dict[str, Any], session_id: str, stages: list[Stage]) -> None:
    """For a replayed recording: the container fee under the rule of the original run's day.

    The log dates a replayed container by the replay, so the cost report applies
    the fee rule of the replay's day; the original's day is its response's
    ``created_at``.
    """
    created = {
        s.container_id: s.response_created_at * SECOND
        for s in stages
        if s.container_id and s.response_created_at
    }
    ours = [
        c
        for c in report["containers"]
        if c["session_id"] == session_id and c["charged"] and c["container_id"] in created
    ]
    if not ours:
        return
    from recorder import projections as P
    from recorder.projections.containers import DEFAULT_IDLE_MINUTES

    table = P.load_fee_table()
    tokens = sum(
        (
            Decimal(i["token_cost"])
            for i in report["exchanges"]
            if i["session_id"] == session_id and i["token_cost"] is not None
        ),
        Decimal(0),
    )
    total: Decimal | None = tokens
    for c in ours:
        at = created[c["container_id"]]
        fee = table.fee(c["memory"], at, at, at + DEFAULT_IDLE_MINUTES * 60 * SECOND)
        total = None if fee.amount is None or total is None else total + fee.amount
        get_console().print(
            f"[dim]the log dates container {c['container_id']} by this replay "
            f"({c['day']}), so that day's fee rule applies above; OpenAI ran it on "
            f"{when(at)[:10]}: {fee.rule} ({fee.basis}).[/dim]",
        )
    if total is not None:
        get_console().print(
            f"[dim]at the original's date: {money(total)} in all, with the tokens above.[/dim]"
        )


@main.command()
@click.option(
    "--report",
    "report_file",
    type=OutputFile(dir_okay=False),
    help="Where to write the session's HTML report (default: beside the database).",
)
@db_option
def demo(report_file: Path | None, db: str | None) -> None:
    """Record a bundled real code-interpreter session (no API key, no network) and show
    its chunks, stage timeline, audit trail, cost and container state.

    The openai SDK records it: its transport is the recorder wrapped around a
    replay of the bundled tape. Running the demo again reuses the session
    recorded the first time (another --db records afresh). The embedded default
    database is created on first use; any other is set up with `codetape db
    upgrade` first, as for every command.
    """
    from recorder import projections as P
    from recorder.demo import DEMO_API_KEY, DEMO_SESSION_NAME, demo_tape_path, record
    from recorder.events import now_ns
    from recorder.store.engine import describe_url
    from recorder.store.store import EventStore

    # Like every command: only the embedded default is set up here (a mistyped
    # --db path or an older schema is refused, not created or migrated).
    with EventStore.open(db) as store:
        get_console().rule(f"[bold]codetape demo[/bold] · {DEMO_SESSION_NAME}")
        get_console().rule("0. recording  (codetape.record + ReplayTransport)")
        live = _LiveEvents(
            f"openai.OpenAI(api_key={DEMO_API_KEY!r}) → RecordingTransport → "
            f"ReplayTransport({demo_tape_path().name}): the SDK streams a real recorded "
            "code-interpreter session through the recorder. No API key, no network."
        )
        done = record(store, on_event=live)
        live.done()
        session_id = done.session_id
        info = store.find_session(session_id)
        recorded_at = when(info.opened_at_ns) + " UTC"
        if done.new:
            get_console().print(
                f"recorded session {session_id} ({live.total} stream events reached the SDK) "
                f"in {describe_url(store.url)}"
            )
        else:
            get_console().print(
                f"already recorded; reusing session {session_id} (recorded {recorded_at}) in "
                f"{describe_url(store.url)} rather than recording the demo twice "
                "(another --db records afresh)"
            )
        get_console().rule("1. the stream, as chunks  (codetape chunks SESSION)")
        print_chunks(P.chunks(store, session_id))
        get_console().rule("2. code interpreter stages  (codetape stages SESSION)")
        found_stages = P.stages(store, session_id)
        print_stages(found_stages)
        if done.original_timing:
            get_console().print(
                "[dim]replayed at the recording's original pace: the times follow the "
                "original's.[/dim]"
            )
        else:
            get_console().print(
                f"[dim]replay timing: when the SDK received the tape's bytes on this machine "
                f"({done.pace} pace, {recorded_at}). The original recording kept no arrival times, "
                "so how long code generation and execution really took is unknown.[/dim]"
            )
        audit_entries = P.audit(store, session_id)
        get_console().rule("3. audit trail of executed code  (codetape audit SESSION)")
        print_audit(audit_entries)
        get_console().rule("4. cost  (codetape cost)")
        report = P.costs(store, by="session").to_json()
        print_cost(report)
        _original_date_fees(report, session_id, found_stages)
        used = {e.container_id for e in audit_entries if e.container_id}
        for c in report["containers"]:
            if c["container_id"] in used and c["session_id"] != session_id:
                get_console().print(
                    f"[dim]container {c['container_id']} was first seen in session "
                    f"{store.find_session(c['session_id']).name!r} of this log: its fee is "
                    "counted there.[/dim]"
                )
        get_console().rule("5. containers  (codetape containers --at TIME)")
        entries = [
            c for c in P.containers(store) if c.session_id == session_id or c.container_id in used
        ]
        at_ns = max((c.last_activity_ns for c in entries), default=now_ns()) + 5 * 60 * SECOND
        print_containers([c.to_json(at_ns) for c in entries], at_ns)
        get_console().print(
            "[dim]state judged 5 minutes after the container's last activity; "
            "`codetape containers` judges it now. The times are the log's: for this demo, "
            "when it was replayed, not when OpenAI ran it.[/dim]"
        )
        from recorder.cli.insight_cmds import demo_insight

        demo_insight(store, session_id, report_file)
