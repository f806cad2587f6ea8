"""Commands for live capture: the recording proxy and the repair of dead recordings."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import click

from recorder.cli.app import db_option, emit_json, json_option, listen_option, main, open_store
from recorder.cli.limits import server_limit_options, size_option
from recorder.cli.redaction import redaction_options, redactor_from

if TYPE_CHECKING:
    from recorder.capture.session import WriterMode
    from recorder.http_limits import ServerLimits


@main.command("repair")
@click.option("--session", "sessions", multiple=True, metavar="REF", help="Only these sessions.")
@click.option(
    "--force",
    is_flag=True,
    help="Close every open session, even one whose recorder holds a live lease or "
    "cannot be checked. Only when no recorder is running.",
)
@db_option
@json_option
def repair_cmd(sessions: tuple[str, ...], force: bool, db: str | None, as_json: bool) -> None:
    """Close what dead recorders left open, by appending (never changing) events.

    Each open exchange of a dead recording gets an `interrupted` ending and its
    session a close.

    \b
    A recorder holds a lease on each session it records, in the database, and
    renews it every 5 s; a session is closed only once its lease has expired
    (30 s without renewal, on the database's clock), whichever host or
    container recorded it. A recorder that was only stopped and resumes after
    that records what follows in a new session that names the closed one.
    Sessions recorded before leases existed are closed only when their
    recorder process is provably gone from this host (else use --force).
    The recorder's environment variables CODETAPE_LEASE_SECONDS and
    CODETAPE_LEASE_RENEW_SECONDS change the lease and its renewal interval.
    """
    from recorder.repair import repair

    with open_store(db) as store:
        ids = [store.find_session(ref).id for ref in sessions] if sessions else None
        report = repair(store, force=force, session_ids=ids)
    if as_json:
        emit_json(
            {
                "sessions_closed": report.sessions_closed,
                "exchanges_interrupted": report.exchanges_interrupted,
                "skipped": [{"session": s, "why": why} for s, why in report.skipped],
            }
        )
        return
    for session_id, why in report.skipped:
        click.echo(f"left {session_id} open: {why}", err=True)
    click.echo(
        f"closed {len(report.sessions_closed)} session(s), "
        f"{len(report.exchanges_interrupted)} exchange(s) marked interrupted"
    )


@main.command("proxy")
@listen_option("127.0.0.1:8787")
@click.option(
    "--upstream",
    default="https://api.openai.com",
    show_default=True,
    help="Where requests go (the API's origin; request paths are kept).",
)
@click.option("--session", "session_name", default="proxy", show_default=True, help="Session name.")
@redaction_options
@click.option("--strict", is_flag=True, help="Refuse to forward what cannot be stored.")
@server_limit_options
@size_option(
    "--max-event-size",
    "max_event_bytes",
    "16MiB",
    "The most the recorder holds of one response event: an SSE frame not yet ended, or a "
    "JSON body kept whole for --redact-json. A response with a larger one is still relayed "
    "whole; its recording stops there, as a capture gap (with --strict, the response is "
    "cut off instead).",
    minimum=1,
)
@size_option(
    "--max-decoded-size",
    "max_decoded_bytes",
    "256MiB",
    "The most a compressed response body is decoded to for the recording (the client gets "
    "it as sent); past it, its recording stops as a capture gap.",
    minimum=1,
)
@click.option(
    "--writer",
    type=click.Choice(["auto", "thread", "process"]),
    default="auto",
    show_default=True,
    help="Where the recording work runs: a child process (auto, unless the database "
    "is in memory) or a thread of the proxy.",
)
@db_option
def proxy_cmd(
    listen: tuple[str, int],
    upstream: str,
    session_name: str,
    redact_headers: tuple[str, ...],
    redact_json_paths: tuple[str, ...],
    keep: tuple[str, ...],
    strict: bool,
    limits: ServerLimits,
    max_event_bytes: int,
    max_decoded_bytes: int,
    writer: str,
    db: str | None,
) -> None:
    """Serve a recording proxy: point any client's base URL at it.

    Requests are forwarded to --upstream and responses streamed back as they
    arrive, while every exchange is recorded into one session.
    """
    from recorder.proxy import run_proxy

    host, port = listen
    with open_store(db) as store:
        run_proxy(
            store,
            upstream,
            host=host,
            port=port,
            session=session_name,
            redactor=redactor_from(redact_headers, redact_json_paths, keep),
            on_store_error="raise" if strict else "log",
            writer=cast("WriterMode", writer),
            limits=limits,
            max_event_bytes=max_event_bytes,
            max_decoded_bytes=max_decoded_bytes,
        )
