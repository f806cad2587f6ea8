"""Run the Alembic migrations, from a checkout or from an installed wheel.

Guarantees: the scripts are found whether codetape runs from its source tree
(``migrations/`` beside the packages) or from a wheel (where the build puts
them at ``recorder/_migrations``); upgrade and downgrade run in a transaction
on the given URL and leave a database at a known revision.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from recorder.errors import StoreError
from recorder.store.engine import create_engine, translate_errors

__all__ = [
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrations_dir",
    "upgrade",
]


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


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise StoreError("no migration revisions found")
    return head


def _run(url: str, action: str, revision: str) -> None:
    engine = create_engine(url, create_dir=True)
    try:
        with translate_errors(url), engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            if action == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
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
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
