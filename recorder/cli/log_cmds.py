"""Commands over the log itself: db, sessions, show, import, export, verify."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.table import Table

from recorder.cli.app import console, db_option, emit_json, json_option, main, open_store
from recorder.cli.redaction import redaction_options, redactor_from
from recorder.config import resolve_url
from recorder.errors import CodetapeError
from recorder.events import EventKind
from recorder.export import export_sessions
from recorder.ingest import FORMATS, import_file
from recorder.integrity import (
    Checkpoint,
    load_checkpoints,
    load_public_key,
    read_note,
    verify_log,
    verify_tape,
)
from recorder.repair import open_exchange_liveness
from recorder.store import migrate, roles
from recorder.store.engine import describe_url


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@main.group()
def db() -> None:
    """Create or upgrade the database schema."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(db: str | None, revision: str) -> None:
    """Create or upgrade the schema (safe to run again)."""
    url = resolve_url(db)
    migrate.upgrade(url, revision)
    click.echo(f"{describe_url(url)} is at {migrate.current_revision(url)}")


@db.command("current")
@db_option
def db_current(db: str | None) -> None:
    """Print the schema revision the database is at."""
    url = resolve_url(db)
    current = migrate.current_revision(url)
    head = migrate.head_revision()
    state = "up to date" if current == head else f"needs upgrade to {head}"
    click.echo(f"{current or 'blank'} ({state})")


@db.command("roles")
@click.option(
    "--prefix",
    default="codetape",
    show_default=True,
    help="Roles are PREFIX_recorder, PREFIX_projector and PREFIX_reader.",
)
@click.option("--print", "print_only", is_flag=True, help="Print the SQL instead of running it.")
@db_option
def db_roles(prefix: str, print_only: bool, db: str | None) -> None:
    """Create least-privilege PostgreSQL roles for the log (run as the tables' owner).

    PREFIX_recorder may only read and append events: no UPDATE, DELETE,
    TRUNCATE or DDL, so it cannot change the log even with the triggers
    gone. PREFIX_projector reads events and writes the projection tables.
    PREFIX_reader only reads. They cannot log in: grant one to each user
    (CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE codetape_recorder).
    Run it again after `codetape db upgrade`.
    """
    if print_only:
        click.echo(roles.roles_sql(prefix), nl=False)
        return
    url = resolve_url(db)
    names = roles.apply_roles(url, prefix)
    click.echo(f"{describe_url(url)}: roles {', '.join(names.values())} are set up")


@main.command()
@db_option
@json_option
def sessions(db: str | None, as_json: bool) -> None:
    """List the sessions in the log, oldest first."""
    with open_store(db) as store:
        found = store.sessions()
    if as_json:
        emit_json(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "labels": s.labels,
                    "opened_at": _when(s.opened_at_ns),
                    "closed": s.closed,
                    "exchanges": s.exchanges,
                    "source": s.source,
                }
                for s in found
            ]
        )
        return
    if not found:
        click.echo("no sessions yet: record one, or `codetape import FILE`")
        return
    table = Table("id", "name", "opened (UTC)", "exchanges", "labels", box=None)
    for s in found:
        labels = ", ".join(f"{k}={v}" for k, v in s.labels.items())
        table.add_row(s.id[:12], s.name, _when(s.opened_at_ns), str(s.exchanges), labels)
    console.print(table)


def _event_row(ev: Any) -> dict[str, Any]:
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
                "opened_at": _when(info.opened_at_ns),
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
            }
        )
        return
    console.print(f"[bold]{info.name}[/bold]  {info.id}  opened {_when(info.opened_at_ns)} UTC")
    if info.source:
        console.print(f"source: {info.source}")
    for n, x in enumerate(exchanges, start=1):
        ending = x.outcome or "open"
        if x.reason:
            ending += f" ({x.reason})"
        console.print(
            f"\n[bold]#{n}[/bold] {x.method} {x.url} -> {x.status} · {ending} · "
            f"{x.sse_events} SSE events"
        )
        table = Table("seq", "kind", "type", "bytes", "offset ms", box=None, pad_edge=False)
        for ev in events_by_exchange[x.id]:
            table.add_row(
                str(ev.seq),
                ev.kind.value,
                ev.sse_type or "",
                str(len(ev.payload)),
                "" if ev.offset_ns is None else f"{ev.offset_ns / 1e6:.1f}",
            )
        console.print(table)


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Source format; auto detects it from the content.",
)
@redaction_options
@db_option
@json_option
def import_cmd(
    files: tuple[Path, ...],
    fmt: str,
    redact_headers: tuple[str, ...],
    redact_json_paths: tuple[str, ...],
    keep: tuple[str, ...],
    db: str | None,
    as_json: bool,
) -> None:
    """Import tapes or other tools' recordings (VCR.py YAML, vercel chunks, test-proxy JSON).

    Each file is imported atomically: all of its sessions or none. Secrets are
    redacted before anything is stored, as when recording.
    """
    redactor = redactor_from(redact_headers, redact_json_paths, keep)
    results = []
    with open_store(db) as store:
        for path in files:
            result = import_file(store, path, fmt, redactor)
            results.append(result)
            if not as_json:
                names = ", ".join(name for _, name in result.sessions)
                click.echo(f"{path}: {result.format}, {result.events} events -> {names}")
    if as_json:
        emit_json(
            [
                {
                    "path": str(r.path),
                    "format": r.format,
                    "events": r.events,
                    "sessions": [{"id": i, "name": n} for i, n in r.sessions],
                }
                for r in results
            ]
        )


@main.command("export")
@click.argument("sessions", nargs=-1, required=True)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Tape file to write."
)
@click.option(
    "--no-hashes",
    is_flag=True,
    help="Leave out each row's position and chain hash (a tape that round-trips byte for byte).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(path_type=Path),
    help="End the tape with the proof that its rows are in the log this signed checkpoint covers.",
)
@db_option
def export_cmd(
    sessions: tuple[str, ...],
    output: Path,
    no_hashes: bool,
    checkpoint_file: Path | None,
    db: str | None,
) -> None:
    """Export sessions (ids or names) to a tape file (JSON Lines)."""
    note = read_note(checkpoint_file) if checkpoint_file is not None else None
    with open_store(db) as store:
        count = export_sessions(store, sessions, output, hashes=not no_hashes, checkpoint=note)
    click.echo(f"wrote {count} events to {output}")


@main.command()
@click.argument("tape", required=False, type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Signed checkpoint file, or a directory of them, to check against (repeatable).",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    help="Public key (PEM) the checkpoints were signed with; with a TAPE alone, also "
    "checks the checkpoint the tape carries.",
)
@db_option
@json_option
def verify(
    tape: Path | None,
    checkpoints: tuple[Path, ...],
    key: Path | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Re-derive every hash in the log (or in TAPE); exit 1 naming the first bad position.

    Without --checkpoint this proves the rows form one unbroken chain, not
    that they are the rows recorded: anyone who can write the database can
    recompute every hash. With --checkpoint and --key it also proves the log
    (or the tape's rows) still extends each signed head.

    Also reports exchanges left open (interrupted captures) and capture gaps.
    """
    if checkpoints and key is None:
        raise CodetapeError("--checkpoint needs --key PUBLIC_KEY (the key that signed it)")
    public = load_public_key(key) if key is not None else None
    signed = load_checkpoints(checkpoints, public) if public is not None else []
    if tape is not None:
        if db is not None:
            raise CodetapeError("give a TAPE or --db, not both")
        _verify_tape(tape, public, signed, as_json)
        return
    with open_store(db) as store:
        result = verify_log(store, signed)
        # For each exchange left open: may its recorder still be writing it?
        still_open = open_exchange_liveness(store, result.report.open_exchanges)
    report = result.report
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "head_position": report.head_position,
                "head_hash": report.head_hash,
                "first_bad_position": report.first_bad_position,
                "problems": [
                    {"position": p.position, "message": p.message} for p in report.problems
                ],
                "open_exchanges": report.open_exchanges,
                "open_exchange_sessions": [
                    {
                        "exchange": xid,
                        "session": sid,
                        "lease": None if state is None else state.lease,
                        "lease_expires_in_s": None if state is None else state.expires_in_s,
                        "recorder_process": None if state is None else state.process,
                        "repairable": state is not None and state.repairable,
                    }
                    for xid, sid, state in still_open
                ],
                "capture_gaps": report.capture_gaps,
                "checkpoints": [
                    {
                        "source": c.source,
                        "position": c.checkpoint.size,
                        "ok": c.ok,
                        "message": c.message,
                    }
                    for c in result.checkpoints
                ],
            }
        )
    else:
        for problem in report.problems:
            click.echo(f"position {problem.position}: {problem.message}", err=True)
        if report.open_exchanges:
            click.echo(
                f"{len(report.open_exchanges)} exchange(s) not ended (still recording, or an "
                "interrupted capture):",
                err=True,
            )
            for xid, sid, state in still_open[:20]:
                where = "its session is closed" if state is None else state.describe()
                click.echo(f"  {xid[:12]} in session {(sid or '?')[:12]}: {where}", err=True)
            if len(still_open) > 20:
                click.echo(f"  ... and {len(still_open) - 20} more", err=True)
        if report.capture_gaps:
            click.echo(f"{report.capture_gaps} capture gap(s) recorded", err=True)
        if report.ok:
            click.echo(
                f"ok: {report.checked} events verified; head {report.head_position} "
                f"{report.head_hash[:16]}"
            )
            for check in result.checkpoints:
                click.echo(check.message)
    if not report.ok:
        raise SystemExit(1)


def _verify_tape(
    tape: Path,
    public: Ed25519PublicKey | None,
    signed: list[tuple[str, Checkpoint]],
    as_json: bool,
) -> None:
    result = verify_tape(tape, key=public, checkpoints=signed)
    unchecked = result.embedded is not None and public is None
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "rows": result.rows,
                "problems": [
                    {"where": p.where, "position": p.position, "message": p.message}
                    for p in result.problems
                ],
                "carries_checkpoint": result.embedded is not None,
                "checkpoints": [
                    {
                        "source": c.source,
                        "position": c.checkpoint.size,
                        "ok": c.ok,
                        "covered": c.covered,
                        "not_covered": c.not_covered,
                        "message": c.message,
                    }
                    for c in result.checks
                ],
            }
        )
    else:
        for problem in result.problems:
            at = f" (position {problem.position})" if problem.position is not None else ""
            click.echo(f"{problem.where}{at}: {problem.message}", err=True)
        if result.ok:
            click.echo(f"ok: {result.rows} rows of {tape} verified against their chain hashes")
        for check in result.checks:
            line = check.message
            if check.ok and check.not_covered:
                line += f"; {check.not_covered} row(s) after its position are not covered"
            click.echo(line, err=not check.ok)
        if unchecked:
            click.echo(
                "the tape carries a signed checkpoint: pass --key PUBLIC_KEY to check it",
                err=True,
            )
    if not result.ok:
        raise SystemExit(1)
