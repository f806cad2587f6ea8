"""``export -o``: atomic onto a new path or a regular file only; ``-o -`` is stdout; umask modes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from recorder.cli import main
from recorder.events import Event, EventKind
from recorder.tape import write_tape

ROOT = Path(__file__).resolve().parents[1]
TAPE = ROOT / "fixtures/realdata/pydantic-ai/test_openai_responses_model_http_error.jsonl"
NAME = "pydantic-ai/test_openai_responses_model_http_error"


def lean(tape: Path) -> bytes:
    """The fixture (format 1) as export writes it today (format 2)."""
    import io

    from recorder.tape import read_tape, write_tape_to

    out = io.StringIO()
    write_tape_to(read_tape(tape), out)
    return out.getvalue().encode()


LEAN = lean(TAPE)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def db(migrated_db_url: str) -> str:
    assert run("import", str(TAPE), "--db", migrated_db_url).exit_code == 0
    return migrated_db_url


def one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: ")
    return line


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_directory_is_refused(db: str, tmp_path: Path) -> None:
    directory = tmp_path / "out"
    directory.mkdir()
    line = one_error_line(run("export", NAME, "-o", str(directory), "--db", db))
    assert line == (
        f"Error: cannot write a tape to {directory}: it is a directory; give a new file name "
        "or an existing regular file"
    )
    assert list(directory.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_device_is_never_replaced(db: str, tmp_path: Path) -> None:
    # As root, a rename over a device succeeds and turns it into a regular file:
    # so the device is a private copy of /dev/full (1, 7), never the real one,
    # which a broken writer would replace for everyone on the machine.
    if os.geteuid() == 0:
        device = tmp_path / "full"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    else:
        device = Path("/dev/full")  # not replaceable without root
    line = one_error_line(run("export", NAME, "-o", str(device), "--db", db))
    assert "it is a character device" in line
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_fifo_is_refused_without_blocking(db: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    line = one_error_line(run("export", NAME, "-o", str(fifo), "--db", db))
    assert "it is a named pipe (FIFO)" in line
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_dash_writes_to_stdout(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("export", NAME, "--no-hashes", "-o", "-", "--db", db)
    assert result.exit_code == 0, result.output
    assert result.stdout.encode() == LEAN
    assert result.stderr == "wrote 6 events to standard output\n"
    assert not (tmp_path / "-").exists()


def test_dash_with_an_unknown_session_prints_nothing(db: str) -> None:
    result = run("export", NAME, "nope", "-o", "-", "--db", db)
    one_error_line(result)
    assert result.stdout == ""


def test_dash_and_json_both_want_stdout(db: str) -> None:
    result = run("export", NAME, "-o", "-", "--json", "--db", db)
    assert result.exit_code == 2
    assert "both write to standard output" in json.loads(result.stderr)["error"]


def test_a_full_stdout_is_one_line(db: str, tmp_path: Path) -> None:
    codetape = Path(sys.executable).parent / "codetape"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [codetape, "export", NAME, "-o", "-", "--db", db],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == "Error: cannot write to standard output: No space left on device\n"


def test_new_files_get_the_umask_mode(db: str, tmp_path: Path, umask: None) -> None:
    out = tmp_path / "new.jsonl"
    assert run("export", NAME, "--no-hashes", "-o", str(out), "--db", db).exit_code == 0
    assert mode(out) == 0o640  # 0666 & ~027; mkstemp would have made it 0600
    assert out.read_bytes() == LEAN


def test_a_replaced_file_keeps_its_mode(db: str, tmp_path: Path, umask: None) -> None:
    out = tmp_path / "shared.jsonl"
    out.write_text("old\n")
    out.chmod(0o664)
    assert run("export", NAME, "--no-hashes", "-o", str(out), "--db", db).exit_code == 0
    assert mode(out) == 0o664
    assert out.read_bytes() == LEAN


def test_a_symlink_replaces_its_target(db: str, tmp_path: Path) -> None:
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert run("export", NAME, "--no-hashes", "-o", str(link), "--db", db).exit_code == 0
    assert link.is_symlink()
    assert target.read_bytes() == LEAN


def test_export_json(db: str, tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    result = run("export", NAME, "-o", str(out), "--db", db, "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["path"] == str(out) and report["events"] == 6
    assert len(report["sessions"]) == 1


def test_the_writer_itself_uses_the_umask(tmp_path: Path, umask: None) -> None:
    # Every tape writer (export, the pytest plugin's record modes) goes through it.
    out = tmp_path / "t.jsonl"
    write_tape([Event("s", EventKind.SESSION_OPEN, 0, recorded_at_ns=1)], out)
    assert mode(out) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]


def test_dash_carries_hashes_like_a_file_and_refuses_a_checkpoint(db: str, tmp_path: Path) -> None:
    out = tmp_path / "with-hashes.jsonl"
    assert run("export", NAME, "-o", str(out), "--db", db).exit_code == 0
    streamed = run("export", NAME, "-o", "-", "--db", db)
    assert streamed.stdout.encode() == out.read_bytes()
    assert '"position":1' in streamed.stdout
    note = tmp_path / "checkpoint.txt"
    note.write_text("unused\n")
    refused = run("export", NAME, "-o", "-", "--checkpoint", str(note), "--db", db)
    assert refused.exit_code == 2
    assert "--checkpoint writes to a file" in refused.stderr
    assert refused.stdout == ""
