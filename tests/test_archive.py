"""Partitions and archiving on PostgreSQL: old partitions leave as verified tapes.

The month of log here is SYNTHETIC: sessions made by ``synthetic_session``
(named so), two a day over 30 days of ``recorded_at_ns``, not recordings.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from old_log import old_log
from sqlalchemy.engine import make_url
from synthetic_session import SYNTHETIC_NAME, synthetic_session

from recorder.archive import ArchiveError, archive, drop_archived, parse_before, verify_archive
from recorder.cli import main
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, migrate
from recorder.store.engine import create_engine
from recorder.store.partitions import (
    AHEAD,
    DEFAULT_PARTITION,
    PARTITION_ROWS,
    ensure_partitions,
    list_partitions,
)
from recorder.store.seal import read_segments

DAY = 86_400 * 10**9
JAN_1 = parse_before("2026-01-01")


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _engine_do(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def partition_setup(url: str, rows: int, ahead: int) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            ensure_partitions(conn, rows=rows, ahead=ahead)
    finally:
        engine.dispose()


def month_events(days: int = 30, per_day: int = 2) -> list[list[Event]]:
    """Two synthetic sessions a day (40 events each), day d at 2026-01-01 + d days."""
    return [
        synthetic_session(
            new_id(), JAN_1 + day * DAY + k * 3_600 * 10**9, calls=2, deltas=5, text_deltas=5
        )
        for day in range(days)
        for k in range(per_day)
    ]


def month(store: EventStore, days: int = 30, per_day: int = 2) -> list[str]:
    """:func:`month_events` appended to ``store``; their session ids."""
    ids = []
    for events in month_events(days, per_day):
        store.append(events)
        ids.append(events[0].session_id)
    return ids


def hashes(store: EventStore) -> list[tuple[int, str]]:
    return [(ev.position, ev.hash) for ev in store.iter_events()]


@pytest.fixture
def month_db(pg_url: str) -> Iterator[str]:
    migrate.upgrade(pg_url)
    # 150 positions a partition: sessions (40 events) straddle partition ends.
    partition_setup(pg_url, rows=150, ahead=20)
    with EventStore.open(pg_url) as store:
        month(store)
    yield pg_url


# -- partitions ----------------------------------------------------------------


def test_a_0005_log_becomes_partitioned_with_every_hash_kept(
    make_pg_url: Callable[[], str],
) -> None:
    pg_url = make_pg_url()
    migrate.upgrade(pg_url, "0005_lean_log")
    # The store writes only the current row: the 0005 log is copied in by name.
    old_log(make_pg_url(), pg_url, month_events(days=3))
    engine_store = EventStore(create_engine(pg_url), pg_url)
    try:
        before = hashes(engine_store)
        assert engine_store.verify().ok
    finally:
        engine_store.close()
    migrate.upgrade(pg_url)
    with EventStore.open(pg_url) as store:
        assert hashes(store) == before
        report = store.verify()
        assert report.ok and report.checked == len(before) == 240
        with store.engine.connect() as conn:
            kind = conn.exec_driver_sql(
                "SELECT relkind FROM pg_class WHERE relname = 'events'"
            ).scalar()
            parts = list_partitions(conn)
        assert kind == "p"
        # The 0005 table is the first partition, holding exactly its rows.
        assert (parts[0].first, parts[0].end) == (1, 241)
        assert parts[-1].name == DEFAULT_PARTITION
        ahead = [(p.first, p.end) for p in parts if not p.is_default and (p.first or 0) > 240]
        assert ahead == [
            (241 + k * PARTITION_ROWS, 241 + (k + 1) * PARTITION_ROWS) for k in range(AHEAD)
        ]
        store.append([Event(new_id(), EventKind.SESSION_OPEN, 0, meta={"name": "after"})])
        assert store.verify().ok
    migrate.downgrade(pg_url, "0005_lean_log")
    engine_store = EventStore(create_engine(pg_url), pg_url)
    try:
        assert hashes(engine_store)[:240] == before
        assert engine_store.verify().ok
    finally:
        engine_store.close()


def test_appends_never_fail_for_a_missing_partition(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    partition_setup(pg_url, rows=50, ahead=1)
    with EventStore.open(pg_url) as store:
        month(store, days=5)  # 400 rows: far past the 50-position ranges made
        before = hashes(store)
        with store.engine.connect() as conn:
            in_default = conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}").scalar()
        assert in_default and in_default > 300
        with store.engine.begin() as conn:
            parts = ensure_partitions(conn)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}").scalar() == 0
        # The default partition's rows became a range of their own, not a row moved.
        ranges = [(p.first, p.end) for p in parts if not p.is_default]
        assert (ranges[0][0], ranges[-1][1]) == (1, 401 + AHEAD * 50)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert hashes(store) == before and store.verify().ok


def test_partitions_refuse_delete_and_truncate(month_db: str) -> None:
    engine = sa.create_engine(month_db)
    try:
        with engine.connect() as conn:
            part = list_partitions(conn)[0].name
        for statement in (
            f"DELETE FROM {part} WHERE position = 1",
            f"TRUNCATE {part}",
            f"TRUNCATE {DEFAULT_PARTITION}",
            "TRUNCATE events",
            f"UPDATE {part} SET seq = 9 WHERE position = 1",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="immutable"), engine.begin() as conn:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


# -- archive round trip ----------------------------------------------------------


def _figures(url: str) -> tuple[dict[str, object], int]:
    cost = cli("cost", "--db", url, "--json")
    audit = cli("audit", "--db", url, "--json")
    assert cost.exit_code == 0 and audit.exit_code == 0, cost.output + audit.output
    return json.loads(cost.output)["total"], len(json.loads(audit.output)["entries"])


def test_a_synthetic_month_archives_drops_and_verifies(month_db: str, tmp_path: Path) -> None:
    url, out = month_db, tmp_path / "archive"
    figures = _figures(url)
    assert figures[0]["exchanges"] == 60  # type: ignore[index]

    written = cli("archive", "--before", "2026-01-15", "-o", str(out), "--db", url)
    assert written.exit_code == 0, written.output
    with EventStore.open(url) as store:
        (segment,) = read_segments(store)
        # Whole partitions, all rows before the cutoff, whole closed sessions only.
        assert segment.first == 1 and segment.last % 150 == 0
        assert segment.last_at_ns < parse_before("2026-01-15")
        assert segment.events == segment.last and segment.sessions == segment.last // 40
        assert segment.last >= 600  # the first weeks, not a token partition
        report = store.verify()
        assert report.ok and report.start_position == 1  # nothing dropped yet
    assert (out / segment.file).is_file()
    assert f"archived positions 1-{segment.last}" in written.output

    dropped = cli("archive", "--drop", "-o", str(out), "--db", url)
    assert dropped.exit_code == 0, dropped.output
    assert f"positions 1-{segment.last}" in dropped.output
    with EventStore.open(url) as store:
        with store.engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT min(position) FROM events").scalar()
            names = [p.name for p in list_partitions(conn)]
        assert first == segment.last + 1
        assert "events_p000000000001" not in names
        # SQL readers see the first live row's predecessor hash, from the seal.
        with store.engine.connect() as conn:
            view = conn.exec_driver_sql(
                "SELECT position, prev_hash, hash FROM event_rows "
                f"WHERE position <= {first + 1} ORDER BY position"
            ).all()
        assert [row[:2] for row in view] == [(first, segment.head_hash), (first + 1, view[0][2])]
        # The archived sessions left whole: none of theirs is in the log.
        listed = {s.id for s in store.sessions()}
        assert len(listed) == 60 - segment.sessions

    listed_parts = cli("db", "partitions", "--db", url, "--json")
    assert listed_parts.exit_code == 0, listed_parts.output
    parts_doc = json.loads(listed_parts.output)["partitions"]
    assert parts_doc[0]["first"] == segment.last + 1 and parts_doc[0]["rows"] == 150
    assert parts_doc[-1]["name"] == DEFAULT_PARTITION

    live = cli("verify", "--db", url)
    assert live.exit_code == 0, live.output
    assert f"from position {segment.last + 1} (positions 1-{segment.last} are archived)" in (
        live.output
    )
    whole = cli("verify", "--db", url, "--archive", str(out))
    assert whole.exit_code == 0, whole.output
    assert f"ok: {segment.last} archived events in 1 file(s)" in whole.output
    # The projections were not partitioned: the archived sessions keep their figures.
    assert _figures(url) == figures
    rebuild = cli("projections", "rebuild", "--db", url)
    assert rebuild.exit_code == 1
    assert f"Error: positions 1-{segment.last} of the log are archived" in rebuild.output
    assert "--archive DIR" in rebuild.output
    assert _figures(url) == figures
    # Given the archive, a rebuild reads the archived rows from the files, then the log.
    rebuilt = cli("projections", "rebuild", "--archive", str(out), "--db", url, "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    with EventStore.open(url) as store:
        head = store.last_position()
    assert json.loads(rebuilt.output)["events_consumed"] == head
    assert _figures(url) == figures

    # A second run chains its file onto the first.
    second = cli("archive", "--before", "2026-01-22", "-o", str(out), "--drop", "--db", url)
    assert second.exit_code == 0, second.output
    with EventStore.open(url) as store:
        first_seg, second_seg = read_segments(store)
        assert second_seg.first == first_seg.last + 1
        assert second_seg.prev_hash == first_seg.head_hash
        with store.engine.connect() as conn:
            prev = conn.exec_driver_sql(
                f"SELECT prev_hash FROM event_rows WHERE position = {second_seg.last + 1}"
            ).scalar()
        assert prev == second_seg.head_hash
    whole = cli("verify", "--db", url, "--archive", str(out), "--json")
    assert whole.exit_code == 0, whole.output
    document = json.loads(whole.output)
    assert document["start_position"] == second_seg.last + 1
    assert document["archive"]["files"] == 2
    assert document["archive"]["rows"] == second_seg.last
    # Their rows keep the archived sessions' figures: checked against the archive and the log.
    assert {p["status"] for p in document["projections"]} == {"ok"}
    live = cli("verify", "--db", url, "--json")
    assert {p["status"] for p in json.loads(live.output)["projections"]} == {"archived"}
    assert _figures(url) == figures
    rebuilt = cli("projections", "rebuild", "costs", "--archive", str(out), "--db", url)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert _figures(url) == figures
    # An edited figure of an archived session is found, given the archive.
    with EventStore.open(url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE pj_costs SET input_tokens = input_tokens + 1")
    forged = cli("verify", "--db", url, "--archive", str(out), "--json")
    assert forged.exit_code == 1, forged.output
    by_name = {p["name"]: p for p in json.loads(forged.output)["projections"]}
    assert by_name["costs"]["status"] == "differs"
    assert by_name["audit"]["status"] == "ok"
    rebuilt = cli("projections", "rebuild", "costs", "--archive", str(out), "--db", url)
    assert cli("verify", "--db", url, "--archive", str(out)).exit_code == 0

    # An archive file is a tape: it verifies alone, and imports as its sessions.
    alone = cli("verify", str(out / first_seg.file))
    assert alone.exit_code == 0 and f"ok: {first_seg.last} rows" in alone.output, alone.output
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate.upgrade(fresh)
    imported = cli("import", str(out / first_seg.file), "--db", fresh)
    assert imported.exit_code == 0, imported.output
    with EventStore.open(fresh) as store:
        back = store.sessions()
        assert len(back) == first_seg.sessions
        assert {s.name for s in back} == {SYNTHETIC_NAME}
        assert store.verify().ok

    # A file altered, then one missing: verify names each.
    tampered = out / first_seg.file
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    bad = cli("verify", "--db", url, "--archive", str(out))
    assert bad.exit_code == 1
    assert f"archive {first_seg.file}" in bad.output and "altered" in bad.output
    # A rebuild refuses an archive that does not check out, before emptying anything.
    refused = cli("projections", "rebuild", "--archive", str(out), "--db", url)
    assert refused.exit_code == 1
    assert first_seg.file in refused.output and "altered" in refused.output
    assert _figures(url) == figures
    (out / second_seg.file).unlink()
    bad = cli("verify", "--db", url, "--archive", str(out))
    assert bad.exit_code == 1
    assert f"archive {second_seg.file}: missing" in bad.output


def test_only_closed_sessions_leave(pg_url: str, tmp_path: Path) -> None:
    migrate.upgrade(pg_url)
    partition_setup(pg_url, rows=80, ahead=10)
    with EventStore.open(pg_url) as store:
        month(store, days=2)
        # A session still recording, opened on day 2 and never closed.
        live = new_id()
        opened = Event(
            live, EventKind.SESSION_OPEN, 0, recorded_at_ns=JAN_1 + DAY, meta={"name": "on"}
        )
        store.append([opened])
        month(store, days=2)
        result = archive(store, parse_before("2026-02-01"), tmp_path)
        assert result.segment is not None
        # Every partition from the live session's on stays.
        with store.engine.connect() as conn:
            at = conn.exec_driver_sql(
                "SELECT e.position FROM events e JOIN sessions s ON s.id = e.session_key "
                "WHERE s.public_id = %(s)s",
                {"s": live},
            ).scalar()
        assert at == 161 and result.segment.last == 160
        again = archive(store, parse_before("2026-02-01"), tmp_path)
        assert again.segment is None and f"session {live}, still open" in again.reason


@pytest.mark.parametrize("stop", ["written", "verified", "sealed", "checked", "detached"])
def test_a_crash_between_steps_leaves_the_partition_or_a_verified_archive(
    month_db: str, tmp_path: Path, stop: str
) -> None:
    class Crash(Exception):
        pass

    def crash_at(step: str) -> None:
        if step == stop:
            raise Crash(step)

    before = parse_before("2026-01-15")
    with EventStore.open(month_db) as store:
        rows = hashes(store)
        with pytest.raises(Crash):
            archive(store, before, tmp_path, step=crash_at)
            drop_archived(store, tmp_path, step=crash_at)
        # Either way nothing left the database, and it verifies.
        assert hashes(store)[: len(rows)] == rows and store.verify().ok
        sealed = read_segments(store)
        for segment in sealed:
            problems, *_ = verify_archive(store, tmp_path)
            assert problems == [] and (tmp_path / segment.file).is_file()
        # A rerun finishes the job from where the crash left it.
        if not sealed:
            assert archive(store, before, tmp_path).segment is not None
        done = drop_archived(store, tmp_path)
        assert done.dropped and store.verify().ok
        assert verify_archive(store, tmp_path)[0] == []
        assert len(read_segments(store)) == 1


def test_drop_refuses_a_tampered_archive_file(month_db: str, tmp_path: Path) -> None:
    with EventStore.open(month_db) as store:
        result = archive(store, parse_before("2026-01-15"), tmp_path)
        assert result.path is not None
        result.path.write_bytes(result.path.read_bytes()[:-10])
        with pytest.raises(ArchiveError, match=f"archive file {result.path.name}"):
            drop_archived(store, tmp_path)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT min(position) FROM events").scalar() == 1
        assert store.verify().ok


def test_a_seal_that_does_not_match_its_row_is_reported(month_db: str, tmp_path: Path) -> None:
    with EventStore.open(month_db) as store:
        result = archive(store, parse_before("2026-01-15"), tmp_path)
        assert result.segment is not None
        # A forged seal (its own hash correct) naming another head for the same rows.
        meta = {
            "segments": [{**result.segment.meta(), "head_hash": "ab" * 32, "sealed_at": 0}],
        }
        store.append([Event("codetape-archive", EventKind.ARCHIVED, meta=meta)])
        report = store.verify()
        assert not report.ok
        assert report.problems[0].position == result.segment.last
        assert "archive seal" in report.problems[0].message


# -- privileges and backends -------------------------------------------------------


def _as_user(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


def test_the_roles_cannot_detach_or_drop_partitions(month_db: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    run = cli("db", "roles", "--prefix", prefix, "--db", month_db)
    assert run.exit_code == 0, run.output
    admin = month_db.replace("postgresql+psycopg://", "postgresql://")
    users = {role: f"{prefix}_{role}_login" for role in ("recorder", "projector", "reader")}
    with psycopg.connect(admin, autocommit=True) as conn:
        for role, user in users.items():
            conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE {prefix}_{role}")
    try:
        # The recorder may write and seal an archive: that is reading and appending.
        recorder = _as_user(month_db, users["recorder"])
        written = cli("archive", "--before", "2026-01-15", "-o", str(tmp_path), "--db", recorder)
        assert written.exit_code == 0, written.output
        with EventStore.open(month_db) as store, store.engine.connect() as conn:
            part = list_partitions(conn)[0].name
        for role, user in users.items():
            url = _as_user(month_db, user)
            refused = cli("archive", "--drop", "-o", str(tmp_path), "--db", url)
            assert refused.exit_code == 1, (role, refused.output)
            assert refused.output.startswith("Error: "), refused.output
            assert len(refused.output.strip().splitlines()) == 1
            for statement in (
                f"ALTER TABLE events DETACH PARTITION {part}",
                f"DROP TABLE {part}",
                f"TRUNCATE {part}",
                f"DELETE FROM {part}",
            ):
                engine = sa.create_engine(url)
                try:
                    with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
                        conn.exec_driver_sql(statement)
                finally:
                    engine.dispose()
                message = str(info.value.orig)
                assert "must be owner" in message or "permission denied" in message, message
        with EventStore.open(month_db) as store, store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT min(position) FROM events").scalar() == 1
        # The owner may.
        dropped = cli("archive", "--drop", "-o", str(tmp_path), "--db", month_db)
        assert dropped.exit_code == 0, dropped.output
        assert cli("verify", "--db", _as_user(month_db, users["reader"])).exit_code == 0
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for role, user in users.items():
                conn.execute(f"DROP OWNED BY {user}, {prefix}_{role}")
                conn.execute(f"DROP ROLE {user}")
                conn.execute(f"DROP ROLE {prefix}_{role}")


def test_archiving_a_sqlite_log_is_one_clear_error(sqlite_url: str, tmp_path: Path) -> None:
    migrate.upgrade(sqlite_url)
    for args in (
        ("archive", "--before", "2026-01-01", "-o", str(tmp_path)),
        ("archive", "--drop", "-o", str(tmp_path)),
        ("db", "partitions"),
    ):
        result = cli(*args, "--db", sqlite_url)
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and "PostgreSQL-only" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.zst"))


def test_a_bad_date_is_one_clear_error(tmp_path: Path) -> None:
    result = cli("archive", "--before", "last month", "-o", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.startswith(
        "Error: Invalid value for '--before': 'last month' is not a time: use YYYY-MM-DD"
    )


def test_a_checkpoint_signed_before_the_archive_verifies_after_the_drop(
    month_db: str, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from recorder.integrity import Checkpointer, create_checkpoint, verify_log

    with EventStore.open(month_db) as store:
        signed, _note = create_checkpoint(store, Ed25519PrivateKey.generate())
        archive(store, parse_before("2026-01-15"), tmp_path)
        done = drop_archived(store, tmp_path)
        assert done.last == 600
        month(store, days=1)
        older = dataclasses.replace(signed, size=300, head_hash="00" * 32)
        result = verify_log(store, [("signed", signed), ("older", older)])
        # The seal's Merkle frontier stands in for the dropped rows' leaves.
        assert result.ok, result.report.problems
        by_source = {c.source: c for c in result.checkpoints}
        assert by_source["signed"].ok and by_source["signed"].message.endswith("extended")
        assert "not checked: positions up to 600 are archived" in by_source["older"].message
        forged = dataclasses.replace(signed, root=b"\x00" * 32)
        assert not verify_log(store, [("forged", forged)]).ok
        # New checkpoints go on signing the log under its name, from the seal on.
        key = Ed25519PrivateKey.generate()
        after, _ = create_checkpoint(store, key)
        assert after.origin == signed.origin and after.size == store.last_position()
        assert verify_log(store, [("after", after)]).ok
        (tmp_path / "cps").mkdir()
        watcher = Checkpointer(store, key, tmp_path / "cps")
        made = watcher.advance()
        assert made is not None and (made.origin, made.root) == (after.origin, after.root)


@pytest.mark.parametrize("position", [5, 1])  # an exchange's frame; a session's open
def test_a_stream_clash_is_refused_across_partitions(month_db: str, position: int) -> None:
    """The stream trigger bounds its probe by the stream's first position, not the partition."""
    from test_store import _INTO, _MOVED, _forged_copy

    with EventStore.open(month_db) as store:
        before = hashes(store)
        params = _forged_copy(store, position)  # in the first partition; the head is in the 17th
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), store.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT {_INTO}{_MOVED}"), params)
        assert hashes(store) == before
        with store.engine.connect() as conn:
            bounds = conn.exec_driver_sql(
                "SELECT x.first_position, min(e.position) FROM events e "
                "JOIN exchanges x ON x.id = e.exchange_key GROUP BY x.first_position, x.id"
            ).all()
        # Each stream's bound is at or below its first event, and prunes: the head + 1
        # when its batch was appended (every synthetic session is one batch).
        assert len(bounds) == 120 and all(low <= first for low, first in bounds)
        assert sorted({low for low, _ in bounds}) == [1 + 40 * k for k in range(60)]
