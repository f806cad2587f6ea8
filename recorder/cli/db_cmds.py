"""``codetape db``: create, upgrade and inspect the database schema; PostgreSQL roles.

Only ``db upgrade`` creates a database (a SQLite file, the schema's tables);
``db current`` reads, and says whether the database is blank, older than,
at, or newer than this codetape's schema.
"""

from __future__ import annotations

import click

from recorder.cli.app import db_option, emit_json, json_option, main
from recorder.cli.render import BadOption

__all__ = ["db"]


@main.group()
def db() -> None:
    """Create or upgrade the database schema."""


@db.command("upgrade")
@db_option
@click.option(
    "--revision",
    default="head",
    show_default=True,
    help="Target revision (see `codetape db current`).",
)
@json_option
def db_upgrade(db: str | None, revision: str, as_json: bool) -> None:
    """Create or upgrade the schema (safe to run again)."""
    from recorder.config import resolve_url
    from recorder.store import migrate
    from recorder.store.engine import describe_url

    url = resolve_url(db)
    migrate.upgrade(url, revision)
    current = migrate.current_revision(url)
    if as_json:
        emit_json({"database": describe_url(url), "revision": current})
        return
    click.echo(f"{describe_url(url)} is at {current}")


_STATES = {
    "blank": "blank: run `codetape db upgrade`",
    "older": "needs upgrade to {head}: run `codetape db upgrade`",
    "current": "up to date",
    "newer": "newer than this codetape, which knows up to {head}: upgrade codetape",
}


@db.command("current")
@db_option
@json_option
def db_current(db: str | None, as_json: bool) -> None:
    """Print the schema revision the database is at, and whether it needs an upgrade."""
    from recorder.config import resolve_url
    from recorder.store import migrate
    from recorder.store.engine import describe_url

    url = resolve_url(db)
    current = migrate.current_revision(url)
    head = migrate.head_revision()
    state = migrate.revision_state(current, head)
    if as_json:
        emit_json(
            {
                "database": describe_url(url),
                "revision": current,
                "state": state,
                "codetape_revision": head,
            }
        )
        return
    click.echo(f"{current or 'blank'} ({_STATES[state].format(head=head)})")


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
    from recorder.config import resolve_url
    from recorder.store import roles
    from recorder.store.engine import describe_url

    if print_only:
        click.echo(roles.roles_sql(prefix), nl=False)
        return
    url = resolve_url(db)
    names = roles.apply_roles(url, prefix)
    click.echo(f"{describe_url(url)}: roles {', '.join(names.values())} are set up")


@db.command("partitions")
@click.option(
    "--rows",
    type=click.IntRange(min=1),
    help="Positions per new partition (default: as the newest; 1,000,000 at first). "
    "Empty partitions above the head are remade at this size.",
)
@click.option(
    "--ahead",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Empty partitions to keep above the head.",
)
@db_option
@json_option
def db_partitions(rows: int | None, ahead: int, db: str | None, as_json: bool) -> None:
    """List the log's partitions (PostgreSQL), making empty ones ahead of the head.

    Appends never wait for this: rows beyond the last partition go to the
    default partition, which this turns into a range of its own without
    moving a row. Run it as the owner of the log's tables.
    """
    from recorder.config import resolve_url
    from recorder.store.engine import create_engine, describe_url, translate_errors
    from recorder.store.partitions import PartitionError, check_plan, ensure_partitions

    try:
        check_plan(rows, ahead)  # before connecting: a size no log could hold
    except PartitionError as exc:
        raise BadOption(f"--rows and --ahead are too large: {exc}") from None
    url = resolve_url(db)
    engine = create_engine(url)
    try:
        with translate_errors(url), engine.begin() as conn:
            parts = ensure_partitions(conn, rows=rows, ahead=ahead)
            counts = {
                p.name: int(conn.exec_driver_sql(f"SELECT count(*) FROM {p.name}").scalar_one())
                for p in parts
            }
    finally:
        engine.dispose()
    if as_json:
        emit_json(
            {
                "database": describe_url(url),
                "partitions": [
                    {"name": p.name, "first": p.first, "end": p.end, "rows": counts[p.name]}
                    for p in parts
                ],
            }
        )
        return
    for p in parts:
        span = "default" if p.is_default else f"positions {p.first}-{(p.end or 0) - 1}"
        click.echo(f"{p.name}  {span}  {counts[p.name]} rows")
