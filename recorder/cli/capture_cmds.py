"""Commands for live capture: the recording proxy and the repair of dead recordings."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import click

from recorder.cli.app import db_option, emit_json, json_option, listen_option, main, open_store
from recorder.cli.redaction import redaction_options, redactor_from

if TYPE_CHECKING:
    from recorder.capture.session import WriterMode


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


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    text = value.strip().lower().replace(" ", "")
    digits = len(text) - len(text.lstrip("0123456789"))
    number, unit = text[:digits], text[digits:]
    if not number or unit not in _SIZE_UNITS:
        raise click.BadParameter(
            f"wants a size such as 64MiB, 500kB or 1048576 (bytes), got {value!r}", ctx, param
        )
    return int(number) * _SIZE_UNITS[unit]


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
@click.option(
    "--max-request-size",
    "max_request_bytes",
    default="64MiB",
    show_default=True,
    metavar="SIZE",
    callback=_parse_size,
    help="Answer 413, forwarding and recording nothing, to a request whose body is larger "
    "(bodies are held whole in memory; units B, kB, KiB, MB, MiB, GB, GiB).",
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
    max_request_bytes: int,
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
            max_request_bytes=max_request_bytes,
        )
