"""Insight commands: ``report`` (a self-contained HTML report), ``rerun`` (model migration)
and the printing behind ``containers --advise``.

Thin over :mod:`recorder.insight`, :mod:`recorder.report` and :mod:`recorder.rerun`;
each command imports what it needs when it runs, so ``codetape --help`` stays quick.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recorder.cli.app import (
    CliError,
    OutputFile,
    console,
    db_option,
    emit_json,
    json_option,
    main,
    open_store,
)
from recorder.cli.render import BadOption, note_behind, printable

if TYPE_CHECKING:
    from recorder.insight import Advice
    from recorder.store.store import EventStore

__all__ = ["advise_containers", "demo_insight", "print_advice", "report_cmd", "rerun_cmd"]


def _money(value: Decimal | None) -> str:
    """Dollars with at least two decimals and no trailing zeros beyond them."""
    if value is None:
        return "unknown"
    text = f"{value:.8f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


# -- containers --advise ---------------------------------------------------------


def print_advice(advice: Advice) -> None:
    """The advisor's findings for a terminal."""
    from rich.table import Table

    total = advice.total
    console.print(
        f"[bold]container reuse advice[/bold] (grouped by {advice.by}): "
        f"{total.avoidable_containers} of {total.containers} containers avoidable, "
        f"{_money(total.avoidable)} of {_money(total.fees)} in container fees "
        f"({total.basis})",
    )
    if advice.avoidable:
        table = Table(
            box=None, expand=True, title="containers created while a reusable one existed"
        )
        for header in ("day", "group", "container", "tier", "could reuse", "fee", "avoidable"):
            table.add_column(header, overflow="fold")
        for a in advice.avoidable:
            table.add_row(
                a.day,
                a.group,
                a.container_id,
                a.memory,
                a.reusable_id,
                _money(a.fee),
                _money(a.avoidable),
            )
        console.print(table)
        console.print("[bold]the calls that could have named an existing container[/bold]")
        for a in advice.avoidable:
            calls = ", ".join(a.call_ids) or "containers.create"
            console.print(
                f"  · {a.day} exchange {a.exchange_id} (request at log position "
                f"{a.request_position}), response {a.response_id or '—'}, {calls}:",
                markup=False,
            )
            console.print(f"      {a.suggestion}", markup=False, style="cyan")
            console.print(f"      {a.rule}", markup=False, style="dim")
    for title, rows in (("by group", advice.groups), ("by day", advice.days)):
        table = Table(box=None, title=f"avoidable container fees {title} (USD)", expand=True)
        for header in ("key", "containers", "fees", "avoidable", "avoidable fees", "basis"):
            table.add_column(header, overflow="fold")
        for t in rows:
            table.add_row(
                t.key,
                str(t.containers),
                _money(t.fees),
                str(t.avoidable_containers),
                _money(t.avoidable),
                t.basis,
            )
        console.print(table)
    if advice.unattributed:
        doc = advice.to_json()
        console.print(
            f"[yellow]{len(advice.unattributed)} possible unattributed container(s), not in the "
            f"totals (up to {_money(Decimal(doc['possible_unattributed_fees']))}): requests "
            "with container auto that made no call[/yellow]"
        )
        for u in advice.unattributed:
            reuse = f"; could have named {u.reusable_id}" if u.reusable_id else ""
            console.print(
                f"  · {u.day} exchange {u.exchange_id} response {u.response_id or '—'} "
                f"({u.memory}): {_money(u.possible_fee)}{reuse}",
                markup=False,
            )
    console.print(
        f"[dim]fee table: {advice.fee_table.source} (as of {advice.fee_table.as_of})[/dim]"
    )


def advise_containers(
    db: str | None,
    *,
    by: str,
    idle_minutes: int | None,
    fees: Path | None,
    as_json: bool,
    as_csv: bool,
    conflicting: list[str],
) -> None:
    """``codetape containers --advise``: the advisor's findings as text, JSON or CSV."""
    from recorder.insight import Advice, read_advice

    if as_json and as_csv:
        raise BadOption("choose one of --json and --csv")
    if conflicting:
        raise BadOption(f"--advise judges each container at its creation: drop {conflicting[0]}")
    with open_store(db) as store:
        read = read_advice(store, by=by, idle_minutes=idle_minutes, fees=fees)
    advice = read.value
    if as_json:
        emit_json({**advice.to_json(), "projections_behind": read.behind}, "containers-advise")
        return
    note_behind(read.behind)
    if as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=Advice.CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(advice.csv_rows())
        click.echo(out.getvalue(), nl=False)
    else:
        print_advice(advice)


# -- demo ------------------------------------------------------------------------


def demo_insight(store: EventStore, session_id: str, report_file: Path | None) -> None:
    """The demo's last sections: the advisor's line for its session, then its HTML report."""
    from recorder.demo import write_report
    from recorder.insight import advise

    console.rule("6. container reuse advice  (codetape containers --advise)")
    console.print(advise(store).line(session_id), markup=False)
    console.rule("7. the session report  (codetape report SESSION -o FILE)")
    written = write_report(store, session_id, report_file)
    console.print(
        f"wrote {written.path} ({written.bytes:,} bytes): open it in a browser, no network needed",
        markup=False,
    )


# -- report ------------------------------------------------------------------------


@main.command("report")
@click.argument("sessions", nargs=-1, required=True, metavar="SESSION...")
@click.option(
    "-o",
    "--output",
    type=OutputFile(dir_okay=False),
    default=Path("report.html"),
    show_default=True,
    help="Where to write the HTML file (written atomically).",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Re-derive the log's hash chain, check the projections the report reads against "
    "the log, and state the result in the report.",
)
@db_option
def report_cmd(sessions: tuple[str, ...], output: Path, verify: bool, db: str | None) -> None:
    """Write one self-contained HTML report of SESSION... (open it in any browser, offline):
    timeline, code, outputs, final text, costs, containers and the log positions behind them.
    """
    from recorder.report import write_report

    with open_store(db) as store:
        written = write_report(store, list(sessions), output, verify=verify)
    click.echo(f"wrote {written.path} ({written.bytes:,} bytes, {written.sessions} session(s))")


# -- rerun -------------------------------------------------------------------------


def _field(value: str) -> tuple[str, Any]:
    import json

    name, sep, raw = value.partition("=")
    if not sep or not name:
        raise BadOption(f"--set wants FIELD=VALUE (e.g. reasoning.effort=low), got {value!r}")
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return name, parsed


def _model(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("is empty: name the model every request is sent with")
    return value


@main.command("rerun")
@click.argument("session")
@click.option(
    "--model", required=True, callback=_model, help="The model every request is sent with."
)
@click.option(
    "--upstream",
    metavar="URL",
    help="Base URL of the API, as the SDK's base_url; a URL without a path means its /v1 "
    "(default: $OPENAI_BASE_URL, else https://api.openai.com/v1).",
)
@click.option(
    "--set",
    "fields",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override another request field (dotted path; VALUE is JSON, else a string). Repeatable.",
)
@click.option(
    "--name", help="Name of the new session (default: the original's + ' rerun with MODEL')."
)
@db_option
@json_option
def rerun_cmd(
    session: str,
    model: str,
    upstream: str | None,
    fields: tuple[str, ...],
    name: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Re-issue SESSION's requests, in order, with --model (and --set fields) against a live
    endpoint, recording a new session; then compare the two call by call.

    The API key is $OPENAI_API_KEY, as for the openai SDK; it is never stored.
    An endpoint that cannot be reached ends the rerun with exit status 1: the
    attempt stays recorded, and the requests it did not reach are not compared.
    """
    from recorder.rerun import NOT_COMPARED, rerun

    overrides = dict(_field(f) for f in fields)
    with open_store(db) as store:
        result = rerun(
            store, session, model=model, upstream=upstream, overrides=overrides, name=name
        )
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(printable(result.render()))
    if result.unreachable is not None:
        unjudged = result.summary()[NOT_COMPARED]
        raise CliError(
            f"the endpoint could not be reached ({result.unreachable}): {unjudged} of "
            f"{len(result.exchanges)} request(s) not compared; the attempt is recorded "
            f"as session {result.rerun.id}"
        )
