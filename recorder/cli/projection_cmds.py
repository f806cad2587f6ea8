"""``projections``: inspect and rebuild the derived read models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from recorder.cli.app import (
    ARCHIVE_DIR,
    db_option,
    emit_json,
    get_console,
    json_option,
    main,
    open_store,
)
from recorder.cli.render import Column, print_records

__all__ = ["projections"]

NAMES = ("chunks", "stages", "audit", "costs", "containers")  # recorder.projections.NAMES


@main.group()
def projections() -> None:
    """Inspect or rebuild the projections (derived read models)."""


@projections.command("rebuild")
@click.argument("name", required=False, type=click.Choice(NAMES))
@click.option(
    "--archive",
    "archive",
    type=ARCHIVE_DIR,
    help="The directory of this log's archive files (`codetape archive -o DIR`): needed once "
    "archived rows have been dropped. Every file is checked against its seal before anything "
    "is emptied.",
)
@db_option
@json_option
def projections_rebuild(
    name: str | None, archive: Path | None, db: str | None, as_json: bool
) -> None:
    """Rebuild NAME (default: all) from position 0, with a progress bar.

    On a PostgreSQL log whose oldest rows were archived and dropped, give
    their archive directory with --archive: the archived rows are read from
    the files, then the live log.
    """
    from recorder import projections as P

    names = [name] if name else list(NAMES)
    with open_store(db) as store:
        if as_json:
            consumed = P.rebuild(store, names, archive=archive)
            emit_json({"rebuilt": names, "events_consumed": consumed})
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("rebuilding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=get_console(), transient=False) as progress:
            task = progress.add_task(name or "all projections", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            consumed = P.rebuild(store, names, progress=advance, archive=archive)
            head = store.last_position()
            progress.update(task, completed=head, total=head)
    click.echo(f"rebuilt {', '.join(names)}: {consumed} events consumed")


@projections.command("catch-up")
@click.argument("name", required=False, type=click.Choice(NAMES))
@db_option
@json_option
def projections_catch_up(name: str | None, db: str | None, as_json: bool) -> None:
    """Store NAME (default: all) caught up to the log's head, so reports need not fold the tail.

    Needs write access to the projection tables (the projector role on PostgreSQL).
    """
    from recorder import projections as P

    names = [name] if name else list(NAMES)
    with open_store(db) as store:
        consumed = P.catch_up(store, names)
        head = store.last_position()
    if as_json:
        emit_json({"caught_up": names, "events_consumed": consumed, "head": head})
        return
    click.echo(f"caught up {', '.join(names)} to position {head}: {consumed} events consumed")


@projections.command("status")
@db_option
@json_option
def projections_status(db: str | None, as_json: bool) -> None:
    """Each projection's checkpoint against the log's head."""
    from recorder import projections as P

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
        for name in NAMES
    ]
    if as_json:
        emit_json({"head": head, "projections": rows})
        return
    console = get_console()
    print_records(
        console,
        [
            Column("projection"),
            Column("checkpoint", "right"),
            Column("behind head", "right"),
            Column("version", "right"),
        ],
        [[r["name"], str(r["position"]), str(r["behind"]), str(r["version"] or "—")] for r in rows],
    )
    console.print(
        f"log head: {head} (reports fold in what the projections are behind without storing "
        "it; `codetape projections catch-up` stores it)"
    )
