"""Ctrl-C during ``codetape import``: the message and exit status say what was committed.

A real ``codetape`` process gets SIGINT at several points: before anything is
committed, while a later file is being read, and at moments spread over a
run of small files (which land in and around their commits). Each time the
exit status is 130, stderr ends with one ``Error: interrupted: ...`` line and
never "Aborted!" or a traceback, and the sessions in the database are
exactly those of the files reported imported, no more, no fewer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner

from recorder.cli import main
from recorder.events import Event, EventKind
from recorder.store import EventStore, migrate

ROOT = Path(__file__).resolve().parents[1]
STREAM_TAPE = (
    ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
CODETAPE = str(Path(sys.executable).parent / "codetape")
_WAIT = 120.0  # only guards against a hang


def tape_of_copies(path: Path, copies: int, tag: str) -> list[str]:
    """A tape of ``copies`` distinct sessions (new ids and names); returns their ids."""
    lines = STREAM_TAPE.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    ids: list[str] = []
    for n in range(copies):
        suffix = f"{tag}{n:04d}"
        for line in lines:
            record = json.loads(line)
            record["session"] = record["session"][: 32 - len(suffix)] + suffix
            if "exchange" in record:
                record["exchange"] = record["exchange"][: 32 - len(suffix)] + suffix
            if record["kind"] == "session_open":
                record["meta"]["name"] += f"-{suffix}"
                ids.append(record["session"])
            out.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return ids


def start(files: list[Path], db: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [CODETAPE, "import", *map(str, files), "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(stream: IO[str]) -> str:
    line = stream.readline()
    assert line, "the import ended before the expected line"
    return line


def stored_sessions(db: str) -> set[str]:
    listed = CliRunner().invoke(main, ["sessions", "--db", db, "--json"])
    return {s["id"] for s in json.loads(listed.output)}


def finish(proc: subprocess.Popen[str], seen: list[str]) -> tuple[list[str], str]:
    out, err = proc.communicate(timeout=_WAIT)
    return seen + out.splitlines(), err


def check(
    db: str, proc: subprocess.Popen[str], seen: list[str], ids: dict[Path, list[str]]
) -> tuple[list[Path], str]:
    """The invariant: what the output says was imported is exactly what the database holds.

    A file cut off by the interruption after some of its batches were
    committed is named in the last line, and only its sessions may be there
    besides the files reported imported.
    """
    lines, err = finish(proc, seen)
    assert "Traceback" not in err and "Aborted" not in err and "KeyboardInterrupt" not in err
    imported = [Path(line.split(": imported", 1)[0]) for line in lines if ": imported (" in line]
    expected = {sid for path in imported for sid in ids[path]}
    if proc.returncode == 0:  # the signal came after the last file: nothing to interrupt
        assert stored_sessions(db) == expected
        return imported, ""
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted: "), err
    cut = re.search(r"; (\d+) events of (.+?) were committed, up to a batch boundary", last)
    stored = stored_sessions(db)
    if cut is None:
        assert stored == expected
    else:
        cut_ids = set(ids[Path(cut.group(2))])
        assert expected <= stored <= expected | cut_ids
        assert stored & cut_ids  # it said events of that file were committed
    if imported:
        assert f"imported {len(imported)} of {len(ids)} file(s) before that, committed" in last
    else:
        assert "nothing was imported" in last
    return imported, last


@pytest.fixture
def db(migrated_db_url: str) -> str:
    return migrated_db_url


def test_ctrl_c_before_any_commit_says_nothing_was_imported(
    sqlite_url: str, tmp_path: Path
) -> None:
    migrate.upgrade(sqlite_url)
    ids = {tmp_path / "big.jsonl": tape_of_copies(tmp_path / "big.jsonl", 60, "b")}
    for n in range(3):
        path = tmp_path / f"small{n}.jsonl"
        ids[path] = tape_of_copies(path, 1, f"s{n}")
    files = list(ids)
    database = sqlite_url.removeprefix("sqlite:///")
    proc = start(files, sqlite_url)
    # Once the database file is open, the command runs (its start-up is over);
    # the big first file takes seconds to read and append.
    deadline = time.monotonic() + _WAIT
    while not any(
        os.path.realpath(f"/proc/{proc.pid}/fd/{fd}") == database
        for fd in os.listdir(f"/proc/{proc.pid}/fd")
    ):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    imported, last = check(sqlite_url, proc, [], ids)
    assert imported == []
    assert re.fullmatch(
        r"Error: interrupted: nothing was imported(; nothing of \S+big.jsonl was written)?"
        r"; [34] file\(s\) not tried",
        last,
    ), last


def test_ctrl_c_while_reading_a_later_file(db: str, tmp_path: Path) -> None:
    ids: dict[Path, list[str]] = {}
    for n in range(2):
        path = tmp_path / f"small{n}.jsonl"
        ids[path] = tape_of_copies(path, 1, f"s{n}")
    big = tmp_path / "big.jsonl"
    ids[big] = tape_of_copies(big, 60, "b")
    tail = tmp_path / "tail.jsonl"
    ids[tail] = tape_of_copies(tail, 1, "t")
    proc = start(list(ids), db)
    seen = [read_line(proc.stdout), read_line(proc.stdout)]  # type: ignore[arg-type]
    proc.send_signal(signal.SIGINT)
    imported, last = check(db, proc, seen, ids)
    assert len(imported) == 2
    # The signal lands while the big file is read, or (rarely) just before it starts.
    assert last in (
        "Error: interrupted: imported 2 of 4 file(s) before that, committed; "
        f"nothing of {big} was written; 1 file(s) not tried",
        "Error: interrupted: imported 2 of 4 file(s) before that, committed; 2 file(s) not tried",
    )


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.1, 0.25])
def test_ctrl_c_around_commits_never_misreports(db: str, tmp_path: Path, delay: float) -> None:
    ids: dict[Path, list[str]] = {}
    for n in range(12):
        path = tmp_path / f"f{n:02d}.jsonl"
        ids[path] = tape_of_copies(path, 3, f"f{n:02d}")
    proc = start(list(ids), db)
    seen = [read_line(proc.stdout)]  # type: ignore[arg-type]
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    imported, _ = check(db, proc, seen, ids)
    assert imported  # the first file was reported before the signal


def test_ctrl_c_in_a_long_file_stops_at_the_next_batch_and_says_what_is_stored(
    db: str, tmp_path: Path
) -> None:
    """Only the commit under way is waited for, not the rest of the file; the line says
    how much of the file is stored, and importing it again stores the rest."""
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    ids = {big: tape_of_copies(big, 100, "b"), small: tape_of_copies(small, 1, "s")}
    total = 100 * len(STREAM_TAPE.read_text(encoding="utf-8").splitlines())
    proc = start([big, small], db)
    with EventStore.open(db) as store:
        deadline = time.monotonic() + _WAIT
        while store.last_position() == 0:  # until the first batch is committed
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=_WAIT)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        said = re.fullmatch(
            rf"Error: interrupted: nothing was imported; (\d+) events of {re.escape(str(big))} "
            r"were committed, up to a batch boundary \(its sessions cut there are listed as "
            r"open\): import it again to store the rest; 1 file\(s\) not tried",
            last,
        )
        assert said is not None, last
        committed = int(said.group(1))
        assert 0 < committed < total  # stopped inside the file, not at its end
        assert store.last_position() == committed  # exactly what it said, nothing of small
        assert {s.id for s in store.sessions()} <= set(ids[big])

        again = subprocess.run(
            [CODETAPE, "import", str(big), str(small), "--db", db],
            capture_output=True,
            text=True,
            timeout=_WAIT,
        )
        assert again.returncode == 0, again.stderr
        assert (
            f"{big}: imported (tape, {total - committed} events; {committed} more were "
            "already stored, by an interrupted import of it)"
        ) in again.stdout
        assert store.last_position() == total + total // 100  # the rest, nothing twice
        listed = store.sessions()
        assert {s.id for s in listed} == set(ids[big]) | set(ids[small])
        assert all(s.closed for s in listed)


def test_a_ctrl_c_during_a_commit_is_held_until_the_commit_is_known(store: EventStore) -> None:
    """Deterministic: the signal is raised from inside the commit itself."""
    from sqlalchemy import event

    from recorder.cli.interrupts import CommitGuard

    def interrupt_now(_conn: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    engine = store.write_engine  # appends commit there (their own connections on SQLite)
    # Whatever handled SIGINT before (SIG_IGN in a background job) is what comes back.
    before = signal.getsignal(signal.SIGINT)
    guard = CommitGuard(engine)
    try:
        with guard:
            # Listeners run in the order they were added: the guard's first.
            event.listen(engine, "commit", interrupt_now)
            try:
                store.append([Event("s1", EventKind.SESSION_OPEN, 0, meta={"name": "x"})])
            except KeyboardInterrupt:
                pytest.fail("Ctrl-C cut into the commit")
            finally:
                event.remove(engine, "commit", interrupt_now)
            assert guard.requested
            with pytest.raises(KeyboardInterrupt):
                guard.settle()
    finally:
        guard.restore()
    assert store.last_position() == 1
    assert signal.getsignal(signal.SIGINT) is before


_RESET_SCRIPT = """
import sys
from sqlalchemy import event
from recorder.store import EventStore

url, quiet, failure = sys.argv[1:]
if quiet == "quiet":
    from recorder.cli.app import quiet_interrupted_cleanup

    quiet_interrupted_cleanup()
store = EventStore.open(url)


def reset(*_args):
    raise KeyboardInterrupt if failure == "ctrl-c" else RuntimeError("a real cleanup failure")


event.listen(store.engine, "reset", reset)
try:
    store.last_position()  # the connection's reset, on its return to the pool, raises
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("quiet", ["quiet", "as before"])
def test_a_ctrl_c_during_a_connection_reset_prints_no_traceback(
    sqlite_url: str, quiet: str
) -> None:
    """SQLAlchemy logs an interrupted pool reset with its traceback; the CLI keeps it quiet."""
    migrate.upgrade(sqlite_url)

    def run_script(failure: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _RESET_SCRIPT, sqlite_url, quiet, failure],
            capture_output=True,
            text=True,
            check=False,
            timeout=_WAIT,
        )

    interrupted = run_script("ctrl-c")
    assert interrupted.stdout == "interrupted\n"
    # Without the CLI's handler, this is the traceback users saw after Ctrl-C.
    assert ("Traceback" in interrupted.stderr) is (quiet != "quiet"), interrupted.stderr
    failed = run_script("error")
    assert "a real cleanup failure" in failed.stderr  # other failures still reach stderr
