"""Reading projections without writing: stored rows plus the log's tail, folded per connection.

Guarantees:

* **Read-only.** :func:`reading` never writes the database: no write lock,
  no write privilege. A PostgreSQL role that may only SELECT (plus the
  TEMPORARY privilege every role has on a database by default), a SQLite file
  opened read-only (``chmod``, ``?mode=ro``), and a report run while a
  recording holds SQLite's write lock all read the same figures.
* **Current.** What it yields reads as the projections caught up to the log's
  head: a projection whose stored checkpoint is behind is copied into a
  temporary table of the same name (temporary tables come first in name
  lookup on both backends, so every query of the report reads the copy), and
  the log's tail since the checkpoint is applied to the copy by the
  projection's own code, as a catch-up would. The copy lives in one
  transaction that is rolled back, so it vanishes with the report.
* **Consistent.** The stored rows, their checkpoints and the head are read in
  one snapshot (a SQLite read transaction in WAL mode, PostgreSQL REPEATABLE
  READ), so a catch-up committed meanwhile by another process is either
  wholly seen or not at all.
* **Honest about lag.** :attr:`View.behind` is how many events the stored
  projections are behind the log (0 when they are current): the work every
  report does again until ``codetape projections catch-up`` stores it.

Cost: a projection that is behind is copied whole before the tail is folded,
so a report over stale projections pays for reading them once more; current
projections are read in place.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from recorder.projections.gc_pause import no_gc
from recorder.projections.json_text import forget_shared
from recorder.projections.log_event import Row
from recorder.projections.log_read import read_rows
from recorder.projections.projection import Projection, resolve
from recorder.projections.runner import BATCH, dispatch
from recorder.store.engine import translate_errors
from recorder.store.seal import refuse_replay_from
from recorder.store.store import EventStore

__all__ = [
    "Read",
    "View",
    "fold",
    "fold_rows",
    "reading",
    "real_table",
    "shadow",
    "stored_checkpoints",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class View:
    """A connection on which projection tables read as caught up to ``head``."""

    conn: Connection
    head: int
    """The log position the view covers."""
    behind: int
    """Events between the stored projections' lowest checkpoint and ``head``."""


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """A report's value and how far behind the stored projections it read were."""

    value: T
    head: int
    behind: int


@contextlib.contextmanager
def reading(store: EventStore, names: Iterable[str], *, batch: int = BATCH) -> Iterator[View]:
    """A read-only :class:`View` of the projections ``names`` (see the module docstring)."""
    projs = resolve(names)
    with translate_errors(store.url), store.engine.connect() as conn:
        if store.backend == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin() as tx:
            try:
                head = int(
                    conn.exec_driver_sql("SELECT COALESCE(MAX(position), 0) FROM events").scalar()
                    or 0
                )
                stored = stored_checkpoints(conn, [p.name for p in projs])
                # Where each projection's fold resumes: (position, state JSON).
                starts = {p.name: _usable(stored.get(p.name), p) for p in projs}
                behind = head - min((s[0] for s in starts.values()), default=head)
                stale = [p for p in projs if starts[p.name][0] < head]
                if stale:
                    low = min(starts[p.name][0] for p in stale)
                    refuse_replay_from(
                        conn, low, [p.name for p in stale if starts[p.name][0] == low]
                    )
                    shadow(conn, store.backend, stale, starts)
                    fold(conn, store.backend, stale, starts, head, batch)
                yield View(conn, head, max(behind, 0))
            finally:
                # Nothing here was meant to last: the temporary copies go with it.
                tx.rollback()


def stored_checkpoints(conn: Connection, names: list[str]) -> dict[str, tuple[int, int, str]]:
    """Each projection's stored checkpoint: name -> (position, code version, state JSON)."""
    marker = "?" if conn.dialect.name == "sqlite" else "%s"
    rows = conn.exec_driver_sql(
        "SELECT name, position, version, state FROM pj_checkpoints "
        f"WHERE name IN ({', '.join([marker] * len(names))})",
        tuple(names),
    ).all()
    return {r[0]: (int(r[1]), int(r[2]), str(r[3])) for r in rows}


def _usable(found: tuple[int, int, str] | None, proj: type[Projection]) -> tuple[int, str]:
    """Where the stored rows of ``proj`` let a fold resume: (position, state JSON).

    Rows written by another version of the projection's code are not this
    code's rows: the fold starts from nothing, as a rebuild would.
    """
    if found is None or found[1] != proj.version:
        return 0, "{}"
    return found[0], found[2]


def shadow(
    conn: Connection,
    backend: str,
    projs: Sequence[type[Projection]],
    starts: dict[str, tuple[int, str]],
) -> None:
    """Temporary copies of the tables of ``projs`` that shadow the real ones."""
    for proj in projs:
        keep_rows = starts[proj.name][0] > 0
        for table in proj.tables:
            _copy_table(conn, backend, table.name, keep_rows)


def real_table(conn: Connection, backend: str, name: str) -> str:
    """The stored table ``name``, qualified so that a temporary copy does not shadow it.

    Ask before the copy exists: afterwards ``name`` finds the copy first.
    """
    if backend != "postgresql":
        return f"main.{name}"
    schema = conn.exec_driver_sql(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)",
        (name,),
    ).scalar()
    return f'"{schema}".{name}'


def _copy_table(conn: Connection, backend: str, name: str, keep_rows: bool) -> None:
    if backend == "postgresql":
        source = real_table(conn, backend, name)
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} (LIKE {source} INCLUDING ALL)")
        if keep_rows:
            conn.exec_driver_sql(f"INSERT INTO pg_temp.{name} SELECT * FROM {source}")
        return
    ddl = conn.exec_driver_sql(
        "SELECT type, name, sql FROM main.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
        "ORDER BY type = 'index'",
        (name,),
    ).all()
    for kind, obj, sql in ddl:
        if kind == "table":
            conn.exec_driver_sql("CREATE TEMPORARY" + str(sql).removeprefix("CREATE"))
        elif kind == "index":
            # An index of a temporary table lives in the temp schema: name it there.
            head, _, rest = str(sql).partition(obj)
            conn.exec_driver_sql(f'{head.rstrip(chr(34))}temp."{obj}"{rest.lstrip(chr(34))}')
    if keep_rows:
        conn.exec_driver_sql(f"INSERT INTO temp.{name} SELECT * FROM main.{name}")


def fold(
    conn: Connection,
    backend: str,
    projs: Sequence[type[Projection]],
    starts: dict[str, tuple[int, str]],
    head: int,
    batch: int,
) -> dict[str, Any]:
    """Apply the log's tail up to ``head`` to the copies, batch by batch, as a catch-up would.

    Returns each projection's state at ``head``.
    """
    at = {p.name: starts[p.name][0] for p in projs}
    states = {p.name: json.loads(starts[p.name][1]) for p in projs}
    with no_gc():
        while True:
            pending = [p for p in projs if at[p.name] < head]
            if not pending:
                return states
            low = min(at[p.name] for p in pending)
            group = [p for p in pending if at[p.name] == low]
            events = read_rows(conn, backend, low, head, batch)
            if not events:
                return states
            fold_rows(conn, group, states, events)
            last = int(events[-1][0])
            for proj_cls in group:
                at[proj_cls.name] = last


def fold_rows(
    conn: Connection,
    projs: Sequence[type[Projection]],
    states: dict[str, Any],
    events: Sequence[Row],
) -> None:
    """Apply one batch of rows to the tables ``projs`` write on ``conn``; update ``states``."""
    try:
        projections: list[Projection] = [p(conn, states[p.name]) for p in projs]
        for proj in projections:
            proj.prefetch(events)
        dispatch(projections, events)
        for proj in projections:
            proj.finish()
            states[proj.name] = _copied(proj.state)
    finally:
        forget_shared()


def _copied(state: Any) -> Any:
    # The next batch's projection gets the state as a catch-up would: read
    # back from its stored JSON, never an object the last batch still holds.
    return json.loads(json.dumps(state, sort_keys=True, separators=(",", ":")))
