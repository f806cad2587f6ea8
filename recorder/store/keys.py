"""Integer keys for the public values the lean row refers to.

Guarantees: :meth:`Keys.key` gives the key of a public value (a session or
exchange id, a response id, a kind, SSE name or hash format) in one of the
key tables, inserting it with the next free id if the table lacks it;
:meth:`Keys.resolve` does the same for many values in a few statements.
Either must be called inside a transaction that holds the log's write lock
(an append on SQLite, or the migration) or, on PostgreSQL, the key lock
:data:`KEYS_LOCK`: every PostgreSQL writer of the key tables takes that
one, which is what makes "the next free id" safe there. It lets a
PostgreSQL append make its new keys in a short transaction of their own,
before it takes the log's write lock. The key tables are append-only, so a
key once committed never changes and the cache may keep it for the life of
the store; after a failed transaction the caller calls :meth:`Keys.forget`,
since keys it inserted were rolled back. A key committed on its own by an
append that then fails stays, unused: nothing counts keys without events.
A PostgreSQL append, whose threads read the caches without any lock, makes
keys into an :meth:`Keys.overlay` and adopts them (:meth:`Keys.adopt`) once they
are committed: no other thread ever finds a key that may yet be rolled back.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, MutableMapping

import sqlalchemy as sa

from recorder.store.schema import KEY_TABLES

__all__ = ["KEYS_LOCK", "Caches", "Keys", "Overlay"]

Caches = Mapping[str, MutableMapping[str, int]]
"""Key table -> public value -> key."""
Overlay = dict[str, ChainMap[str, int]]
"""Caches whose new keys are kept apart from those they were made over."""

# The PostgreSQL advisory lock key every writer of the key tables takes
# ("codekeys" in ASCII), held until its transaction ends.
KEYS_LOCK = int.from_bytes(b"codekeys", "big")

_FIND = {t: sa.text(f"SELECT id FROM {t} WHERE public_id = :v") for t in KEY_TABLES}
_NEXT = {t: sa.text(f"SELECT coalesce(max(id), 0) + 1 FROM {t}") for t in KEY_TABLES}
_INSERT = {t: sa.text(f"INSERT INTO {t} (id, public_id) VALUES (:id, :v)") for t in KEY_TABLES}
_INSERT["exchanges"] = sa.text(
    "INSERT INTO exchanges (id, public_id, session_key) VALUES (:id, :v, :s)"
)
_FIND_MANY = {
    t: sa.text(f"SELECT public_id, id FROM {t} WHERE public_id IN :v").bindparams(
        sa.bindparam("v", expanding=True)
    )
    for t in KEY_TABLES
}
# Values per lookup: well under any driver's parameter limit.
_LOOKUP = 500


class Keys:
    """A cache of public value -> key for each key table, filled on demand."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, int]] = {t: {} for t in KEY_TABLES}
        self.names: dict[int, str] = {}
        self._next: dict[str, int] = {}

    def begin(self) -> None:
        """At the start of each write transaction: next ids are read afresh."""
        self._next.clear()

    def forget(self) -> None:
        """After a rolled-back transaction: keys it added may not exist.

        The caches are replaced, never emptied in place: another thread's
        append may be staging with the dicts it took from :attr:`ids` (a
        PostgreSQL append finds its keys before it takes any lock), and a
        key it found there a moment ago must still be there when it builds
        its rows.
        """
        self.ids = {t: {} for t in KEY_TABLES}
        self.names = {}
        self._next = {}

    @staticmethod
    def overlay(ids: Caches) -> Overlay:
        """Caches reading through ``ids``, new keys kept in the overlay until adopted."""
        return {table: ChainMap({}, cache) for table, cache in ids.items()}

    @staticmethod
    def adopt(ids: Caches, made: Overlay) -> None:
        """Add to ``ids`` the keys ``made`` holds (once their transaction has committed)."""
        for table, view in made.items():
            if view.maps[0]:
                ids[table].update(view.maps[0])

    def key(self, conn: sa.Connection, table: str, value: str, session_key: int = 0) -> int:
        """The key of ``value`` in ``table`` (``session_key``: a new exchange's session)."""
        cache = self.ids[table]
        found = cache.get(value)
        if found is not None:
            return found
        row = conn.execute(_FIND[table], {"v": value}).first()
        if row is not None:
            found = int(row[0])
        else:
            found = self._next.get(table)
            if found is None:
                found = int(conn.execute(_NEXT[table]).scalar_one())
            conn.execute(_INSERT[table], {"id": found, "v": value, "s": session_key})
            self._next[table] = found + 1
        cache[value] = found
        return found

    def resolve(
        self,
        conn: sa.Connection,
        table: str,
        values: dict[str, int],
        ids: Caches | None = None,
    ) -> None:
        """Put the key of each of ``values`` in :attr:`ids` (found, else inserted).

        ``values`` maps each value to its new exchange's session key (for
        ``exchanges``; ignored for the other tables). The ids given are read
        afresh from the table, not from :meth:`begin`'s counter. ``ids``: the
        caches the caller took from :attr:`ids` earlier (see :meth:`forget`).
        """
        cache = (self.ids if ids is None else ids)[table]
        wanted = [v for v in values if v not in cache]
        for start in range(0, len(wanted), _LOOKUP):
            part = wanted[start : start + _LOOKUP]
            cache.update((str(v), int(k)) for v, k in conn.execute(_FIND_MANY[table], {"v": part}))
        missing = [v for v in wanted if v not in cache]
        if not missing:
            return
        first = int(conn.execute(_NEXT[table]).scalar_one())
        conn.execute(
            _INSERT[table],
            [{"id": first + i, "v": v, "s": values[v]} for i, v in enumerate(missing)],
        )
        for i, v in enumerate(missing):
            cache[v] = first + i
        self._next.pop(table, None)

    def name(self, conn: sa.Connection, key: int) -> str:
        """The name (kind, SSE name, hash format) with key ``key``."""
        found = self.names.get(key)
        if found is None:
            found = self.names[key] = str(
                conn.execute(
                    sa.text("SELECT public_id FROM names WHERE id = :k"), {"k": key}
                ).scalar_one()
            )
        return found
