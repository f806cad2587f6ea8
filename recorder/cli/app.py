"""The ``codetape`` click group and what every command shares.

Guarantees: a :class:`~recorder.errors.CodetapeError` raised anywhere under a
command becomes one line on stderr (``Error: ...``) and exit status 1, never
a traceback; ``--db`` resolves like :func:`recorder.config.resolve_url`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from recorder.errors import CodetapeError
from recorder.store.store import EventStore

__all__ = ["console", "db_option", "emit_json", "json_option", "main", "open_store"]

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CodetapeError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # `codetape show X | head` closing the pipe is not an error.
            sys.stderr.close()
            raise SystemExit(0) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="codetape")
def main() -> None:
    """codetape: record OpenAI Responses API sessions as an immutable event log,
    replay them offline, and report what ran and what it cost.

    The database is --db URL, else $CODETAPE_DB, else an embedded SQLite file
    in your user data directory (created on first use). URLs: sqlite:///PATH
    or postgresql://user@host:port/db.
    """


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db",
        metavar="URL",
        envvar=None,
        default=None,
        help="Database URL (default: $CODETAPE_DB, else the embedded SQLite file).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def open_store(db: str | None) -> EventStore:
    return EventStore.open(db)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


console = Console(highlight=False, soft_wrap=False)
