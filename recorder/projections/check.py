"""Checking the stored projections against the log they are derived from.

Every report reads the projection tables (``pj_*``), which are ordinary,
writable tables: the hash chain vouches for the log, not for them. This
module checks that they say what the log says.

Guarantees:

* **Exact.** A projection is checked up to its own stored checkpoint: its
  tables must hold exactly the rows, and its checkpoint exactly the state,
  that folding the log from the first position to that checkpoint gives with
  the projection's own code (what a rebuild runs; catching up and rebuilding
  give identical tables). A row changed, added or removed by hand, or an
  edited checkpoint state, is a problem naming the table and how many rows
  differ each way.
* **Read-only.** The fold runs into temporary copies inside one transaction
  that is rolled back (one snapshot: PostgreSQL REPEATABLE READ, a SQLite read
  transaction), so it needs no write privilege and changes nothing.
* **The whole history.** Once archived rows have been dropped from the log,
  the projections' rows still hold the archived sessions' figures: given the
  archive directory, the archived rows are folded in from its files (checked
  against their seals first, as ``projections rebuild --archive`` does), then
  the live log.
* **Says what it did not check.** A projection never built, one written by
  another version of its code (the next catch-up rebuilds it), and, without
  the archive directory, every projection once archived rows have been
  dropped, and on PostgreSQL one whose tables the role may not read (the
  recorder role of ``codetape db roles``), are reported as not checked, with
  the reason, never as sound.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection

from recorder.projections.archive_read import archived_rows, check_archive
from recorder.projections.gc_pause import no_gc
from recorder.projections.overlay import (
    fold,
    fold_rows,
    real_table,
    shadow,
    stored_checkpoints,
)
from recorder.projections.projection import Projection, resolve
from recorder.projections.runner import BATCH
from recorder.store.engine import translate_errors
from recorder.store.seal import archived_until
from recorder.store.store import EventStore

__all__ = ["ProjectionCheck", "check_projections"]

Status = Literal["ok", "differs", "not_built", "other_version", "archived", "no_access"]


@dataclass(frozen=True, slots=True)
class ProjectionCheck:
    """What checking one projection found."""

    name: str
    status: Status
    position: int
    """The checkpoint its stored rows were checked up to (0: not checked)."""
    problems: tuple[str, ...] = ()

    @property
    def checked(self) -> bool:
        return self.status in ("ok", "differs")

    @property
    def ok(self) -> bool:
        """False only when stored rows or state differ from the log's."""
        return self.status != "differs"

    @property
    def reason(self) -> str:
        """Why it was not checked ("" when it was)."""
        return _REASONS.get(self.status, "")

    def describe(self) -> str:
        """One line for a person."""
        if self.status == "ok":
            return f"{self.name}: matches the log up to position {self.position}"
        if self.status == "differs":
            return f"{self.name}: " + "; ".join(self.problems)
        return f"{self.name}: not checked ({self.reason})"


_REASONS: dict[str, str] = {
    "not_built": "never built",
    "other_version": "written by another version of its code; the next catch-up rebuilds it",
    "archived": "archived rows were dropped from the log and its rows keep their figures: "
    "give the archive directory to check them",
    "no_access": "this database role may not read its tables",
}


def check_projections(
    store: EventStore,
    names: Iterable[str] | None = None,
    *,
    archive: Path | None = None,
    batch: int = BATCH,
) -> list[ProjectionCheck]:
    """Check the stored projections ``names`` (all for None) against the log.

    ``archive``: the directory of the log's archive files, needed to check
    anything once archived rows have left the log; raises
    :class:`~recorder.archive.ArchiveError` if its files do not check out.
    """
    projs = resolve(names)
    gone = 0 if archive is None else check_archive(store, archive)
    with translate_errors(store.url), store.engine.connect() as conn:
        if store.backend == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin() as tx:
            try:
                if archive is not None and archived_until(conn) != gone:
                    # Another archive dropped rows since the files were checked.
                    gone = check_archive(store, archive)
                history = None if archive is None else _History(store, archive, gone)
                return _check(conn, store.backend, projs, batch, history)
            finally:
                tx.rollback()


@dataclass(frozen=True, slots=True)
class _History:
    """Where the rows the log no longer holds are read from."""

    store: EventStore
    directory: Path
    gone: int


def _check(
    conn: Connection,
    backend: str,
    projs: list[type[Projection]],
    batch: int,
    history: _History | None,
) -> list[ProjectionCheck]:
    results: dict[str, ProjectionCheck] = {}
    readable = [p for p in projs if _may_read(conn, backend, p)]
    for proj in projs:
        if proj not in readable:
            results[proj.name] = ProjectionCheck(proj.name, "no_access", 0)
    projs, order = readable, projs
    stored = stored_checkpoints(conn, [p.name for p in projs]) if projs else {}
    todo: list[type[Projection]] = []
    archived = archived_until(conn) > 0 and history is None
    for proj in projs:
        found = stored.get(proj.name)
        if found is None or found[0] <= 0:
            results[proj.name] = ProjectionCheck(proj.name, "not_built", 0)
        elif found[1] != proj.version:
            results[proj.name] = ProjectionCheck(proj.name, "other_version", 0)
        elif archived:
            results[proj.name] = ProjectionCheck(proj.name, "archived", 0)
        else:
            todo.append(proj)
    # The real tables' names, taken before temporary copies shadow them.
    real = {t.name: real_table(conn, backend, t.name) for p in todo for t in p.tables}
    shadow(conn, backend, todo, {p.name: (0, "{}") for p in todo})
    # Projections with the same checkpoint are folded together (shared work).
    for position in sorted({stored[p.name][0] for p in todo}):
        group = [p for p in todo if stored[p.name][0] == position]
        states = _fold(conn, backend, group, position, batch, history)
        for proj in group:
            problems = [
                problem
                for table in proj.tables
                if (problem := _compare(conn, backend, real[table.name], table.name))
            ]
            if _canonical(states[proj.name]) != _canonical(json.loads(stored[proj.name][2])):
                problems.append("its checkpoint's state is not the one the log gives")
            results[proj.name] = ProjectionCheck(
                proj.name, "differs" if problems else "ok", position, tuple(problems)
            )
    return [results[p.name] for p in order]


def _may_read(conn: Connection, backend: str, proj: type[Projection]) -> bool:
    """Whether this role may read the projection's tables and checkpoints (PostgreSQL roles)."""
    if backend != "postgresql":
        return True
    names = ["pj_checkpoints", *(t.name for t in proj.tables)]
    return all(
        conn.exec_driver_sql("SELECT has_table_privilege(%s, 'SELECT')", (name,)).scalar()
        for name in names
    )


def _fold(
    conn: Connection,
    backend: str,
    group: list[type[Projection]],
    position: int,
    batch: int,
    history: _History | None,
) -> dict[str, Any]:
    """Each projection's state after folding positions 1..``position`` into its copies."""
    states: dict[str, Any] = {p.name: {} for p in group}
    start = 0
    if history is not None and history.gone:
        start = min(history.gone, position)
        with no_gc():
            for rows in archived_rows(history.store, history.directory, start, batch):
                fold_rows(conn, group, states, rows)
    if start >= position:
        return states
    starts = {p.name: (start, _canonical(states[p.name])) for p in group}
    return fold(conn, backend, group, starts, position, batch)


def _compare(conn: Connection, backend: str, real: str, name: str) -> str | None:
    """How the stored table ``real`` differs from the fold's copy, or None."""
    copy = f"pg_temp.{name}" if backend == "postgresql" else f"temp.{name}"
    extra = _count_except(conn, real, copy)
    missing = _count_except(conn, copy, real)
    if not extra and not missing:
        return None
    return (
        f"{name}: {extra} stored row(s) the log does not give, "
        f"{missing} row(s) the log gives missing or different"
    )


def _count_except(conn: Connection, left: str, right: str) -> int:
    sql = f"SELECT COUNT(*) FROM (SELECT * FROM {left} EXCEPT SELECT * FROM {right}) AS d"
    return int(conn.exec_driver_sql(sql).scalar() or 0)


def _canonical(state: Any) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))
