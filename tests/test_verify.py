"""`verify` finds every kind of tampering, on both backends.

The tests tamper the way an attacker with database access would: they switch
the immutability triggers off and then change rows with raw SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from tampering import rewrite, rows, tamper

from recorder.cli import main
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, migrate
from recorder.store.schema import events


@pytest.fixture
def store(db_url: str) -> Iterator[EventStore]:
    migrate.upgrade(db_url)
    with EventStore.open(db_url) as opened:
        sid, xid = new_id(), new_id()
        batch = [Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "t"})]
        batch.append(Event(sid, EventKind.REQUEST, 0, xid, payload=b"{}"))
        batch += [
            Event(sid, EventKind.SSE, 1 + i, xid, payload=f"data: {i}\n\n".encode())
            for i in range(8)
        ]
        batch.append(Event(sid, EventKind.EXCHANGE_END, 9, xid, meta={"outcome": "completed"}))
        opened.append(batch)  # positions 1..11
        yield opened


def blob(store: EventStore, hex_bytes: str) -> str:
    """A bytes literal in the backend's own spelling."""
    return f"'\\x{hex_bytes}'::bytea" if store.backend == "postgresql" else f"X'{hex_bytes}'"


def rehash(store: EventStore) -> str:
    """The stored hash with its first byte replaced, in the backend's own spelling."""
    if store.backend == "postgresql":
        return "'\\xff'::bytea || substring(hash from 2)"
    return "CAST(X'ff' || substr(hash, 2) AS BLOB)"


def copy_row(position: int, new_position: int, source: str = "events", **changes: str) -> str:
    columns = [c.name for c in events.columns]
    values = [changes.get(c, c) for c in columns]
    values[0] = str(new_position)
    return (
        f"INSERT INTO events ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM {source} WHERE position = {position}"
    )


SAVE = "CREATE TEMP TABLE saved AS SELECT * FROM events"


CASES: dict[str, tuple[Callable[[EventStore], list[str]], int, str]] = {
    "altered payload": (
        lambda s: [
            f"UPDATE events SET payload = {blob(s, '6461746127')}, codec = NULL WHERE position = 5"
        ],
        5,
        "altered",
    ),
    "altered meta": (
        lambda s: ['UPDATE events SET meta = \'{"outcome":"failed"}\' WHERE position = 11'],
        11,
        "altered",
    ),
    "altered time": (
        lambda s: ["UPDATE events SET recorded_at_ns = 0 WHERE position = 3"],
        3,
        "altered",
    ),
    "removed row": (lambda s: ["DELETE FROM events WHERE position = 6"], 6, "missing"),
    "removed first row": (lambda s: ["DELETE FROM events WHERE position = 1"], 1, "missing"),
    # The lean row keeps no copy of its predecessor's hash: a row moved, forged
    # or inserted no longer re-derives from the row now before it.
    "appended forged row": (
        lambda s: [copy_row(4, 12, exchange_key="999")],
        12,
        "altered",
    ),
    "inserted row": (
        # A row slipped in between 5 and 6: rows 6.. move up one, a forged row fills the hole.
        lambda s: [
            SAVE,
            "DELETE FROM events WHERE position >= 6",
            *[copy_row(p, p + 1, "saved") for p in range(6, 12)],
            copy_row(4, 6, "saved", exchange_key="999"),
        ],
        6,
        "altered",
    ),
    "reordered rows": (
        lambda s: [
            SAVE,
            "DELETE FROM events WHERE position IN (4, 5)",
            copy_row(5, 4, "saved"),
            copy_row(4, 5, "saved"),
        ],
        4,
        "altered",
    ),
    "rehashed row": (
        # Recomputing a row's own hash is not enough: its successor still points at the old one.
        lambda s: [
            f"UPDATE events SET payload = {blob(s, '00')}, codec = NULL, "
            f"hash = {rehash(s)} WHERE position = 5"
        ],
        5,
        "altered",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verify_names_the_first_bad_position(store: EventStore, case: str) -> None:
    assert store.verify().ok
    statements, position, message = CASES[case]
    tamper(store, *statements(store))
    report = store.verify()
    assert not report.ok
    assert report.first_bad_position == position
    assert message in report.problems[0].message


def test_verify_cli_exits_non_zero_naming_the_position(store: EventStore) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", "--db", store.url])
    assert ok.exit_code == 0, ok.output
    assert "ok: 11 events verified" in ok.output
    tamper(
        store, f"UPDATE events SET payload = {blob(store, '41')}, codec = NULL WHERE position = 7"
    )
    bad = runner.invoke(main, ["verify", "--db", store.url])
    assert bad.exit_code == 1
    assert "position 7: hash mismatch" in bad.output


def test_unknown_hash_format_is_reported_as_such(store: EventStore) -> None:
    tamper(
        store,
        "INSERT INTO names (id, public_id) VALUES (99, 'sha512-v9')",
        "UPDATE events SET hash_format_key = 99 WHERE position = 2",
    )
    report = store.verify()
    assert report.first_bad_position == 2
    assert "unknown hash format" in report.problems[0].message


def test_engine_is_untouched_by_tampering_helpers(store: EventStore) -> None:
    # The triggers are back in force for a store nobody tampered with.
    with pytest.raises(sa.exc.DBAPIError), store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE position = 1")


def test_positions_must_run_from_1_without_a_gap(store: EventStore) -> None:
    """Rows removed and the rest re-hashed where they stand: the chain is whole, a hole is not."""
    kept = [(ev.position, ev) for ev in rows(store) if ev.position not in (4, 5)]
    # Take the removed SSE frames out of the exchange's seq numbering too, as an attacker would.
    renumbered = [
        (p, replace(ev, seq=ev.seq - 2) if ev.exchange_id and ev.position > 5 else ev)
        for p, ev in kept
    ]
    rewrite(store, renumbered)
    report = store.verify()
    assert report.first_bad_position == 4
    assert report.problems[0].message == "positions 4-5 are missing: rows were removed"
    assert len(report.problems) == 1


def test_a_log_not_starting_at_1_is_reported(store: EventStore) -> None:
    rewrite(store, [(ev.position + 3, ev) for ev in rows(store)])
    report = store.verify()
    assert report.first_bad_position == 1
    assert report.problems[0].message == "positions 1-3 are missing: rows were removed"
