"""Replay commands: ``serve`` (a replay server) and ``diff`` (review a re-recording).

Thin wrappers over :mod:`replay.server` and :mod:`replay.diff`; user mistakes
raise :class:`~recorder.errors.CodetapeError` (one line, exit status 1).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from recorder.cli.app import db_option, emit_json, json_option, listen_option, main
from recorder.cli.limits import server_limit_options
from recorder.cli.render import printable

if TYPE_CHECKING:
    from recorder.http_limits import ServerLimits
    from replay.source import Recording

__all__ = ["diff_cmd", "serve_cmd"]

_PARTIAL_HELP = (
    "Go on with a tape that is cut short (a session never closed, an exchange never ended), "
    "as far as it goes, with a warning; without it such a tape is refused."
)


def _loaded(recording: Recording) -> Recording:
    """``recording``, after one warning line on stderr when it is a tape cut short."""
    if recording.cut is not None:
        click.echo(
            f"warning: {recording.source} is {recording.cut}; using what it holds (--partial)",
            err=True,
        )
    return recording


def _positive(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not value > 0:  # nan too
        raise click.BadParameter(f"must be a positive number, got {value}", ctx, param)
    return value


@main.command("serve")
@click.argument("source", metavar="TAPE_OR_SESSION")
@listen_option("127.0.0.1:8080")
@click.option(
    "--pace",
    type=click.Choice(["instant", "original"]),
    default="instant",
    show_default=True,
    help="original: wait the recorded gaps between events (imports have none: instant).",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    callback=_positive,
    help="Pace factor (above 0).",
)
@click.option(
    "--ignore-body-field",
    "ignore_fields",
    multiple=True,
    metavar="FIELD",
    help="JSON body field (or dotted path) left out of matching; repeatable.",
)
@click.option("--allow-repeats", is_flag=True, help="Serve a played exchange again.")
@click.option("--quiet", is_flag=True, help="Do not log each request.")
@server_limit_options
@click.option("--partial", is_flag=True, help=_PARTIAL_HELP)
@db_option
def serve_cmd(
    source: str,
    listen: tuple[str, int],
    pace: str,
    speed: float,
    ignore_fields: tuple[str, ...],
    allow_repeats: bool,
    quiet: bool,
    limits: ServerLimits,
    partial: bool,
    db: str | None,
) -> None:
    """Replay a tape or session over HTTP: point any client's base_url at it.

    A client built for https://api.openai.com/v1 uses http://HOST:PORT/v1.
    """
    from replay.matching import MatchOptions
    from replay.server import ReplayApp, serve
    from replay.source import load

    host, port = listen
    recording = _loaded(load(source, db, partial=partial))
    app = ReplayApp(
        recording,
        match=MatchOptions.build(ignore_fields, allow_repeats=allow_repeats),
        pace=pace,
        speed=speed,
        log=None if quiet else sys.stderr,
        max_request_bytes=limits.max_request_bytes,
        body_timeout=limits.header_timeout,
    )
    status = serve(app, host, port, limits=limits)
    unplayed = status["unplayed"]
    click.echo(
        f"codetape: played {status['played']} of {status['exchanges']} exchanges"
        + (f"; never requested: {', '.join(unplayed)}" if unplayed else ""),
        err=True,
    )


@main.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--exit-code", is_flag=True, help="Exit with status 1 when they differ.")
@click.option("--partial", is_flag=True, help=_PARTIAL_HELP)
@db_option
@json_option
def diff_cmd(
    old: str, new: str, exit_code: bool, partial: bool, db: str | None, as_json: bool
) -> None:
    """Show what changed between two recordings (tapes or sessions) of the same requests.

    Compares what a reviewer cares about: status, event types, code run, outputs,
    text and usage; ids, timestamps and obfuscation padding are left out.
    """
    from replay.diff import diff_recordings
    from replay.source import load

    report = diff_recordings(
        _loaded(load(old, db, partial=partial)), _loaded(load(new, db, partial=partial))
    )
    if as_json:
        emit_json(report.to_json(), "diff")
    else:
        click.echo(printable(report.render()))
    if exit_code and not report.same:
        sys.exit(1)
