"""Run the Alembic migrations, from a checkout or from an installed wheel.

Guarantees: the scripts are found whether codetape runs from its source tree
(``migrations/`` beside the packages) or from a wheel (where the build puts
them at ``recorder/_migrations``); upgrade and downgrade run in a transaction
on the given URL and leave a database at a known revision. A database at a
revision these scripts do not know (written by a newer codetape) is never
touched: it is :class:`~recorder.errors.NewerSchema`, and every failure is a
one-line :class:`~recorder.errors.StoreError`, never an Alembic traceback.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection

from recorder.errors import NewerSchema, StoreError
from recorder.store.engine import create_engine, describe_url, sqlite_path, translate_errors

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "known_revisions",
    "migrations_dir",
    "revision_state",
    "upgrade",
]

RevisionState = Literal["blank", "older", "current", "newer"]


def migrations_dir() -> Path:
    """Where the Alembic environment lives in this installation."""
    here = Path(__file__).resolve().parent.parent  # .../recorder
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError("codetape's migration scripts are missing from this installation")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser treats % specially; URLs may hold percent-escapes.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise StoreError("no migration revisions found")
    return head


def known_revisions() -> list[str]:
    """Every revision this codetape ships, oldest first."""
    return [script.revision for script in reversed(list(_scripts().walk_revisions()))]


def revision_state(revision: str | None, expected: str | None = None) -> RevisionState:
    """Where ``revision`` stands against ``expected`` (default: the scripts' head).

    "newer" covers a revision the scripts do not know at all: only a newer
    codetape writes one.
    """
    if revision is None:
        return "blank"
    expected = expected or head_revision()
    if revision == expected:
        return "current"
    known = known_revisions()
    if revision in known and expected in known and known.index(revision) < known.index(expected):
        return "older"
    return "newer"


def newer_schema(url: str, revision: str) -> NewerSchema:
    """The error for a database written by a newer codetape."""
    return NewerSchema(
        f"the database at {describe_url(url)} is at revision {revision}, newer than this "
        f"codetape ({head_revision()}): upgrade codetape"
    )


def _check_target(action: str, revision: str) -> None:
    """Refuse an unknown target before anything (even a SQLite file) is created."""
    if revision.startswith(("+", "-")) or any(op in revision for op in ("+", "-", "@")):
        return  # relative targets: Alembic resolves them against the database
    try:
        _scripts().get_revisions(revision)
    except CommandError:
        raise StoreError(
            f"cannot {action} to {revision!r}: no such revision "
            f"(this codetape knows {', '.join(known_revisions())}, head and base)"
        ) from None


def several_revisions(url: str) -> StoreError:
    """The error for a database whose ``alembic_version`` holds several rows."""
    return StoreError(
        f"the database at {describe_url(url)} records several schema revisions at once, "
        "which codetape never writes: it is not a codetape database"
    )


def _current(url: str, connection: Connection) -> str | None:
    try:
        return MigrationContext.configure(connection).get_current_revision()
    except CommandError:  # several rows in alembic_version: not a codetape history
        raise several_revisions(url) from None


def _missing(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    return missing


def _remove_created(missing: list[Path]) -> None:
    """Undo a failed run's new SQLite file (and its journals) and the directories made for it."""
    database, directories = missing[0], missing[1:]
    for suffix in ("", "-wal", "-shm", "-journal"):
        # OSError: a read-only directory, where nothing was created either.
        with contextlib.suppress(OSError):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    for directory in directories:
        try:
            directory.rmdir()  # only if empty: never anything another process put there
        except OSError:
            break


def _run(url: str, action: str, revision: str) -> None:
    _check_target(action, revision)
    path = sqlite_path(url)
    created = _missing(path) if path is not None else []
    try:
        _migrate(url, action, revision)
    except BaseException:
        # A file this run created holds nothing (its transaction rolled back):
        # leave no empty database behind to be mistaken for a real one.
        if created:
            _remove_created(created)
        raise


def _migrate(url: str, action: str, revision: str) -> None:
    engine = create_engine(url, create=True)
    try:
        with translate_errors(url), engine.begin() as connection:
            current = _current(url, connection)
            if revision_state(current) == "newer":
                raise newer_schema(url, current or "?")
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            try:
                if action == "upgrade":
                    command.upgrade(cfg, revision)
                else:
                    command.downgrade(cfg, revision)
            except CommandError as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StoreError(f"cannot {action} to {revision!r}: {first}") from None
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (creating a SQLite file if needed)."""
    _run(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    _run(url, "downgrade", revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None for a blank database."""
    engine = create_engine(url)
    try:
        with translate_errors(url), engine.connect() as connection:
            return _current(url, connection)
    finally:
        engine.dispose()
