"""``containers``: every code interpreter container, and whether it is still reusable.

Container and exchange ids are printed whole; the table becomes one block per
container when the terminal is too narrow for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from recorder.cli.app import (
    TIME_HELP,
    TimeParam,
    db_option,
    emit_json,
    get_console,
    json_option,
    main,
    open_store,
)
from recorder.cli.render import BadOption, Column, note_behind, print_records, when

__all__ = ["containers", "print_containers"]


def _minute(ns: int | None) -> str:
    return when(ns)[:16]


def print_containers(rows: list[dict[str, Any]], at_ns: int) -> None:
    console = get_console()
    if not rows:
        console.print("no containers in the log")
        return
    table = []
    for r in rows:
        creator = r["created_via"]
        if r["created_exchange_id"]:
            creator += " " + r["created_exchange_id"]
        table.append(
            [
                r["container_id"],
                r["memory"] or "?",
                creator,
                _minute(r["last_activity_ns"]),
                str(r["code_interpreter_calls"]),
                r["state"],
                "yes" if r["reusable"] else "no",
            ]
        )
    print_records(
        console,
        [
            Column("container"),
            Column("tier"),
            Column("created by"),
            Column("last activity (UTC)"),
            Column("calls", "right"),
            Column("state"),
            Column("reusable"),
        ],
        table,
        title=f"containers at {_minute(at_ns)} UTC",
    )
    for r in rows:
        for f in r["files"]:
            size = "" if f["bytes"] is None else f", {f['bytes']} bytes downloaded"
            console.print(
                f"  {r['container_id']} file {f['filename'] or f['file_id']} ({f['source']}{size})",
                markup=False,
            )


def _grouping(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value != "session":
        from recorder.insight.advisor import BadGrouping, parse_grouping

        try:
            parse_grouping(value)
        except BadGrouping as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


@main.command()
@click.option(
    "--at",
    "at",
    type=TimeParam(),
    metavar="TIME",
    help=f"Judge state at TIME (default: now): {TIME_HELP}.",
)
@click.option(
    "--idle-minutes",
    type=click.IntRange(min=1),
    help="Idle timeout (default: the container's own expires_after, else 20 minutes).",
)
@click.option(
    "--max-age-minutes",
    type=click.IntRange(min=1),
    help="Cap a container's life at this many minutes (default: no cap).",
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
    callback=_grouping,
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
    at: int | None,
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

        conflicting = [
            o for o, v in (("--at", at), ("--max-age-minutes", max_age_minutes)) if v is not None
        ]
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
    from recorder import projections as P
    from recorder.events import now_ns

    at_ns = at if at is not None else now_ns()
    with open_store(db) as store:
        read = P.read_containers(store)
    rows = [c.to_json(at_ns, idle_minutes, max_age_minutes) for c in read.value]
    if as_json:
        emit_json(
            {"at_ns": at_ns, "containers": rows, "projections_behind": read.behind}, "containers"
        )
        return
    print_containers(rows, at_ns)
    note_behind(read.behind)
