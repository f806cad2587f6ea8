"""Least-privilege PostgreSQL roles for the log: a recorder, a projector, a reader.

Guarantees: :func:`roles_sql` is the whole setup, one idempotent SQL script
(run again after each ``codetape db upgrade``); :func:`apply_roles` runs it
in one transaction. The three roles are group roles without LOGIN: give each
user one of them (``CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE
codetape_recorder``). Each role gets exactly the privileges in
:data:`GRANTS`, and first loses any others it had on those tables:

* **recorder**: SELECT and INSERT on ``events`` and on its key tables
  (``sessions``, ``exchanges``, ``responses``, ``names``: an append reads the
  head and the streams' next ``seq``, and adds the keys its events need),
  SELECT on the view ``event_rows`` and on ``alembic_version``, and all of
  SELECT, INSERT, UPDATE and DELETE on ``leases`` (mutable bookkeeping, not
  the log: a recorder takes, renews and releases its sessions' leases, and
  the repair every recorder runs at start removes expired ones). No UPDATE,
  DELETE or TRUNCATE, so the log cannot be changed through it even with the
  immutability triggers gone; it owns nothing, so it cannot drop or disable
  a trigger, nor ALTER or DROP a table.
* **projector**: reads the log (``events``, its key tables, ``event_rows``);
  reads and writes the projection tables
  (``pj_*``: a rebuild truncates and rewrites them).
* **reader**: SELECT only, on everything above (``leases`` included, so
  ``verify`` can say whether an open exchange's recorder is still alive).

The reader and the projector also get TEMPORARY on the database: a report
folds the log's tail into temporary copies of the projections it reads (see
:mod:`recorder.projections.overlay`), and PostgreSQL's default grant of it
to everyone may have been revoked. Temporary tables live and die with one
session: nothing the roles may not change can be changed through them.

None of them is a superuser, so none can ``SET session_replication_role =
replica`` (which skips every trigger). None gets CREATE on any schema; the
``public`` schema of PostgreSQL 15 and later grants it to no one but its
owner.
"""

from __future__ import annotations

import re

from alembic.runtime.migration import MigrationContext

from recorder.errors import CodetapeError, NotUpgraded
from recorder.store.engine import create_engine, describe_url, translate_errors
from recorder.store.schema import KEY_TABLES, SCHEMA_REVISION, metadata

__all__ = ["GRANTS", "ROLES", "RoleError", "apply_roles", "role_names", "roles_sql"]

ROLES = ("recorder", "projector", "reader")

_READ = ("SELECT",)
_PROJECTION_TABLES = tuple(
    sorted(t.name for t in metadata.sorted_tables if t.name.startswith("pj_"))
)

# The log: its lean table, the append-only key tables it refers to, and the
# view readers query.
_LOG_TABLES = ("events", *KEY_TABLES)
_LOG_READ = {t: _READ for t in (*_LOG_TABLES, "event_rows")}

# Every table a role touches, and what it may do there: the one list to extend
# when a migration adds a table (say, one capture must write: give "recorder"
# its privileges here).
GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "recorder": {
        "alembic_version": _READ,
        **_LOG_READ,
        **{t: ("SELECT", "INSERT") for t in _LOG_TABLES},
        "leases": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    },
    "projector": {
        "alembic_version": _READ,
        **_LOG_READ,
        "leases": _READ,
        **{t: ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE") for t in _PROJECTION_TABLES},
    },
    "reader": {
        "alembic_version": _READ,
        **_LOG_READ,
        "leases": _READ,
        **{t: _READ for t in _PROJECTION_TABLES},
    },
}

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


class RoleError(CodetapeError):
    """The roles cannot be set up here (not PostgreSQL, or a bad name)."""


def role_names(prefix: str = "codetape") -> dict[str, str]:
    """The role for each of :data:`ROLES`: ``PREFIX_recorder`` and so on."""
    if not _NAME.fullmatch(prefix):
        raise RoleError(f"role prefix {prefix!r} must be lowercase letters, digits and underscores")
    return {role: f"{prefix}_{role}" for role in ROLES}


def _tables() -> list[str]:
    return sorted({table for grants in GRANTS.values() for table in grants})


def roles_sql(prefix: str = "codetape") -> str:
    """The SQL script that creates the roles (if missing) and sets their privileges."""
    names = role_names(prefix)
    everyone = ", ".join(names.values())
    lines = [
        "-- codetape: least-privilege roles for the event log (see `codetape db roles --help`).",
        "-- Run as the owner of the tables, after `codetape db upgrade`; safe to run again.",
        "BEGIN;",
    ]
    for name in names.values():
        lines += [
            "DO $$ BEGIN",
            f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN",
            f"    CREATE ROLE {name} NOLOGIN;",
            "  END IF;",
            "END $$;",
        ]
    lines.append(f"GRANT USAGE ON SCHEMA public TO {everyone};")
    readers = f"{names['reader']}, {names['projector']}"
    lines += [
        "DO $$ BEGIN",
        "  EXECUTE 'GRANT TEMPORARY ON DATABASE ' || quote_ident(current_database())",
        f"    || ' TO {readers}';",
        "END $$;",
    ]
    lines.append(f"REVOKE ALL ON {', '.join(_tables())} FROM {everyone};")
    for role, grants in GRANTS.items():
        for table, privileges in sorted(grants.items()):
            lines.append(f"GRANT {', '.join(privileges)} ON {table} TO {names[role]};")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def apply_roles(url: str, prefix: str = "codetape") -> dict[str, str]:
    """Create or update the roles in the database at ``url``; return their names."""
    names = role_names(prefix)
    engine = create_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            raise RoleError(
                "roles are a PostgreSQL feature: a SQLite log is guarded by its file's "
                "permissions and by signed checkpoints"
            )
        script = roles_sql(prefix)
        body = script.split("BEGIN;\n", 1)[1].rsplit("COMMIT;\n", 1)[0]
        with translate_errors(url), engine.begin() as conn:
            version = MigrationContext.configure(conn).get_current_revision()
            if version != SCHEMA_REVISION:
                # The grants name this revision's tables: they must all exist.
                raise NotUpgraded(
                    f"the database at {describe_url(url)} is at schema revision "
                    f"{version or 'none'}, the roles need {SCHEMA_REVISION}: run "
                    f"`codetape db upgrade --db {describe_url(url)}` first"
                )
            conn.exec_driver_sql(body)
    finally:
        engine.dispose()
    return names
