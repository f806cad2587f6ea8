"""Commands over the projections: chunks, stages, audit, cost, containers, projections, demo.

Every command catches the projections it reads up to the log's head first;
``--json`` (and ``--csv`` for ``cost``) print what scripts read, the default
is a rich terminal view of the same data.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from rich.console import Group as RichGroup
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from recorder import projections as P
from recorder.cli.app import console, db_option, emit_json, json_option, main, open_store
from recorder.errors import CodetapeError
from recorder.events import now_ns
from recorder.projections.containers import DEFAULT_IDLE_MINUTES

_SECOND = 1_000_000_000


class BadOption(CodetapeError):
    """An option value the user can fix (a time, a grouping)."""


def _parse_time(value: str | None, option: str) -> int | None:
    """``now``, a date (``2026-03-31``) or an ISO datetime (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value == "now":
        return now_ns()
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadOption(
            f"{option} {value!r} is not a time: "
            "use now, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * _SECOND + parsed.microsecond * 1000


def _when(ns: int | None) -> str:
    if ns is None:
        return "—"
    return dt.datetime.fromtimestamp(ns // _SECOND, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _money(value: str | Decimal | None) -> str:
    if value is None:
        return "unknown"
    amount = Decimal(value)
    text = f"{amount:.8f}".rstrip("0")
    if text.endswith("."):
        text += "00"
    elif len(text.split(".")[1]) < 2:
        text += "0"
    return "$" + text


def _short(value: str | None, n: int = 14) -> str:
    if not value:
        return "—"
    return value if len(value) <= n else value[: n - 1] + "…"


# -- projections ---------------------------------------------------------------


@main.group()
def projections() -> None:
    """Inspect or rebuild the projections (derived read models)."""


@projections.command("rebuild")
@click.argument("name", required=False, type=click.Choice(P.NAMES))
@db_option
def projections_rebuild(name: str | None, db: str | None) -> None:
    """Rebuild NAME (default: all) from position 0, with a progress bar."""
    with open_store(db) as store:
        names = [name] if name else None
        columns = (
            TextColumn("rebuilding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(name or "all projections", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            consumed = P.rebuild(store, names, progress=advance)
            head = store.last_position()
            progress.update(task, completed=head, total=head)
    click.echo(f"rebuilt {name or ', '.join(P.NAMES)}: {consumed} events consumed")


@projections.command("status")
@db_option
@json_option
def projections_status(db: str | None, as_json: bool) -> None:
    """Each projection's checkpoint against the log's head."""
    with open_store(db) as store:
        stored = P.checkpoints(store)
        head = store.last_position()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "position": stored.get(name, (0, 0))[0],
            "version": stored.get(name, (0, None))[1],
            "behind": head - stored.get(name, (0, 0))[0],
        }
        for name in P.NAMES
    ]
    if as_json:
        emit_json({"head": head, "projections": rows})
        return
    table = Table("projection", "checkpoint", "behind head", "version", box=None)
    for r in rows:
        table.add_row(r["name"], str(r["position"]), str(r["behind"]), str(r["version"] or "—"))
    console.print(table)
    console.print(f"log head: {head} (readers catch up automatically)")


# -- chunks --------------------------------------------------------------------


def _output_summary(outputs: list[dict[str, Any]] | None) -> str:
    if outputs is None:
        return "outputs not recorded"
    parts = []
    for o in outputs:
        if o.get("type") == "logs":
            logs = str(o.get("logs", ""))
            parts.append("logs: " + (logs if len(logs) < 60 else logs[:57] + "…"))
        elif o.get("type") == "image":
            parts.append(f"image ({len(str(o.get('url', ''))) // 1024} KB data URL)")
        else:
            parts.append(str(o.get("type")))
    return "; ".join(parts) or "no outputs"


def print_chunks(chunks: list[P.Chunk]) -> None:
    """The stream as a terminal would show it while it arrives."""
    for chunk in chunks:
        meta = chunk.metadata
        if chunk.output:
            console.print(chunk.output, end="", markup=False)
        if "code_interpreter" in meta:
            stage = meta["code_interpreter"]["stage"]
            data = meta["code_interpreter"]["data"]
            if stage == "code_delta":
                console.print(Text(data.get("delta", ""), style="cyan"), end="")
            elif stage == "started":
                console.print(
                    Text(
                        f"\n▶ code_interpreter started  {data['id']}"
                        f"  in {data.get('container_id')}\n",
                        style="bold magenta",
                    ),
                    end="",
                )
            elif stage == "in_progress":
                console.print(Text("  · in_progress\n", style="magenta"), end="")
            elif stage == "interpreting":
                console.print(
                    Text("\n  · interpreting (running the code)\n", style="magenta"), end=""
                )
            else:
                style = "bold green" if stage == "completed" else "bold red"
                console.print(
                    Text(f"  ■ {stage}: {_output_summary(data.get('outputs'))}\n", style=style),
                    end="",
                )
        elif "response" in meta:
            r = meta["response"]
            usage = r.get("usage")
            line = f"[response {r.get('id')} · {r.get('model')} · {r.get('status')}"
            if isinstance(usage, dict):
                line += f" · {usage.get('input_tokens')} in / {usage.get('output_tokens')} out"
            console.print(Text("\n" + line + "]\n", style="dim"), end="")
        elif "annotation" in meta:
            a = meta["annotation"] or {}
            console.print(
                Text(f" [file {a.get('filename')} ({a.get('file_id')})]", style="yellow"), end=""
            )
        elif "error" in meta:
            console.print(Text(f"\n[error {meta['error']}]\n", style="bold red"), end="")
        elif "reasoning_summary" in meta:
            console.print(Text(str(meta["reasoning_summary"]), style="italic dim"), end="")
    console.print()


@main.command()
@click.argument("session")
@db_option
@json_option
def chunks(session: str, db: str | None, as_json: bool) -> None:
    """The session's stream as chunks: output text plus code interpreter stage metadata."""
    with open_store(db) as store:
        info = store.find_session(session)
        found = P.chunks(store, info.id)
    if as_json:
        emit_json({"session_id": info.id, "chunks": [c.to_json() for c in found]})
        return
    print_chunks(found)


# -- stages --------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.0f}"


_ARRIVALS = ("started", "in_progress", "first_code_delta", "code_done", "interpreting", "completed")


def print_stages(stages: list[P.Stage]) -> None:
    if not stages:
        console.print("no code interpreter calls")
        return
    timed = [s for s in stages if s.timed]
    if timed:
        table = Table(
            box=None, title="code interpreter stages (ms since the request was sent)", expand=True
        )
        table.add_column("call", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("status", no_wrap=True)
        for header in ("start", "in prog", "1st Δ", "code done", "interp", "done"):
            table.add_column(header, justify="right", no_wrap=True)
        table.add_column("codegen", justify="right", no_wrap=True, style="bold")
        table.add_column("exec", justify="right", no_wrap=True, style="bold")
        for s in timed:
            j = s.to_json()
            table.add_row(
                s.call_id,
                s.status,
                *(_ms(j["arrivals_ms"][k]) for k in _ARRIVALS),
                _ms(j["code_generation_ms"]),
                _ms(j["execution_ms"]),
            )
        console.print(table)
    untimed = [s for s in stages if not s.timed]
    if untimed:
        table = Table(box=None, title="code interpreter calls without arrival times", expand=True)
        table.add_column("call", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("status", no_wrap=True)
        table.add_column("code deltas", justify="right")
        table.add_column("response created / completed (UTC)", no_wrap=True)
        for s in untimed:
            coarse = _when((s.response_created_at or 0) * _SECOND) if s.response_created_at else "—"
            done = s.response_completed_at
            coarse += " / " + (_when(done * _SECOND) if done else "not given")
            table.add_row(s.call_id, s.status, str(s.delta_count), coarse)
        console.print(table)
        console.print(
            f"[dim]{len(untimed)} call(s) come from a recording without arrival times "
            "(an import from another tool): stage times and durations are unknown, "
            "not guessed.[/dim]"
        )


@main.command()
@click.argument("session")
@db_option
@json_option
def stages(session: str, db: str | None, as_json: bool) -> None:
    """Per code interpreter call: stage arrival times, code-generation and execution durations."""
    with open_store(db) as store:
        info = store.find_session(session)
        found = P.stages(store, info.id)
    if as_json:
        emit_json({"session_id": info.id, "calls": [s.to_json() for s in found]})
        return
    print_stages(found)


# -- audit ---------------------------------------------------------------------


def print_audit(entries: list[P.AuditEntry]) -> None:
    if not entries:
        console.print("no code interpreter code in the log")
        return
    for n, e in enumerate(entries, start=1):
        title = (
            f"#{n} {e.status} · call {e.call_id} · container {e.container_id or '—'} · "
            f"response {e.response_id or '—'}"
        )
        subtitle = (
            f"session {e.session_id[:12]} · started {_when(e.started_at_ns)} UTC · "
            f"log positions {e.first_position}–{e.last_position} "
            f"(vouching: {', '.join(map(str, e.positions))})"
        )
        parts: list[Any] = [Syntax(e.code.replace("\r\n", "\n"), "python", line_numbers=True)]
        if e.outputs is None:
            parts.append(Text("outputs not recorded (the request did not include them)", "dim"))
        for o in e.outputs or []:
            if o.get("type") == "logs":
                parts.append(Text("logs:", "bold"))
                parts.append(Text(str(o.get("logs", "")), "green"))
            elif o.get("type") == "image":
                url = str(o.get("url", ""))
                parts.append(Text(f"image: {url[:40]}… ({len(url) // 1024} KB data URL)", "yellow"))
            else:
                parts.append(Text(f"{o.get('type')}: {o}", "yellow"))
        console.print(Panel(RichGroup(*parts), title=title, subtitle=subtitle, title_align="left"))


@main.command()
@click.argument("session", required=False)
@db_option
@json_option
def audit(session: str | None, db: str | None, as_json: bool) -> None:
    """Every piece of code that ran, in order, with outputs and the log positions behind it.

    `codetape verify` re-derives the hash chain over those positions.
    """
    with open_store(db) as store:
        sid = store.find_session(session).id if session else None
        found = P.audit(store, sid)
    if as_json:
        emit_json({"session_id": sid, "entries": [e.to_json() for e in found]})
        return
    print_audit(found)


# -- cost ----------------------------------------------------------------------

_CSV_FIELDS = (
    "key",
    "exchanges",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "token_cost",
    "containers",
    "container_fees",
    "total",
    "basis",
)


def print_cost(report: dict[str, Any]) -> None:
    table = Table(box=None, title=f"cost by {report['by']} (USD)", expand=True)
    table.add_column(report["by"], overflow="ellipsis", no_wrap=True, ratio=1)
    for header in ("in", "cached", "out", "tokens", "containers", "total"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("basis", no_wrap=True)
    for g in [*report["groups"], report["total"]]:
        containers = _money(g["container_fees"])
        if g["containers"]:
            containers = f"{g['containers']}× {containers}"
        table.add_row(
            g["key"],
            f"{g['input_tokens']:,}",
            f"{g['cached_tokens']:,}",
            f"{g['output_tokens']:,}",
            _money(g["token_cost"]),
            containers,
            _money(g["total"]),
            g["basis"],
            style="bold" if g is report["total"] else None,
        )
    console.print(table)
    rules = sorted(
        {f"tokens ({i['token_basis']}): {i['token_rule']}" for i in report["exchanges"]}
        | {f"container ({c['fee_basis']}): {c['fee_rule']}" for c in report["containers"]}
    )
    if rules:
        console.print("[bold]rules[/bold]")
        for rule in rules:
            console.print(f"  · {rule}", markup=False)
    possible = report["possible_unattributed_containers"]
    if possible:
        console.print(
            f"[yellow]{len(possible)} possible unattributed container(s), not in the totals "
            f"(up to {_money(report['possible_unattributed_fees'])}): requests that enabled "
            "code_interpreter with container auto but made no call[/yellow]"
        )
        for p in possible:
            console.print(
                f"  · {p['day']} exchange {p['exchange_id'][:12]} response {p['response_id']} "
                f"({p['memory']}): {_money(p['possible_fee'])}",
                markup=False,
            )
    console.print(
        f"[dim]fee table: {report['fee_table']['source']} (as of {report['fee_table']['as_of']})"
        "[/dim]"
    )


@main.command()
@click.option(
    "--by", type=click.Choice(P.GROUPINGS), default="session", show_default=True, help="Grouping."
)
@click.option("--since", metavar="TIME", help="Only exchanges at or after TIME (date or ISO).")
@click.option("--until", metavar="TIME", help="Only exchanges before TIME (date or ISO).")
@click.option(
    "--fees",
    type=click.Path(path_type=Path),
    help="Your own container fee table (JSON, same shape as the shipped one).",
)
@click.option(
    "--idle-minutes",
    type=click.IntRange(min=1),
    help="Idle timeout for container lifetimes (default: the container's own, else 20).",
)
@db_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print the groups as CSV.")
def cost(
    by: str,
    since: str | None,
    until: str | None,
    fees: Path | None,
    idle_minutes: int | None,
    db: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Token cost (genai-prices) and container fees, each marked exact or estimated."""
    if as_json and as_csv:
        raise BadOption("choose one of --json and --csv")
    with open_store(db) as store:
        report = P.costs(
            store,
            by=by,
            since_ns=_parse_time(since, "--since"),
            until_ns=_parse_time(until, "--until"),
            fees=fees,
            idle_minutes=idle_minutes,
        ).to_json()
    if as_json:
        emit_json(report)
    elif as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for g in [*report["groups"], report["total"]]:
            writer.writerow(g)
        click.echo(out.getvalue(), nl=False)
    else:
        print_cost(report)


# -- containers ----------------------------------------------------------------


def _minute(ns: int | None) -> str:
    return _when(ns)[:16]


def print_containers(rows: list[dict[str, Any]], at_ns: int) -> None:
    if not rows:
        console.print("no containers in the log")
        return
    table = Table(box=None, title=f"containers at {_minute(at_ns)} UTC", expand=True)
    table.add_column("container", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("tier", no_wrap=True)
    table.add_column("created by", no_wrap=True)
    table.add_column("last activity (UTC)", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("reusable", no_wrap=True)
    for r in rows:
        creator = r["created_via"]
        if r["created_exchange_id"]:
            creator += " " + r["created_exchange_id"][:8]
        table.add_row(
            r["container_id"],
            r["memory"] or "?",
            creator,
            _minute(r["last_activity_ns"]),
            str(r["code_interpreter_calls"]),
            r["state"],
            "yes" if r["reusable"] else "no",
        )
    console.print(table)
    for r in rows:
        for f in r["files"]:
            size = "" if f["bytes"] is None else f", {f['bytes']} bytes downloaded"
            console.print(
                f"  {_short(r['container_id'], 16)} file {f['filename'] or f['file_id']} "
                f"({f['source']}{size})",
                markup=False,
            )


@main.command()
@click.option("--at", "at", metavar="TIME", help="Judge state at TIME (default: now).")
@click.option(
    "--idle-minutes",
    type=click.IntRange(min=1),
    help="Idle timeout (default: the container's own expires_after, else 20 minutes).",
)
@click.option(
    "--max-age-minutes",
    type=click.IntRange(min=1),
    help="Cap a container's life (the seed document says 60 minutes).",
)
@click.option(
    "--advise",
    is_flag=True,
    help="Containers created while a reusable one of the same tier existed, and the fees to save.",
)
@click.option(
    "--by",
    "advise_by",
    default="session",
    show_default=True,
    metavar="session|label=KEY",
    help="With --advise: who may share a container (a session, or sessions with one label value).",
)
@click.option(
    "--fees",
    type=click.Path(path_type=Path),
    help="With --advise: your own container fee table (JSON).",
)
@click.option("--csv", "as_csv", is_flag=True, help="With --advise: print the findings as CSV.")
@db_option
@json_option
def containers(
    at: str | None,
    idle_minutes: int | None,
    max_age_minutes: int | None,
    advise: bool,
    advise_by: str,
    fees: Path | None,
    as_csv: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Every container seen: tier, creator, activity, files, and whether it is still reusable.

    --advise: which containers could have been avoided by reusing a live one, and what that saves.
    """
    if advise:
        from recorder.cli.insight_cmds import advise_containers

        conflicting = [o for o, v in (("--at", at), ("--max-age-minutes", max_age_minutes)) if v]
        advise_containers(
            db,
            by=advise_by,
            idle_minutes=idle_minutes,
            fees=fees,
            as_json=as_json,
            as_csv=as_csv,
            conflicting=conflicting,
        )
        return
    if as_csv or fees or advise_by != "session":
        raise BadOption("--by, --fees and --csv go with --advise")
    at_ns = _parse_time(at or "now", "--at")
    assert at_ns is not None
    with open_store(db) as store:
        found = P.containers(store)
    rows = [c.to_json(at_ns, idle_minutes, max_age_minutes) for c in found]
    if as_json:
        emit_json({"at_ns": at_ns, "containers": rows})
        return
    print_containers(rows, at_ns)


# -- demo ----------------------------------------------------------------------


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
            console.print(self.header, markup=False)
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
            console.print(f"  {self.key}{count}", markup=False)

    def done(self) -> None:
        self._line()
        self.key = None


def _original_date_fees(report: dict[str, Any], session_id: str, stages: list[P.Stage]) -> None:
    """For a replayed recording: the container fee under the rule of the original run's day.

    The log dates a replayed container by the replay, so the cost report applies
    the fee rule of the replay's day; the original's day is its response's
    ``created_at``.
    """
    created = {
        s.container_id: s.response_created_at * _SECOND
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
        fee = table.fee(c["memory"], at, at, at + DEFAULT_IDLE_MINUTES * 60 * _SECOND)
        total = None if fee.amount is None or total is None else total + fee.amount
        console.print(
            f"[dim]the log dates container {_short(c['container_id'], 16)} by this replay "
            f"({c['day']}), so that day's fee rule applies above; OpenAI ran it on "
            f"{_when(at)[:10]}: {fee.rule} ({fee.basis}).[/dim]",
        )
    if total is not None:
        console.print(
            f"[dim]at the original's date: {_money(total)} in all, with the tokens above.[/dim]"
        )


@main.command()
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the session's HTML report (default: beside the database).",
)
@db_option
def demo(report_file: Path | None, db: str | None) -> None:
    """Record a bundled real code-interpreter session (no API key, no network) and show
    its chunks, stage timeline, audit trail, cost and container state.

    The openai SDK records it: its transport is the recorder wrapped around a
    replay of the bundled tape. Running the demo again reuses the session
    recorded the first time (another --db records afresh).
    """
    from recorder.demo import DEMO_API_KEY, DEMO_SESSION_NAME, demo_tape_path, record
    from recorder.store.store import EventStore

    with EventStore.open(db, upgrade=True) as store:
        console.rule(f"[bold]codetape demo[/bold] · {DEMO_SESSION_NAME}")
        console.rule("0. recording  (codetape.record + ReplayTransport)")
        live = _LiveEvents(
            f"openai.OpenAI(api_key={DEMO_API_KEY!r}) → RecordingTransport → "
            f"ReplayTransport({demo_tape_path().name}): the SDK streams a real recorded "
            "code-interpreter session through the recorder. No API key, no network."
        )
        done = record(store, on_event=live)
        live.done()
        session_id = done.session_id
        info = store.find_session(session_id)
        when = _when(info.opened_at_ns) + " UTC"
        if done.new:
            console.print(
                f"recorded session {session_id} ({live.total} stream events reached the SDK) "
                f"in {store.url}"
            )
        else:
            console.print(
                f"already recorded; reusing session {session_id} (recorded {when}) in "
                f"{store.url} rather than recording the demo twice (another --db records "
                "afresh)"
            )
        console.rule("1. the stream, as chunks  (codetape chunks SESSION)")
        print_chunks(P.chunks(store, session_id))
        console.rule("2. code interpreter stages  (codetape stages SESSION)")
        found_stages = P.stages(store, session_id)
        print_stages(found_stages)
        if done.original_timing:
            console.print(
                "[dim]replayed at the recording's original pace: the times follow the "
                "original's.[/dim]"
            )
        else:
            console.print(
                f"[dim]replay timing: when the SDK received the tape's bytes on this machine "
                f"({done.pace} pace, {when}). The original recording kept no arrival times, "
                "so how long code generation and execution really took is unknown.[/dim]"
            )
        audit_entries = P.audit(store, session_id)
        console.rule("3. audit trail of executed code  (codetape audit SESSION)")
        print_audit(audit_entries)
        console.rule("4. cost  (codetape cost)")
        report = P.costs(store, by="session").to_json()
        print_cost(report)
        _original_date_fees(report, session_id, found_stages)
        used = {e.container_id for e in audit_entries if e.container_id}
        for c in report["containers"]:
            if c["container_id"] in used and c["session_id"] != session_id:
                console.print(
                    f"[dim]container {_short(c['container_id'], 16)} was first seen in session "
                    f"{store.find_session(c['session_id']).name!r} of this log: its fee is "
                    "counted there.[/dim]"
                )
        console.rule("5. containers  (codetape containers --at TIME)")
        entries = [
            c for c in P.containers(store) if c.session_id == session_id or c.container_id in used
        ]
        at_ns = max((c.last_activity_ns for c in entries), default=now_ns()) + 5 * 60 * _SECOND
        print_containers([c.to_json(at_ns) for c in entries], at_ns)
        console.print(
            "[dim]state judged 5 minutes after the container's last activity; "
            "`codetape containers` judges it now. The times are the log's: for this demo, "
            "when it was replayed, not when OpenAI ran it.[/dim]"
        )
        from recorder.cli.insight_cmds import demo_insight

        demo_insight(store, session_id, report_file)
