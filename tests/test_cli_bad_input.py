"""User mistakes the CLI must answer with one ``Error:`` line, never a traceback.

Exit status 2 for a bad option value or options that do not go together
(found before any work), 1 for the rest: times outside what the log stores,
fee files that are not text, output paths that name a directory or lie under
a file, URLs that do not parse, a disk that fills up while a file or a new
database is written, and tape integers too large for the store.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_errors import one_error_line
from click.testing import CliRunner, Result

import recorder.atomic
from recorder.cli import main
from recorder.store import migrate
from recorder.times import BadTime, parse_instant

ROOT = Path(__file__).resolve().parents[1]
TAPE = (
    ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
SESSION = "aa499c03696a5928967ba8c82108a414"
RANGE = "give one from 1677-09-22 to 2262-04-11"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error(result: Result, code: int, *fragments: str) -> str:
    """The one stderr line of a command that failed with ``code``, checked for ``fragments``."""
    assert result.exit_code == code, result.output
    return one_error_line(result, *fragments)


@pytest.fixture
def db(sqlite_url: str) -> str:
    migrate.upgrade(sqlite_url)
    assert run("import", str(TAPE), "--db", sqlite_url).exit_code == 0
    return sqlite_url


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("")
    return path


# -- times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("cost", "--since", "0001-01-01"),
        ("cost", "--until", "3000-01-01"),
        ("cost", "--since", "9999-12-31"),
        ("cost", "--since", "1677-09-21"),
        ("cost", "--until", "2262-04-12"),
        ("cost", "--since", "0001-01-01T00:00+05:00"),
        ("containers", "--at", "9999-12-31"),
        ("archive", "--before", "0001-01-01", "-o", "never"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_a_time_the_log_cannot_hold_is_a_usage_mistake(
    db: str, args: tuple[str, ...], as_json: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*args, "--db", db, *(["--json"] if as_json else []))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    message = json.loads(result.stderr)["error"] if as_json else result.stderr
    assert f"Invalid value for '{args[1]}': {args[2]!r} is outside the times" in message
    assert RANGE in message
    assert not (tmp_path / "never").exists()


def test_the_first_and_last_days_the_log_holds_are_accepted(db: str) -> None:
    result = run("cost", "--since", "1677-09-22", "--until", "2262-04-11", "--db", db, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"]["exchanges"] > 0
    assert run("containers", "--at", "2262-04-11", "--db", db, "--json").exit_code == 0


def test_parse_instant_is_exact_and_bounded() -> None:
    assert parse_instant("1970-01-01") == 0
    assert parse_instant("1969-12-31T23:59:59.5") == -500_000_000  # no float rounding
    assert parse_instant("2026-03-31T14:05+02:00") == 1_774_958_700_000_000_000
    assert parse_instant("1677-09-22") < 0 < parse_instant("2262-04-11") < 2**63
    for text in ("1677-09-21", "2262-04-12", "9999-12-31T23:59-05:00", "0001-01-01"):
        with pytest.raises(BadTime, match=RANGE):
            parse_instant(text)


# -- usage mistakes: exit 2 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("cost", "--since", "garbage"), "Invalid value for '--since': 'garbage' is not a time"),
        (("containers", "--at", "soon"), "Invalid value for '--at': 'soon' is not a time"),
        (("serve", "tape.jsonl", "--speed", "0"), "'--speed': must be a positive number, got 0.0"),
        (("serve", "tape.jsonl", "--speed", "nan"), "'--speed': must be a positive number"),
        (("containers", "--advise", "--by", "foo"), "cannot group the advice by 'foo'"),
        (("checkpoint", "--key", "k", "--every-seconds", "1"), "need --dir"),
        (("checkpoint", "--key", "k", "-o", "x", "--dir", "y"), "not both"),
        (("db", "partitions", "--rows", "99999999999999999999"), "--rows and --ahead are too"),
        (("db", "partitions", "--rows", str(2**62), "--ahead", "2"), "would pass the highest"),
    ],
)
def test_bad_option_values_are_usage_mistakes(
    sqlite_url: str, args: tuple[str, ...], fragment: str
) -> None:
    migrate.upgrade(sqlite_url)
    line = one_error(run(*args, "--db", sqlite_url), 2, fragment)
    assert line.endswith("--help`)")  # the usage-mistake form: it points at the help


def test_the_archive_directory_is_checked_alike_everywhere(sqlite_url: str, a_file: Path) -> None:
    migrate.upgrade(sqlite_url)
    for command in (("projections", "rebuild"), ("verify",)):
        one_error(
            run(*command, "--archive", "/nonexistent", "--db", sqlite_url),
            2,
            "Invalid value for '--archive': Directory '/nonexistent' does not exist.",
        )
        one_error(run(*command, "--archive", str(a_file), "--db", sqlite_url), 2, "is a file")


# -- files read -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("cost",), ("containers", "--advise")])
def test_a_fee_file_that_is_not_text_is_named(
    db: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    garbage = tmp_path / "g.bin"
    garbage.write_bytes(bytes(range(128, 256)) * 40)
    one_error(
        run(*command, "--fees", str(garbage), "--db", db),
        1,
        f"fee table {garbage} is not UTF-8 text",
    )


# -- files written ----------------------------------------------------------------------------


def _output_commands(tmp_path: Path) -> list[tuple[str, ...]]:
    key = tmp_path / "signing"
    assert run("keygen", "-o", str(key)).exit_code == 0
    return [
        ("export", SESSION, "-o"),
        ("checkpoint", "--key", str(key), "-o"),
        ("report", SESSION, "--no-verify", "-o"),
        ("keygen", "-o"),
    ]


@pytest.mark.parametrize("index", range(4))
def test_an_output_path_naming_a_directory_is_refused_before_work(
    db: str, tmp_path: Path, index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    command = _output_commands(tmp_path)[index]
    before = sorted(tmp_path.iterdir())
    for value in (f"{tmp_path}/newd/", "newd/", ".", "/", ".."):
        one_error(
            run("--db", db, *command, value),
            2,
            f"Invalid value for '-o' / '--output': {value!r} names a directory, not a file",
        )
    one_error(run("--db", db, *command, ""), 2, "'-o' / '--output': is empty: give a file name")
    assert sorted(tmp_path.iterdir()) == before  # no file named newd, nothing else


@pytest.mark.parametrize("index", range(4))
def test_an_output_path_under_a_file_is_refused(
    db: str, tmp_path: Path, a_file: Path, index: int
) -> None:
    command = _output_commands(tmp_path)[index]
    one_error(
        run("--db", db, *command, str(a_file / "out")),
        2,
        f"cannot write {a_file / 'out'}: {a_file} is not a directory",
    )


def test_the_demo_checks_its_report_path_before_recording(tmp_path: Path, a_file: Path) -> None:
    database = tmp_path / "demo.db"
    one_error(
        run("demo", "--report", str(a_file / "r.html"), "--db", f"sqlite:///{database}"),
        2,
        f"Invalid value for '--report': cannot write {a_file / 'r.html'}: {a_file} is not a "
        "directory",
    )
    assert not database.exists()  # nothing was recorded


def test_checkpoint_dir_that_is_a_file_is_named(tmp_path: Path, a_file: Path) -> None:
    one_error(
        run("checkpoint", "--key", "k", "--dir", str(a_file)),
        2,
        f"Directory '{a_file}' is a file",
    )


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every atomic write's temporary file writes to /dev/full (ENOSPC), as on a full disk."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    real = recorder.atomic._temp_beside

    def beside(*args: object, **kwargs: object) -> tuple[int, Path]:
        fd, path = real(*args, **kwargs)  # type: ignore[arg-type]
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, path

    monkeypatch.setattr(recorder.atomic, "_temp_beside", beside)
    yield


def test_a_full_disk_is_one_error_and_the_old_file_stays(
    db: str, tmp_path: Path, full_disk: None
) -> None:
    key = tmp_path / "signing"
    assert run("keygen", "-o", str(key)).exit_code == 0
    for command, target in (
        (("checkpoint", "--key", str(key), "-o"), tmp_path / "head.checkpoint"),
        (("export", SESSION, "-o"), tmp_path / "tape.jsonl"),
        (("export", SESSION, "-o"), tmp_path / "tape.jsonl.zst"),
        (("report", SESSION, "--no-verify", "-o"), tmp_path / "report.html"),
    ):
        target.write_text("old\n")
        one_error(
            run(*command, str(target), "--db", db),
            1,
            f"cannot write {target}: No space left on device",
        )
        assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == []


def _small_files() -> None:
    # Runs in the child: a write past 8 KiB fails (EFBIG) instead of killing it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def test_a_failed_db_upgrade_leaves_no_empty_database_behind(tmp_path: Path) -> None:
    codetape = str(Path(sys.executable).parent / "codetape")
    target = tmp_path / "new" / "deeper" / "x.db"
    done = subprocess.run(
        [codetape, "db", "upgrade", "--db", f"sqlite:///{target}"],
        capture_output=True,
        text=True,
        preexec_fn=_small_files,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor the directories made for it
    # An existing database is never removed, even when the upgrade fails.
    existing = tmp_path / "kept.db"
    existing.write_bytes(b"")
    again = subprocess.run(
        [codetape, "db", "upgrade", "--db", f"sqlite:///{existing}"],
        capture_output=True,
        text=True,
        preexec_fn=_small_files,
        check=False,
    )
    assert again.returncode == 1
    assert existing.exists()


# -- database URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@127.0.0.1:notaport/db", "postgresql://u:s3cret@[::1:5432/x"],
)
def test_a_url_that_does_not_parse_is_named(url: str) -> None:
    line = one_error(run("sessions", "--db", url), 1, "not a database URL", "port is a number")
    assert "s3cret" not in line


def test_urls_are_echoed_as_typed() -> None:
    one_error(run("sessions", "--db", "sqlite:///:memory:"), 1, "sqlite:///:memory: starts")
    one_error(
        run("sessions", "--db", "postgresql://%zz:pw%40x@127.0.0.1:1/x"),
        1,
        "(postgresql://%zz:***@127.0.0.1:1/x)",
    )


def test_a_database_path_under_a_file_says_so(a_file: Path) -> None:
    for command in (("sessions",), ("db", "upgrade")):
        line = one_error(
            run(*command, "--db", f"sqlite:///{a_file / 'x.db'}"),
            1,
            f"{a_file} is a file, not a directory",
        )
        assert "nor its directory" not in line
    assert a_file.read_text() == ""


# -- tapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("at_ns", 10**20), ("seq", 2**63)])
def test_a_tape_integer_the_store_cannot_hold_refuses_the_file(
    sqlite_url: str, tmp_path: Path, field: str, value: int
) -> None:
    migrate.upgrade(sqlite_url)
    lines = TAPE.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[3])
    record[field] = value
    lines[3] = json.dumps(record)
    tape = tmp_path / "big.jsonl"
    tape.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("import", str(tape), "--db", sqlite_url)
    one_error(result, 1, f"{tape}:4: field {field!r}", "less than or equal to 9223372036854775807")
    assert json.loads(run("sessions", "--db", sqlite_url, "--json").output) == []


def test_a_lean_tape_time_that_adds_up_past_int64_refuses_the_file(db: str, tmp_path: Path) -> None:
    lean = tmp_path / "lean.jsonl"
    assert run("export", SESSION, "--no-hashes", "-o", str(lean), "--db", db).exit_code == 0
    lines = lean.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["tape"] == 2  # a lean tape: times after the first are dt_ns
    first = json.loads(lines[0])
    first["session"] = "d" * 32  # another session, so it is not skipped as imported already
    first["meta"].pop("source", None)
    third = json.loads(lines[2])
    third["dt_ns"] = 2**63 - 1  # fits alone; added to the first line's at_ns it does not
    lines[0], lines[2] = json.dumps(first), json.dumps(third)
    lean.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_error(run("import", str(lean), "--db", db), 1, f"{lean}:3: the at_ns this line adds up to")
    assert len(json.loads(run("sessions", "--db", db, "--json").output)) == 1
