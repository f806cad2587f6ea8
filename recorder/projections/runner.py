"""The projection runner: checkpointed catch-up and rebuild of projections over the event log.

Guarantees:

* **Atomic checkpoints.** A projection's rows and its checkpoint (the last
  global position it consumed, plus the small state it carries between
  batches) are written in one transaction, so a crash or a concurrent reader
  never leaves rows that the checkpoint does not account for.
* **Catch-up equals rebuild.** Everything a projection needs across batches
  lives either in its own rows or in the JSON ``state`` stored beside its
  checkpoint, so consuming the log in any number of batches, split anywhere,
  gives the same tables as one rebuild from position 0 (property-tested).
* **Safe concurrency, short locks.** A batch is read and applied in memory
  without the write lock; then, under the lock (SQLite ``BEGIN IMMEDIATE``,
  PostgreSQL ``SELECT ... FOR UPDATE`` on the checkpoint rows), the checkpoint
  is read again and the batch is discarded if another reader got there first,
  so no event is applied twice and appends wait only for the writes.
* **Self-healing.** A projection whose stored ``version`` differs from the
  code's is reset and rebuilt on the next catch-up.

A projection is a class (:mod:`recorder.projections.projection`): a fresh
instance handles one batch (``start`` with the stored state, ``apply`` per
event, ``finish`` writes rows and returns the state to store). The log's rows
come from :mod:`~recorder.projections.log_read`, are seen as
:mod:`~recorder.projections.log_event` events, and are written through
:mod:`~recorder.projections.row_buffer`.

Throughput: a batch is read once for every projection at the same checkpoint,
as plain rows; each SSE event goes only to the projections whose
``sse_types`` name it (a dict lookup, no parse for events nobody reads), and
a projection may route its most frequent types to dedicated handlers
(:meth:`Projection.routes`); delta events, most of the log, can be taken as
just their ``item_id`` and ``delta``, cut out of the frame once for every
projection (:meth:`Projection.delta_routes`).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from recorder.events import now_ns
from recorder.projections.archive_read import archived_rows, check_archive
from recorder.projections.gc_pause import no_gc
from recorder.projections.json_text import forget_shared
from recorder.projections.log_event import DeltaHandler, LogEvent, Parsed, Row, delta_fields
from recorder.projections.log_read import can_read_ahead, decode_rows, read_ahead, read_events
from recorder.projections.projection import Projection, UnknownProjection, resolve
from recorder.store.engine import translate_errors
from recorder.store.schema import pj_checkpoints
from recorder.store.seal import ArchivedRows, refuse_replay_from
from recorder.store.store import EventStore

# Besides the runner's own names, the names callers have always imported from
# here (their homes are the modules named in the docstring).
__all__ = [
    "BATCH",
    "REBUILD_BATCH",
    "LogEvent",
    "Progress",
    "Projection",
    "UnknownProjection",
    "catch_up",
    "checkpoints",
    "dispatch",
    "read_events",
    "rebuild",
    "resolve",
    "write_connection",
]

BATCH = 5000
"""Events per catch-up transaction: bounds lock time and memory."""

REBUILD_BATCH = 20_000
"""Events per transaction of a rebuild, which reads the whole log: fewer,
larger batches mean fewer commits, fewer rewrites of rows that span batches
and fewer lookups of stored rows, for a few MB more memory."""

Progress = Callable[[int, int], None]
"""Called with (events consumed so far, events to consume in total)."""


def write_connection(store: EventStore) -> Connection:
    """A connection whose transactions take SQLite's write lock at BEGIN.

    Deferred transactions that read and then write can fail at once with
    "database is locked" instead of waiting; IMMEDIATE waits its turn.
    """
    conn = store.engine.connect()
    if store.backend == "sqlite":
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
    return conn


@contextlib.contextmanager
def _writing(store: EventStore) -> Iterator[Connection]:
    """A write transaction (see :func:`write_connection`) for projection rows.

    On SQLite it runs with ``secure_delete`` off (restored after): builds of
    SQLite that default it on zero every page a DELETE frees, which doubles
    the I/O of a rebuild's reset and of rewriting rows. Projection rows are
    copies of what the log keeps anyway, so zeroing their old pages protects
    nothing.
    """
    with translate_errors(store.url), write_connection(store) as conn:
        raw: Any = conn.connection.dbapi_connection if store.backend == "sqlite" else None
        previous = None
        if raw is not None:
            previous = int(raw.execute("PRAGMA secure_delete").fetchone()[0])
            raw.execute("PRAGMA secure_delete = 0")
        try:
            with conn.begin():
                if store.backend == "postgresql" and _has_lz4(store.url, conn):
                    # Projection rows hold large values (code outputs): lz4
                    # compresses them several times faster than the default
                    # pglz, and reading them back is the same to every reader.
                    conn.exec_driver_sql("SET LOCAL default_toast_compression = 'lz4'")
                yield conn
        finally:
            if previous is not None:
                raw.execute(f"PRAGMA secure_delete = {previous}")


_LZ4: dict[str, bool] = {}


def _has_lz4(url: str, conn: Connection) -> bool:
    """Whether this server can TOAST-compress with lz4 (PostgreSQL >= 14 built with it)."""
    if url not in _LZ4:
        found = conn.exec_driver_sql(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        ).first()
        _LZ4[url] = found is not None
    return _LZ4[url]


def checkpoints(store: EventStore) -> dict[str, tuple[int, int]]:
    """Stored (position, version) of every projection that has a checkpoint."""
    with translate_errors(store.url), store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(pj_checkpoints.c.name, pj_checkpoints.c.position, pj_checkpoints.c.version)
        ).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _reset(conn: Connection, proj: type[Projection]) -> None:
    if conn.dialect.name == "postgresql":
        # TRUNCATE, not DELETE: a DELETE leaves every old row (and its TOAST)
        # dead in the table, which the rebuild then writes after and which
        # only VACUUM reclaims. Same transaction, same all-or-nothing reset;
        # its lock is held only until this short transaction commits.
        conn.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in proj.tables)}")
    else:
        for table in proj.tables:
            conn.execute(table.delete())
    conn.execute(pj_checkpoints.delete().where(pj_checkpoints.c.name == proj.name))
    conn.execute(
        pj_checkpoints.insert(),
        {
            "name": proj.name,
            "version": proj.version,
            "position": 0,
            "state": "{}",
            "updated_at_ns": now_ns(),
        },
    )


def _prepare(
    store: EventStore, projs: Sequence[type[Projection]], force: bool, *, archive: bool = False
) -> None:
    """Create missing checkpoints; reset stale versions (or all of ``projs`` if ``force``).

    ``archive``: the caller folds the archived rows in first (see :func:`rebuild`).
    """
    stored = checkpoints(store)
    todo = [p for p in projs if force or p.name not in stored or stored[p.name][1] != p.version]
    if not todo:
        return
    if not archive:
        with translate_errors(store.url), store.engine.connect() as conn:
            # A reset starts the projection from nothing: not past archived rows.
            refuse_replay_from(conn, 0, [p.name for p in todo])
    with _writing(store) as conn:
        if store.backend == "postgresql":
            # Serialise resets with catch-ups, which lock their checkpoint rows.
            conn.exec_driver_sql("LOCK TABLE pj_checkpoints IN EXCLUSIVE MODE")
        stored_now = {
            r[0]: int(r[1])
            for r in conn.execute(sa.select(pj_checkpoints.c.name, pj_checkpoints.c.version))
        }
        for proj in todo:
            if force or stored_now.get(proj.name) != proj.version:
                _reset(conn, proj)


def catch_up(
    store: EventStore,
    names: Iterable[str] | None = None,
    *,
    batch: int = BATCH,
    until: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Bring projections up to the log's head (or ``until``); return events consumed.

    Projections at the same checkpoint share one read and one parse of each event.
    """
    projs = resolve(names)
    _prepare(store, projs, force=False)
    return _run(store, projs, batch=batch, until=until, progress=progress)


def rebuild(
    store: EventStore,
    names: Iterable[str] | None = None,
    *,
    batch: int = REBUILD_BATCH,
    progress: Progress | None = None,
    archive: Path | None = None,
) -> int:
    """Empty the projections' tables, reset their checkpoints to 0, and catch up.

    Once archived rows have left the log (see :mod:`recorder.archive`), a
    rebuild needs ``archive``, the directory of their archive files: they
    are checked against their seals first (nothing is emptied if one does
    not check out), then folded in before the live log.
    """
    projs = resolve(names)
    gone = 0 if archive is None else check_archive(store, archive)
    _prepare(store, projs, force=True, archive=gone > 0)
    consumed = 0
    if archive is not None and gone:
        head = store.last_position()
        for rows in archived_rows(store, archive, gone, batch):
            if not _apply_batch(store, projs, consumed, rows):
                raise ArchivedRows(
                    "another process moved the projections while they were rebuilt from the "
                    "archive: run the rebuild again"
                )
            consumed += len(rows)
            if progress is not None:
                progress(consumed, head)
    return consumed + _run(
        store, projs, batch=batch, until=None, progress=_after(progress, consumed)
    )


def _after(progress: Progress | None, done: int) -> Progress | None:
    """``progress`` counting ``done`` events already consumed."""
    if progress is None or not done:
        return progress
    report = progress
    return lambda current, total: report(done + current, done + total)


def _run(
    store: EventStore,
    projs: Sequence[type[Projection]],
    *,
    batch: int,
    until: int | None,
    progress: Progress | None,
) -> int:
    head = store.last_position() if until is None else until
    start = min((checkpoints(store).get(p.name, (0, 0))[0] for p in projs), default=head)
    if start < head:
        with translate_errors(store.url), store.engine.connect() as conn:
            refuse_replay_from(conn, start, [p.name for p in projs])
    total = max(head - start, 0)
    # The next batch is read on another thread while this one is applied and
    # written (see log_read.can_read_ahead). Events never change, so a read ahead is
    # what the next iteration would read itself, and it is used only if the
    # checkpoint it started from is the one that iteration gets.
    ahead: tuple[int, Future[list[Row]]] | None = None
    pool = ThreadPoolExecutor(1) if total > batch and can_read_ahead(store) else None
    consumed = 0
    # The collector stays off for the whole run, not batch by batch: turned
    # back on between batches, it walks each batch's rows (alive until the
    # next batch replaces them) once per generation, and finds no garbage.
    with no_gc():
        try:
            while True:
                stored = checkpoints(store)
                pending = [p for p in projs if stored[p.name][0] < head]
                if not pending:
                    break
                low = min(stored[p.name][0] for p in pending)
                group = [p for p in pending if stored[p.name][0] == low]
                if ahead is not None and ahead[0] == low:
                    events = decode_rows(ahead[1].result())
                else:
                    events = read_events(store, low, head, batch)
                ahead = None
                if not events:
                    break
                last = int(events[-1][0])
                started: list[Future[list[Row]]] = []
                read_next: Callable[[], None] | None = None
                if pool is not None and len(events) == batch and last < head:
                    read = functools.partial(read_ahead, pool, store, last, head, batch)
                    if store.backend == "postgresql":
                        started.append(read())
                    else:
                        # SQLite: from the writes on, which run in the driver
                        # with the GIL released. A read started earlier would
                        # fight the applying thread for the GIL, and its
                        # snapshot would hold back the WAL checkpoints of
                        # batch after batch (the WAL grew to 240 MB over 1M events).
                        read_next = functools.partial(_start_into, started, read)
                applied = _apply_batch(store, group, low, events, read_next)
                if started:
                    ahead = (last, started[0])
                if applied:
                    consumed += len(events)
                    if progress is not None:
                        progress(min(last - start, total), total)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    return consumed


def _start_into(started: list[Future[list[Row]]], read: Callable[[], Future[list[Row]]]) -> None:
    started.append(read())


def _apply_batch(
    store: EventStore,
    group: Sequence[type[Projection]],
    low: int,
    events: Sequence[Row],
    before_writing: Callable[[], None] | None = None,
) -> bool:
    """Apply ``events`` to every projection of ``group``; False if another reader won.

    ``before_writing`` is called once the events are applied in memory, just
    before the projections' rows are written.
    """
    try:
        with no_gc():
            return _apply_batch_locked(store, group, low, events, before_writing)
    finally:
        forget_shared()


def dispatch(projections: Sequence[Projection], events: Sequence[Row]) -> None:
    """One pass over the batch, each event to the projections that read it, in order.

    SSE events are routed by type through a dict (most are deltas few
    projections read, and the rest are skipped without making a
    :class:`LogEvent`); a delta type some projection takes as fields
    (:meth:`Projection.delta_routes`) has its fields cut out once for all of
    them; every other event, and an SSE frame without a type, goes to every
    projection's ``apply``. Each projection still sees its events in position
    order; projections never read each other's state, so interleaving them is
    the same as running them one after another.
    """
    Handler = Callable[[Parsed], None]
    every: list[Handler] = [p.apply for p in projections]
    catch_all: list[Handler] = [p.apply for p in projections if p.sse_types is None]
    routes: dict[str, list[Handler]] = {}
    by_fields: dict[str, list[DeltaHandler]] = {}
    for proj in projections:
        own_deltas = proj.delta_routes()
        for sse_type, delta_handler in own_deltas.items():
            by_fields.setdefault(sse_type, []).append(delta_handler)
        if proj.sse_types is not None:
            for sse_type, handler in proj.routes().items():
                if sse_type not in own_deltas:
                    routes.setdefault(sse_type, []).append(handler)
    for handlers in routes.values():
        handlers.extend(catch_all)
    # A delta type also read whole (by another projection's route, or a
    # catch-all) gets both: fields to some, a LogEvent to the others.
    also_whole = {t: routes.pop(t, catch_all) for t in by_fields}
    also_whole = {t: hs for t, hs in also_whole.items() if hs}
    get = routes.get
    make = LogEvent
    single = {t: hs[0] for t, hs in routes.items() if len(hs) == 1}
    one = single.get
    fields_of = by_fields.get
    cut = delta_fields
    for row in events:
        sse_type = row[6]
        if sse_type is not None and row[3] == "sse":
            takes_fields = fields_of(sse_type)
            if takes_fields is not None:
                raw = row[8]
                fields = cut(raw) if type(raw) is bytes else None
                if fields is None:
                    fields = make(row).delta_fields()
                item_id, delta = fields
                for delta_handler in takes_fields:
                    delta_handler(row, item_id, delta)
                if also_whole and sse_type in also_whole:
                    ev = make(row)
                    for handler in also_whole[sse_type]:
                        handler(ev)
                continue
            only = one(sse_type)
            if only is not None:
                # Most other events have one reader: no list to walk.
                only(make(row))
                continue
            handlers = get(sse_type, catch_all)
            if not handlers:
                continue
        else:
            handlers = every
        ev = make(row)
        for handler in handlers:
            handler(ev)


def _checkpoint_query(names: list[str]) -> sa.Select[Any]:
    # Ordered: locked FOR UPDATE, rows are taken in the order returned, and an
    # update moves a row in the heap, so in table order two catch-ups could
    # lock the same rows in opposite orders and deadlock.
    return (
        sa.select(pj_checkpoints.c.name, pj_checkpoints.c.position, pj_checkpoints.c.state)
        .where(pj_checkpoints.c.name.in_(names))
        .order_by(pj_checkpoints.c.name)
    )


def _apply_batch_locked(
    store: EventStore,
    group: Sequence[type[Projection]],
    low: int,
    events: Sequence[Row],
    before_writing: Callable[[], None] | None,
) -> bool:
    names = [p.name for p in group]
    projections: list[Projection] = []
    # Phase 1, without the write lock: apply the events in memory (projections
    # may read their own rows on this connection). Rows only change together
    # with the checkpoint, so if the checkpoint is still ``low`` under the lock
    # in phase 2, everything read here was current.
    with translate_errors(store.url), store.engine.connect() as conn:
        current = {r[0]: (int(r[1]), r[2]) for r in conn.execute(_checkpoint_query(names))}
        if any(current.get(n, (-1, ""))[0] != low for n in names):
            return False
        done: dict[tuple[str, str], Projection] = {}
        followers: list[tuple[Projection, Projection]] = []
        for proj_cls in group:
            raw_state = current[proj_cls.name][1]
            proj = proj_cls(conn, json.loads(raw_state))
            key = (proj_cls.shared, raw_state) if proj_cls.shared else None
            if key is not None and key in done:
                followers.append((proj, done[key]))
            elif key is not None:
                done[key] = proj
            projections.append(proj)
        leaders = [p for p in projections if all(p is not f for f, _ in followers)]
        for proj in leaders:
            proj.prefetch(events)
        dispatch(leaders, events)
        for proj, leader in followers:
            proj.adopt(leader)
        conn.rollback()
    if before_writing is not None:
        before_writing()
    # Phase 2, under the write lock (held only for the writes): check that no
    # other reader moved the checkpoints, then write rows and checkpoints at once.
    last = int(events[-1][0])
    with _writing(store) as conn:
        query = _checkpoint_query(names)
        if store.backend == "postgresql":
            query = query.with_for_update()
        if any(int(r[1]) != low for r in conn.execute(query)):
            conn.rollback()
            return False
        for proj in projections:
            proj.conn = conn
            proj.finish()
            conn.execute(
                pj_checkpoints.update()
                .where(pj_checkpoints.c.name == proj.name)
                .values(
                    position=last,
                    state=json.dumps(proj.state, sort_keys=True, separators=(",", ":")),
                    updated_at_ns=now_ns(),
                )
            )
    return True


# The name tests and older callers use for the read-ahead check.
_can_read_ahead = can_read_ahead
