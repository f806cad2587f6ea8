"""Repair next to real recorders: in other pid namespaces, on another host name, paused, killed.

Each recorder is a real process (tests/paced_recorder.py) streaming slowly
into the test's database; the repairs run here, as another recorder opening
a session (automatic repair) and as ``codetape repair``. Namespaces need
``unshare``: as root, or through a user namespace where the kernel allows one.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from recorder.capture import CaptureSession
from recorder.cli import main
from recorder.events import EventKind
from recorder.repair import liveness, process_state
from recorder.store import EventStore

RECORDER = str(Path(__file__).resolve().parent / "paced_recorder.py")
FRAMES = 40

pytestmark = pytest.mark.slow


class Recorder:
    """A recording process in its own process group, its stdout read line by line."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        writer: str = "auto",
        delay: float,
        requests: int = 1,
        lease: tuple[float, float],
        prefix: list[str] | None = None,
        tmp_path: Path,
    ) -> None:
        env = {
            **os.environ,
            "CODETAPE_LEASE_SECONDS": str(lease[0]),
            "CODETAPE_LEASE_RENEW_SECONDS": str(lease[1]),
        }
        argv = [sys.executable, RECORDER, url, name, writer, str(FRAMES), str(delay)]
        self.stderr_path = tmp_path / f"{name}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*(prefix or []), *argv, str(requests)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                start_new_session=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # end of output

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the recorder never printed {prefix!r}") from None
            if line == "":
                raise AssertionError(f"the recorder ended before {prefix!r}: {self.stderr()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float = 120) -> dict[str, object]:
        """Wait for the end; the session's stats it printed."""
        seen = [line for line in self.seen if line.startswith("stats")]
        line = seen[0] if seen else self.wait_for("stats", timeout)
        assert self.proc.wait(timeout) == 0, self.stderr()
        stats: dict[str, object] = json.loads(line.split(" ", 1)[1])
        return stats

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    started: list[Recorder] = []
    yield started
    for recorder in started:
        recorder.kill()
        if recorder.proc.stdout is not None:
            recorder.proc.stdout.close()


def _holds_a_transaction(url: str) -> bool:
    """Whether another connection is inside a transaction on this database right now."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(parsed.database), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'"
        ).fetchone()
    return bool(row and row[0])


def _stop_between_transactions(recorder: Recorder, url: str) -> None:
    """SIGSTOP the recorder at a moment it holds no database lock.

    A process frozen inside a transaction would hold the log's write lock (or
    a lease row) and make every other writer wait for it: real, but not what
    these tests are about.
    """
    for _ in range(100):
        recorder.signal(signal.SIGSTOP)
        time.sleep(0.05)
        if not _holds_a_transaction(url):
            return
        recorder.signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the recorder never paused outside a transaction")


def _unshare(*namespaces: str) -> list[str]:
    """The unshare prefix for these namespaces (through a user namespace when not root)."""
    prefix = ["unshare", *namespaces, "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]
    try:
        works = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    if not works:
        pytest.skip(f"cannot create namespaces here ({' '.join(prefix)})")
    return prefix


def _only_session(store: EventStore, name: str) -> str:
    [session] = [s for s in store.sessions() if s.name == name]
    return session.id


def _session_closes(store: EventStore, session_id: str) -> list[dict[str, object]]:
    return [e.meta for e in store.session_events(session_id) if e.kind is EventKind.SESSION_CLOSE]


def test_a_recorder_in_another_pid_namespace_is_never_closed_by_its_neighbours(
    store: EventStore, tmp_path: Path, recorders: list[Recorder]
) -> None:
    """Same host name, same boot id, another pid namespace: the old liveness rule saw it dead."""
    prefix = _unshare("--pid")
    # 40 events at 4 per second outlast the lease: only renewals keep it. The lease is
    # 12 renewal periods long so that a renewer starved of the CPU on a loaded CI runner
    # for a few seconds does not lose it; losing it is tested on purpose further down.
    live = Recorder(
        store.url, "live", delay=0.25, lease=(6.0, 0.5), prefix=prefix, tmp_path=tmp_path
    )
    recorders.append(live)
    live.wait_for("sent 0")
    session_id = _only_session(store, "live")
    identity = store.find_session(session_id).metadata["recorder"]
    # Its pid means another process (or none) out here: the identity cannot tell it is alive.
    assert process_state(identity) != "alive"

    neighbours = 0
    while True:
        # A loaded machine can run fewer rounds than the recorder prints lines:
        # read all it printed, so its own close after "done" is not taken for a repair.
        with contextlib.suppress(queue.Empty):
            live.seen.append(live.lines.get(timeout=0.5))
            while True:
                live.seen.append(live.lines.get_nowait())
        if any(line.startswith("done") for line in live.seen):
            break
        with CaptureSession(store.url, "neighbour"):  # repairs first, as every recorder does
            neighbours += 1
        result = CliRunner().invoke(main, ["repair", "--db", store.url])
        assert result.exit_code == 0, result.output
        closes = _session_closes(store, session_id)
        assert not [c for c in closes if "repaired" in c], closes
        if closes:
            break  # closed by its own recorder after its last frame, since the repair ran
        assert f"left {session_id} open: its recorder holds a live lease" in result.output
    stats = live.finish()
    assert neighbours >= 3

    assert f"done 0 {FRAMES}" in live.seen
    assert _only_session(store, "live") == session_id  # no continuation
    [x] = store.exchanges(session_id)
    assert (x.outcome, x.sse_events) == ("completed", FRAMES)
    [closing] = _session_closes(store, session_id)
    assert "repaired" not in closing  # closed by its own recorder
    assert stats["events_lost"] == 0 and stats["store_errors"] == 0
    report = store.verify()
    assert report.ok and report.open_exchanges == []
    assert "UNIQUE" not in live.stderr() and "lease" not in live.stderr()


def test_another_hosts_session_is_repaired_once_its_lease_expired_without_force(
    store: EventStore, tmp_path: Path, recorders: list[Recorder]
) -> None:
    prefix = [
        *_unshare("--uts", "--pid"),
        "sh",
        "-c",
        'hostname recorder-elsewhere && exec "$@"',
        "sh",
    ]
    dead = Recorder(
        store.url, "elsewhere", delay=0.1, lease=(2.0, 0.25), prefix=prefix, tmp_path=tmp_path
    )
    recorders.append(dead)
    dead.wait_for("sent 5")
    session_id = _only_session(store, "elsewhere")
    assert store.find_session(session_id).metadata["recorder"]["host"] == "recorder-elsewhere"
    dead.kill()  # SIGKILL, recorder child and all: nothing is released

    # Until its lease runs out it counts as live, as it would if it were running.
    early = CliRunner().invoke(main, ["repair", "--db", store.url, "--json"])
    if not liveness(store)[session_id].repairable:
        assert json.loads(early.stdout)["sessions_closed"] == []
    deadline = time.monotonic() + 30
    while not liveness(store)[session_id].repairable:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)

    result = CliRunner().invoke(main, ["repair", "--db", store.url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sessions_closed"] == [session_id]
    [x] = store.exchanges(session_id)
    assert x.outcome == "interrupted" and "lease" in (x.reason or "")
    assert store.find_session(session_id).closed
    report = store.verify()
    assert report.ok and report.open_exchanges == []


def test_a_recorder_paused_short_of_its_lease_is_left_alone(
    store: EventStore, tmp_path: Path, recorders: list[Recorder]
) -> None:
    paused = Recorder(store.url, "paused", delay=0.1, lease=(6.0, 0.5), tmp_path=tmp_path)
    recorders.append(paused)
    paused.wait_for("sent 10")
    session_id = _only_session(store, "paused")
    _stop_between_transactions(paused, store.url)
    try:
        result = CliRunner().invoke(main, ["repair", "--db", store.url])
        with CaptureSession(store.url, "neighbour", writer="thread"):
            pass
        # Still short of its lease, on the database's clock: the premise of this test.
        assert liveness(store)[session_id].lease == "live"
    finally:
        paused.signal(signal.SIGCONT)
    assert result.exit_code == 0, result.output
    assert "closed 0 session(s)" in result.output and "live lease" in result.output
    stats = paused.finish()

    assert _only_session(store, "paused") == session_id
    [x] = store.exchanges(session_id)
    assert (x.outcome, x.sse_events) == ("completed", FRAMES)
    [closing] = _session_closes(store, session_id)
    assert "repaired" not in closing
    assert stats["events_lost"] == 0
    report = store.verify()
    assert report.ok and report.open_exchanges == []


@pytest.mark.parametrize("writer", ["auto", "thread"])
def test_a_recorder_paused_past_its_lease_is_repaired_and_goes_on_in_a_continuation(
    store: EventStore, tmp_path: Path, recorders: list[Recorder], writer: str
) -> None:
    paused = Recorder(
        store.url,
        "paused",
        writer=writer,
        delay=0.1,
        requests=2,
        lease=(1.5, 0.25),
        tmp_path=tmp_path,
    )
    recorders.append(paused)
    paused.wait_for("sent 10")
    session_id = _only_session(store, "paused")
    _stop_between_transactions(paused, store.url)
    try:
        deadline = time.monotonic() + 30
        while not liveness(store)[session_id].repairable:
            assert time.monotonic() < deadline, "the lease never expired"
            time.sleep(0.1)
        result = CliRunner().invoke(main, ["repair", "--db", store.url, "--json"])
    finally:
        paused.signal(signal.SIGCONT)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sessions_closed"] == [session_id]
    stats = paused.finish()

    # The SDK got every event of both responses: the recorder never breaks the call.
    assert f"done 0 {FRAMES}" in paused.seen and f"done 1 {FRAMES}" in paused.seen
    old = store.find_session(session_id)
    [continuation] = [s for s in store.sessions() if s.name == "paused" and s.id != session_id]
    # The old session: what was stored before the pause, ended by the repair, closed once.
    [x1] = store.exchanges(session_id)
    assert x1.outcome == "interrupted" and "lease" in (x1.reason or "")
    [closing] = _session_closes(store, session_id)
    assert closing["repaired"] is True
    # The continuation: named after the old one, says why, counts every event it lost.
    assert continuation.metadata == old.metadata and continuation.closed
    own = [e for e in store.session_events(continuation.id) if e.exchange_id is None]
    assert own[0].kind is EventKind.SESSION_OPEN and own[0].meta["continues"] == session_id
    assert own[1].kind is EventKind.CAPTURE_GAP and own[1].meta["lease_lost"] is True
    [gap] = [e.meta for e in own if e.meta.get("exchange") == x1.id]
    assert gap["session"] == session_id
    # Each of the first response's events is either in the old session or counted here.
    assert x1.sse_events + gap["lost_events"] == FRAMES + 1  # + its ending
    assert stats["events_lost"] == gap["lost_events"]
    [x2] = store.exchanges(continuation.id)
    assert (x2.outcome, x2.sse_events) == ("completed", FRAMES)
    report = store.verify()
    assert report.ok and report.open_exchanges == [] and report.capture_gaps == 2
    errors = paused.stderr()
    assert f"the lease on session {session_id} was lost" in errors
    assert f"recording continues in session {continuation.id}" in errors
    assert "UNIQUE" not in errors
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM leases")).scalar() == 0
