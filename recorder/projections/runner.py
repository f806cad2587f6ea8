"""Checkpointed projections: derived, rebuildable read models over the event log.

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

A projection is a class: a fresh instance handles one batch (``start`` with
the stored state, ``apply`` per event, ``finish`` writes rows and returns the
state to store).
"""

from __future__ import annotations

import abc
import gc
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import Connection, Table

from recorder.errors import CodetapeError
from recorder.events import EventKind, now_ns
from recorder.sse import parse_frame
from recorder.store.engine import translate_errors
from recorder.store.schema import pj_checkpoints
from recorder.store.store import EventStore

__all__ = [
    "BATCH",
    "LogEvent",
    "Parsed",
    "Projection",
    "RowBuffer",
    "UnknownProjection",
    "catch_up",
    "checkpoints",
    "rebuild",
    "write_connection",
]

BATCH = 5000
"""Events per catch-up transaction: bounds lock time and memory."""

Progress = Callable[[int, int], None]
"""Called with (events consumed so far, events to consume in total)."""


class UnknownProjection(CodetapeError):
    """A projection name that does not exist."""


_KINDS = {k.value: k for k in EventKind}


class LogEvent:
    """One event row as projections read it, its payload's JSON parsed once, on demand.

    Only the columns projections use (no hashes: ``verify`` owns those).
    """

    __slots__ = (
        "_data",
        "_fields",
        "exchange_id",
        "kind",
        "meta_json",
        "offset_ns",
        "payload",
        "position",
        "recorded_at_ns",
        "session_id",
        "sse_type",
    )

    position: int
    session_id: str
    exchange_id: str | None
    recorded_at_ns: int
    offset_ns: int | None
    sse_type: str | None
    meta_json: str

    def __init__(self, row: Sequence[Any]) -> None:
        (
            self.position,
            self.session_id,
            self.exchange_id,
            kind,
            self.recorded_at_ns,
            self.offset_ns,
            self.sse_type,
            self.meta_json,
            payload,
        ) = row
        self.kind: EventKind = _KINDS[kind]
        self.payload: bytes = payload if isinstance(payload, bytes) else bytes(payload)
        self._data: Any = _UNSET
        self._fields: tuple[str | None, str | None] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.meta_json)
        return loaded

    @property
    def data(self) -> Any:
        """The JSON in the payload (SSE ``data``, a JSON body), else ``None``."""
        if self._data is _UNSET:
            value: Any = None
            if self.kind is EventKind.SSE:
                value = _sse_json(self.payload)
            elif self.kind in (EventKind.BODY, EventKind.REQUEST):
                head = self.payload[:1]
                if head in (b"{", b"[", b" ", b"\n"):
                    try:
                        value = json.loads(self.payload)
                    except (ValueError, RecursionError):
                        value = None
            self._data = value
        return self._data

    def delta_fields(self) -> tuple[str | None, str | None]:
        """(``item_id``, ``delta``) of a delta event, without parsing the whole frame.

        Deltas are most of the log and these two strings are all projections
        read from them, so they are cut out of the JSON text directly (with
        the C string decoder json uses); anything unexpected falls back to the
        full parse, so the result is always what ``data`` would give.
        """
        fields = self._fields
        if fields is not None:
            return fields
        if self._data is _UNSET:
            raw = self.payload
            if raw.startswith(b"event: ") and b"\r" not in raw:
                text = raw.decode("utf-8", "replace")
                delta = _string_field(text, '"delta":')
                item_id = _string_field(text, '"item_id":')
                if delta is not None and item_id is not None:
                    self._fields = (item_id, delta)
                    return self._fields
        data = self.data
        if not isinstance(data, dict):
            return None, None
        item_id, delta = data.get("item_id"), data.get("delta")
        return (
            item_id if isinstance(item_id, str) else None,
            delta if isinstance(delta, str) else None,
        )


_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]


def _string_field(text: str, key: str) -> str | None:
    """The string value of the only ``key`` in a flat JSON object's text, else None.

    An unescaped ``"key":`` can only be a key: inside a JSON string its quotes
    would be escaped. A key seen twice, or a value that is not a string, gives
    None (the caller then parses the whole frame).
    """
    at = text.find(key)
    if at < 0 or text.find(key, at + 1) >= 0:
        return None
    end = at + len(key)
    while text[end : end + 1] == " ":
        end += 1
    if text[end : end + 1] != '"':
        return None
    try:
        value, _ = _scanstring(text, end + 1)
    except ValueError:
        return None
    return str(value)


Parsed = LogEvent
"""What :meth:`Projection.apply` receives."""

_UNSET: Any = object()


# meta is "{}" on SSE rows (most of the log): not worth fetching there.
_READ_COLUMNS = (
    "position, session_id, exchange_id, kind, recorded_at_ns, offset_ns, sse_type, "
    "CASE WHEN kind = 'sse' THEN '{}' ELSE meta END, payload"
)


def read_events(store: EventStore, after: int, until: int, limit: int) -> list[LogEvent]:
    """Events with ``after < position <= until``, at most ``limit``, in position order.

    The same keyset read as :meth:`EventStore.iter_events` (appends commit in
    position order, so nothing can appear later below ``until``), through the
    driver's cursor and fewer columns, because rebuilds read every row.
    """
    marker = "?" if store.backend == "sqlite" else "%s"
    sql = (
        f"SELECT {_READ_COLUMNS} FROM events WHERE position > {marker} AND position <= {marker} "
        f"ORDER BY position LIMIT {marker}"
    )
    with translate_errors(store.url), store.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, (after, until, limit))
            return [LogEvent(row) for row in cursor.fetchall()]
        finally:
            cursor.close()


def _sse_json(raw: bytes) -> Any:
    """A frame's ``data`` as JSON; same result as ``parse_frame(raw).json()``."""
    # Fast path for the shape OpenAI sends, exactly "event: X\ndata: {...}\n\n":
    # one data line, no CR, no comment, nothing after it.
    if raw.startswith(b"event: ") and raw.endswith(b"}\n\n") and b"\r" not in raw:
        at = raw.find(b"\ndata: ")
        if at > 0 and raw.count(b"\n", at + 1) == 2:
            try:
                return json.loads(raw[at + 7 : -2].decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                return None
    # Only a stream's first frame can hold a BOM; ignoring one elsewhere is harmless.
    return parse_frame(raw).json()


class RowBuffer:
    """Rows one batch writes to one table: plain inserts, and upserts by primary key.

    Writes go through the driver's ``executemany`` with tuples in column order:
    a rebuild inserts about one row per event, so per-row overhead matters.
    """

    def __init__(self, table: Table, backend: str) -> None:
        self.table = table
        self.columns = [c.name for c in table.columns]
        self.keys = [c.name for c in table.primary_key.columns]
        marker = "?" if backend == "sqlite" else "%s"
        self._insert_sql = (
            f"INSERT INTO {table.name} ({', '.join(self.columns)}) "
            f"VALUES ({', '.join([marker] * len(self.columns))})"
        )
        self._delete_sql = f"DELETE FROM {table.name} WHERE " + " AND ".join(
            f"{k} = {marker}" for k in self.keys
        )
        self.rows: list[tuple[Any, ...]] = []
        self.upserts: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(self, row: tuple[Any, ...]) -> None:
        """A new row (its key was never written before), in column order."""
        self.rows.append(row)

    def put(self, row: dict[str, Any]) -> None:
        """A row that replaces any row with the same primary key."""
        self.upserts[tuple(row[k] for k in self.keys)] = row

    def flush(self, conn: Connection) -> None:
        if self.upserts:
            conn.exec_driver_sql(self._delete_sql, list(self.upserts))
            cols = self.columns
            self.rows.extend(tuple(r[c] for c in cols) for r in self.upserts.values())
        if self.rows:
            conn.exec_driver_sql(self._insert_sql, self.rows)
        self.rows = []
        self.upserts = {}


class Projection(abc.ABC):
    """One read model: its name, code version, tables and event handler."""

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]
    """Tables this projection owns: emptied on rebuild."""
    shared: ClassVar[str | None] = None
    """Projections with the same ``shared`` key compute the same state from the
    same events; when they start a batch with identical state, the work is done
    once (:meth:`adopt`)."""
    sse_types: ClassVar[frozenset[str] | None] = None
    """The SSE event types :meth:`apply` reads (``None``: all); other SSE events
    are not passed to it. Non-SSE events always are."""

    def __init__(self, conn: Connection, state: dict[str, Any]) -> None:
        self.conn = conn
        self.state = state

    @abc.abstractmethod
    def apply(self, pe: Parsed) -> None:
        """Consume one event (in global position order)."""

    def adopt(self, other: Projection) -> None:
        """Take the applied state of ``other`` (same ``shared`` key, same start state)."""
        raise NotImplementedError

    @abc.abstractmethod
    def finish(self) -> None:
        """Write this batch's rows on ``self.conn``; ``self.state`` is stored after."""


def write_connection(store: EventStore) -> Connection:
    """A connection whose transactions take SQLite's write lock at BEGIN.

    Deferred transactions that read and then write can fail at once with
    "database is locked" instead of waiting; IMMEDIATE waits its turn.
    """
    conn = store.engine.connect()
    if store.backend == "sqlite":
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
    return conn


def _registry() -> dict[str, type[Projection]]:
    from recorder.projections import ALL

    return {p.name: p for p in ALL}


def resolve(names: Iterable[str] | None) -> list[type[Projection]]:
    """Projection classes by name (all of them for ``None``)."""
    registry = _registry()
    if names is None:
        return list(registry.values())
    result = []
    for name in names:
        if name not in registry:
            raise UnknownProjection(
                f"no projection named {name!r}: choose from {', '.join(registry)}"
            )
        result.append(registry[name])
    return result


def checkpoints(store: EventStore) -> dict[str, tuple[int, int]]:
    """Stored (position, version) of every projection that has a checkpoint."""
    with translate_errors(store.url), store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(pj_checkpoints.c.name, pj_checkpoints.c.position, pj_checkpoints.c.version)
        ).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _reset(conn: Connection, proj: type[Projection]) -> None:
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


def _prepare(store: EventStore, projs: Sequence[type[Projection]], force: bool) -> None:
    """Create missing checkpoints; reset stale versions (or all of ``projs`` if ``force``)."""
    stored = checkpoints(store)
    todo = [p for p in projs if force or p.name not in stored or stored[p.name][1] != p.version]
    if not todo:
        return
    with translate_errors(store.url), write_connection(store) as conn, conn.begin():
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
    batch: int = BATCH,
    progress: Progress | None = None,
) -> int:
    """Empty the projections' tables, reset their checkpoints to 0, and catch up."""
    projs = resolve(names)
    _prepare(store, projs, force=True)
    return _run(store, projs, batch=batch, until=None, progress=progress)


def _run(
    store: EventStore,
    projs: Sequence[type[Projection]],
    *,
    batch: int,
    until: int | None,
    progress: Progress | None,
) -> int:
    head = store.last_position() if until is None else until
    consumed = 0
    start = min((checkpoints(store).get(p.name, (0, 0))[0] for p in projs), default=head)
    total = max(head - start, 0)
    while True:
        stored = checkpoints(store)
        pending = [p for p in projs if stored[p.name][0] < head]
        if not pending:
            break
        low = min(stored[p.name][0] for p in pending)
        group = [p for p in pending if stored[p.name][0] == low]
        events = read_events(store, low, head, batch)
        if not events:
            break
        if _apply_batch(store, group, low, events):
            consumed += len(events)
            if progress is not None:
                progress(min(events[-1].position - start, total), total)
    return consumed


def _apply_batch(
    store: EventStore, group: Sequence[type[Projection]], low: int, events: list[Parsed]
) -> bool:
    """Apply ``events`` to every projection of ``group``; False if another reader won."""
    # A batch allocates many small, acyclic objects: the cyclic collector's
    # repeated passes over them cost more than the batch's own work.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _apply_batch_locked(store, group, low, events)
    finally:
        if enabled:
            gc.enable()


def _checkpoint_query(names: list[str]) -> sa.Select[Any]:
    return sa.select(
        pj_checkpoints.c.name, pj_checkpoints.c.position, pj_checkpoints.c.state
    ).where(pj_checkpoints.c.name.in_(names))


def _apply_batch_locked(
    store: EventStore, group: Sequence[type[Projection]], low: int, events: list[Parsed]
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
        for proj_cls in group:
            raw_state = current[proj_cls.name][1]
            proj = proj_cls(conn, json.loads(raw_state))
            apply = proj.apply
            wanted = proj_cls.sse_types
            key = (proj_cls.shared, raw_state) if proj_cls.shared else None
            if key is not None and key in done:
                proj.adopt(done[key])
            elif wanted is None:
                for pe in events:
                    apply(pe)
            else:
                # Most events are deltas few projections read: skip them unparsed.
                for pe in [e for e in events if e.sse_type is None or e.sse_type in wanted]:
                    apply(pe)
            if key is not None:
                done.setdefault(key, proj)
            projections.append(proj)
        conn.rollback()
    # Phase 2, under the write lock (held only for the writes): check that no
    # other reader moved the checkpoints, then write rows and checkpoints at once.
    last = events[-1].position
    with translate_errors(store.url), write_connection(store) as conn, conn.begin():
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
