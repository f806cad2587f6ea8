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

Throughput: a batch is read once for every projection at the same checkpoint,
as plain rows; each SSE event goes only to the projections whose
``sse_types`` name it (a dict lookup, no parse for events nobody reads), and
a projection may route its most frequent types to dedicated handlers
(:meth:`Projection.routes`); delta events, most of the log, can be taken as
just their ``item_id`` and ``delta``, cut out of the frame once for every
projection (:meth:`Projection.delta_routes`).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import gc
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import Connection, Table

from recorder.errors import CodetapeError
from recorder.events import EventKind, now_ns
from recorder.sse import parse_frame
from recorder.store.codec import decode
from recorder.store.engine import translate_errors
from recorder.store.schema import pj_checkpoints
from recorder.store.seal import refuse_replay_from
from recorder.store.store import EventStore

__all__ = [
    "BATCH",
    "REBUILD_BATCH",
    "DeltaHandler",
    "LogEvent",
    "Parsed",
    "Projection",
    "Row",
    "RowBuffer",
    "UnknownProjection",
    "catch_up",
    "checkpoints",
    "delta_fields",
    "dump_json",
    "read_events",
    "read_rows",
    "rebuild",
    "shared_json",
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


class UnknownProjection(CodetapeError):
    """A projection name that does not exist."""


_KINDS = {k.value: k for k in EventKind}


class LogEvent:
    """One event row as projections read it, its payload's JSON parsed once, on demand.

    Only the columns projections use (no hashes: ``verify`` owns those).
    ``meta`` and ``data`` are parsed once and shared by every projection the
    event goes to: they must not be mutated.
    """

    __slots__ = (
        "_data",
        "_meta",
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
    meta_json: str | None
    """None for SSE events, whose meta is always empty (not read, see ``_READ_COLUMNS``)."""

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
        self._meta: dict[str, Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        # Parsed once: every projection reads the meta of every non-SSE event.
        meta = self._meta
        if meta is None:
            meta = self._meta = json.loads(self.meta_json) if self.meta_json is not None else {}
        return meta

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
                    if _MAY_HOLD_SURROGATES(self.payload):
                        value = valid_unicode(value)
            self._data = value
        return self._data

    def delta_fields(self) -> tuple[str | None, str | None]:
        """(``item_id``, ``delta``) of a delta event: :func:`delta_fields`, else from ``data``."""
        if self._data is _UNSET:
            fields = delta_fields(self.payload)
            if fields is not None:
                return fields
        data = self.data
        if not isinstance(data, dict):
            return None, None
        item_id, delta = data.get("item_id"), data.get("delta")
        return (
            item_id if isinstance(item_id, str) else None,
            delta if isinstance(delta, str) else None,
        )


def delta_fields(raw: bytes) -> tuple[str | None, str | None] | None:
    """(``item_id``, ``delta``) cut out of a delta frame's JSON text, or None to parse it.

    Deltas are most of the log and these two strings are all projections
    read from them, so they are cut out of the JSON text directly (by a
    regex when the value holds no escape, else with the C string decoder
    json uses); a frame of any other shape gives None, and the caller parses
    it (:meth:`LogEvent.delta_fields`), so the result is always what the
    full parse would give.
    """
    if not raw.startswith(b"event: ") or b"\r" in raw:
        return None
    # The usual shape first: each key once, a plain string right after it
    # (no space, no escape), matched by one regex each.
    if raw.count(b'"delta":') == 1 and raw.count(b'"item_id":') == 1:
        found_delta = _PLAIN_DELTA.search(raw)
        if found_delta is not None:
            found_item = _PLAIN_ITEM_ID.search(raw)
            if found_item is not None:
                return (
                    found_item.group(1).decode("utf-8", "replace"),
                    found_delta.group(1).decode("utf-8", "replace"),
                )
    delta = _bytes_field(raw, b'"delta":')
    item_id = _bytes_field(raw, b'"item_id":')
    if delta is not None and item_id is not None:
        return item_id, delta
    return None


_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]
_ESCAPED = re.compile(rb"[\x00-\x1f\\]")
# A key that occurs once, then a string without escapes or control characters:
# its bytes are the value (what _bytes_field would return, decoded alike).
_PLAIN_DELTA = re.compile(rb'"delta":"([^"\\\x00-\x1f]*)"')
_PLAIN_ITEM_ID = re.compile(rb'"item_id":"([^"\\\x00-\x1f]*)"')


def _bytes_field(raw: bytes, key: bytes) -> str | None:
    """:func:`_string_field` on the frame's bytes, decoding only the value.

    Most values hold no escape and no control character: then the value is
    the bytes up to the next quote, and decoding just them gives what
    decoding the whole frame and scanning would (``key`` and quotes are ASCII,
    which UTF-8 never uses inside a multi-byte character, nor does the
    ``replace`` handler swallow). Anything else takes the general path.
    """
    at = raw.find(key)
    if at < 0 or raw.find(key, at + 1) >= 0:
        return None
    end = at + len(key)
    while raw[end : end + 1] == b" ":
        end += 1
    if raw[end : end + 1] != b'"':
        return None
    close = raw.find(b'"', end + 1)
    if close >= 0:
        value = raw[end + 1 : close]
        if _ESCAPED.search(value) is None:
            return value.decode("utf-8", "replace")
    return _string_field(raw.decode("utf-8", "replace"), key.decode())


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
    return _SURROGATE.sub("\ufffd", value)


def dump_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept: the one encoding projections store JSON values in."""
    return _dumps(value, separators=(",", ":"), ensure_ascii=False)


_dumps = json.dumps
_SHARED: dict[int, tuple[Any, str]] = {}


def shared_json(value: list[Any]) -> str:
    """:func:`dump_json` of a large parsed value that several projections store.

    Code interpreter outputs are the bulk of the bytes the chunks and audit
    projections write, and both store the same parsed list (the runner hands
    every projection the same :class:`LogEvent`): the text is made once per
    batch. Keyed by identity, and the entry holds the value, so an id cannot
    be reused while it is remembered; parsed values are never mutated.
    Forgotten at the end of every batch (:func:`_apply_batch`).
    """
    key = id(value)
    found = _SHARED.get(key)
    if found is not None and found[0] is value:
        return found[1]
    text = dump_json(value)
    _SHARED[key] = (value, text)
    return text


Parsed = LogEvent
"""What :meth:`Projection.apply` receives."""

_UNSET: Any = object()


# meta is "{}" on SSE rows (most of the log): not worth fetching there, and
# NULL (None) costs the driver less than any string.
_READ_COLUMNS = (
    "position, session_id, exchange_id, kind, recorded_at_ns, offset_ns, sse_type, "
    "CASE WHEN kind = 'sse' THEN NULL ELSE meta END, codec, stored_payload, sse_event, item_id"
)


Row = Sequence[Any]
"""One event row as read: ``_READ_COLUMNS`` in order, the payload decoded (what
:class:`LogEvent` takes)."""

DeltaHandler = Callable[[Row, str | None, str | None], None]
"""Called with a delta event's row and its (``item_id``, ``delta``)."""


def read_events(store: EventStore, after: int, until: int, limit: int) -> list[Row]:
    """Event rows with ``after < position <= until``, at most ``limit``, in position order.

    The same keyset read as :meth:`EventStore.iter_events` (appends commit in
    position order, so nothing can appear later below ``until``), through the
    driver's cursor and fewer columns, because rebuilds read every row. Rows
    stay tuples: a :class:`LogEvent` is only made for a row some projection
    reads (see :func:`_apply_batch`).
    """
    with translate_errors(store.url), store.engine.connect() as conn:
        return read_rows(conn, store.backend, after, until, limit)


def read_rows(conn: Connection, backend: str, after: int, until: int, limit: int) -> list[Row]:
    """:func:`read_events` on a connection the caller holds (inside its transaction)."""
    marker = "?" if backend == "sqlite" else "%s"
    sql = (
        f"SELECT {_READ_COLUMNS} FROM event_rows WHERE position > {marker} "
        f"AND position <= {marker} "
        f"ORDER BY position LIMIT {marker}"
    )
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if backend == "postgresql":
            # Binary results: bytea arrives as raw bytes, not hex text the
            # server must encode and the client decode (payloads are most bytes).
            cursor.execute(sql, (after, until, limit), binary=True)
        else:
            cursor.execute(sql, (after, until, limit))
        with _no_gc():
            stored: list[Row] = cursor.fetchall()
            # The payload as recorded: decompressed here, so projections
            # never see how a row stores it.
            rows: list[Row] = [(*r[:8], decode(r[8], r[9], r[10], r[11])) for r in stored]
        return rows
    finally:
        cursor.close()


def _sse_json(raw: bytes) -> Any:
    """A frame's ``data`` as JSON; same result as ``parse_frame(raw).json()``.

    Except for lone surrogates, which become U+FFFD (see :func:`valid_unicode`).
    """
    # Fast path for the shape OpenAI sends, exactly "event: X\ndata: {...}\n\n":
    # one data line, no CR, no comment, nothing after it.
    if raw.startswith(b"event: ") and raw.endswith(b"}\n\n") and b"\r" not in raw:
        at = raw.find(b"\ndata: ")
        if at > 0 and raw.count(b"\n", at + 1) == 2:
            try:
                value = json.loads(raw[at + 7 : -2].decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                return None
            return valid_unicode(value) if _MAY_HOLD_SURROGATES(raw) else value
    # Only a stream's first frame can hold a BOM; ignoring one elsewhere is harmless.
    value = parse_frame(raw).json()
    # A copy: the frame caches its parse.
    return valid_unicode(value) if _MAY_HOLD_SURROGATES(raw) else value


# Only a \uDXXX escape can put a surrogate into parsed JSON (raw bytes are
# decoded with "replace"); json.loads joins a valid pair into one character,
# so any surrogate left is alone and cannot be stored as UTF-8 text.
_MAY_HOLD_SURROGATES = re.compile(rb"\\u[dD]").search
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(value: Any) -> Any:
    """``value`` (parsed JSON) with every lone surrogate replaced by U+FFFD.

    JSON may escape one (``"\\ud800"``); no database stores it as text. The
    projections show U+FFFD; the log keeps the exact bytes.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {valid_unicode(k): valid_unicode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_unicode(v) for v in value]
    return value


class RowBuffer:
    """Rows one batch writes to one table: plain inserts, and upserts by primary key.

    Writes go through the driver's ``executemany`` with tuples in column order
    (on PostgreSQL, ``COPY``): a rebuild inserts about one row per event, so
    per-row overhead matters.
    """

    def __init__(self, table: Table, backend: str) -> None:
        self.table = table
        self.backend = backend
        self.columns = [c.name for c in table.columns]
        self.keys = [c.name for c in table.primary_key.columns]
        marker = self._marker = "?" if backend == "sqlite" else "%s"
        self._insert_sql = (
            f"INSERT INTO {table.name} ({', '.join(self.columns)}) "
            f"VALUES ({', '.join([marker] * len(self.columns))})"
        )
        self._delete_sql = f"DELETE FROM {table.name} WHERE " + " AND ".join(
            f"{k} = {marker}" for k in self.keys
        )
        self._copy_sql = f"COPY {table.name} ({', '.join(self.columns)}) FROM STDIN"
        self._select_head = f"SELECT {', '.join(self.columns)} FROM {table.name}"
        self._select_sql = f"{self._select_head} WHERE " + " AND ".join(
            f"{k} = {marker}" for k in self.keys
        )
        self._cursor: Any = None
        self.rows: list[tuple[Any, ...]] = []
        self.upserts: dict[tuple[Any, ...], dict[str, Any]] = {}

    def stored(self, conn: Connection, key: tuple[Any, ...]) -> dict[str, Any] | None:
        """The stored row with primary key ``key`` (as written by earlier batches), if any.

        Through one driver cursor, not a Core ``select``: projections look
        rows up per event, where SQLAlchemy's statement overhead would dominate.
        """
        if self._cursor is None:
            self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor = self._cursor
        cursor.execute(self._select_sql, key)
        # fetchall, not fetchone: a SQLite statement left unfinished keeps its read open.
        found = cursor.fetchall()
        return dict(zip(self.columns, found[0], strict=True)) if found else None

    def stored_where(
        self, conn: Connection, column: str, values: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Every stored row whose ``column`` is one of ``values``, in one query per 500."""
        if self._cursor is None:
            self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor = self._cursor
        found: list[dict[str, Any]] = []
        for at in range(0, len(values), 500):
            chunk = list(values[at : at + 500])
            markers = ", ".join([self._marker] * len(chunk))
            cursor.execute(f"{self._select_head} WHERE {column} IN ({markers})", chunk)
            found.extend(dict(zip(self.columns, row, strict=True)) for row in cursor.fetchall())
        return found

    def add(self, row: tuple[Any, ...]) -> None:
        """A new row (its key was never written before), in column order."""
        self.rows.append(row)

    def put(self, row: dict[str, Any]) -> None:
        """A row that replaces any row with the same primary key."""
        self.upserts[tuple(row[k] for k in self.keys)] = row

    def flush(self, conn: Connection) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self.upserts:
            conn.exec_driver_sql(self._delete_sql, list(self.upserts))
            cols = self.columns
            self.rows.extend(tuple(r[c] for c in cols) for r in self.upserts.values())
        if self.rows and self.backend == "postgresql":
            # COPY streams the rows in one statement: several times faster than
            # executemany's INSERT per row, and the same rows (same adapters).
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                with cursor.copy(self._copy_sql) as copy:
                    for row in self.rows:
                        copy.write_row(row)
            finally:
                cursor.close()
        elif self.rows:
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

    def routes(self) -> dict[str, Callable[[Parsed], None]]:
        """The handler of each SSE event type in :attr:`sse_types` (``apply`` by default).

        The runner calls a route's handler instead of :meth:`apply` for SSE
        events of that type, so a projection can skip re-dispatching its most
        frequent events; the handler must do exactly what ``apply`` would.
        """
        return dict.fromkeys(self.sse_types or (), self.apply)

    def delta_routes(self) -> dict[str, DeltaHandler]:
        """Handlers of delta event types that read nothing but ``item_id`` and ``delta``.

        The runner calls such a handler instead of any route or :meth:`apply`
        for that type, with the row and the event's
        :meth:`LogEvent.delta_fields`, worked out once for every projection
        and without making a :class:`LogEvent`: deltas are most of the log.
        The handler must do exactly what ``apply`` would.
        """
        return {}

    def prefetch(self, events: Sequence[Row]) -> None:  # noqa: B027 - optional hook
        """Before :meth:`apply` sees ``events``: a chance to read stored rows in bulk.

        Only a cache: what it loads must be what per-event lookups would read.
        """

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


def _prepare(store: EventStore, projs: Sequence[type[Projection]], force: bool) -> None:
    """Create missing checkpoints; reset stale versions (or all of ``projs`` if ``force``)."""
    stored = checkpoints(store)
    todo = [p for p in projs if force or p.name not in stored or stored[p.name][1] != p.version]
    if not todo:
        return
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
    start = min((checkpoints(store).get(p.name, (0, 0))[0] for p in projs), default=head)
    if start < head:
        with translate_errors(store.url), store.engine.connect() as conn:
            refuse_replay_from(conn, start, [p.name for p in projs])
    total = max(head - start, 0)
    # The next batch is read on another thread while this one is applied and
    # written (see _can_read_ahead). Events never change, so a read ahead is
    # what the next iteration would read itself, and it is used only if the
    # checkpoint it started from is the one that iteration gets.
    ahead: tuple[int, Future[list[Row]]] | None = None
    pool = ThreadPoolExecutor(1) if total > batch and _can_read_ahead(store) else None
    consumed = 0
    # The collector stays off for the whole run, not batch by batch: turned
    # back on between batches, it walks each batch's rows (alive until the
    # next batch replaces them) once per generation, and finds no garbage.
    with _no_gc():
        try:
            while True:
                stored = checkpoints(store)
                pending = [p for p in projs if stored[p.name][0] < head]
                if not pending:
                    break
                low = min(stored[p.name][0] for p in pending)
                group = [p for p in pending if stored[p.name][0] == low]
                if ahead is not None and ahead[0] == low:
                    events = ahead[1].result()
                else:
                    events = read_events(store, low, head, batch)
                ahead = None
                if not events:
                    break
                last = int(events[-1][0])
                started: list[Future[list[Row]]] = []
                read_next: Callable[[], None] | None = None
                if pool is not None and len(events) == batch and last < head:
                    read = functools.partial(_read_ahead, pool, store, last, head, batch)
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


def _read_ahead(
    pool: ThreadPoolExecutor, store: EventStore, after: int, until: int, limit: int
) -> Future[list[Row]]:
    return pool.submit(read_events, store, after, until, limit)


def _start_into(started: list[Future[list[Row]]], read: Callable[[], Future[list[Row]]]) -> None:
    started.append(read())


def _can_read_ahead(store: EventStore) -> bool:
    """Read ahead where a reader on its own connection never blocks the writer.

    PostgreSQL: its server works while Python does. SQLite only in WAL mode
    (every file database codetape opens; never an in-memory one, whose
    connections do not share one database the same way): the read starts when
    the batch before is being written, and runs mostly while this thread is
    inside the driver inserting and committing, with the GIL released
    (measured over 1M events: 10.6-10.9 s instead of 12.0-12.3 s per rebuild).
    While it reads, a commit's checkpoint cannot restart the WAL, so the WAL
    file grows during a rebuild (to 240 MB over 1M events; SQLite removes it
    when the last connection closes).
    """
    if store.backend == "postgresql":
        return True
    with translate_errors(store.url), store.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        conn.rollback()
    return str(mode).lower() == "wal"


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
        with _no_gc():
            return _apply_batch_locked(store, group, low, events, before_writing)
    finally:
        _SHARED.clear()


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic collector off: a batch allocates many small, acyclic objects
    (rows, events, row tuples), and the collector's repeated passes over them
    cost more than the batch's own work. Only whoever turned it off turns it
    back on, so nesting (or the read-ahead thread) leaves it as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _dispatch(projections: Sequence[Projection], events: Sequence[Row]) -> None:
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
    return sa.select(
        pj_checkpoints.c.name, pj_checkpoints.c.position, pj_checkpoints.c.state
    ).where(pj_checkpoints.c.name.in_(names))


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
        _dispatch(leaders, events)
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
