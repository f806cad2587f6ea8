"""Fuzzing where files enter: every importer and the tape reader, on both backends.

Each input, however broken (cut short, bytes flipped, invalid UTF-8, a NUL,
JSON or YAML nested thousands deep, lines duplicated or dropped), ends one of
two ways: imported, or refused with a :class:`CodetapeError` whose message is
one line. A refused file leaves the log exactly as it was (same head position
and hash), and the log still verifies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import FUZZ, deep, mutated, seed_files
from hypothesis import given
from hypothesis import strategies as st

from recorder.errors import CodetapeError
from recorder.ingest import import_file
from recorder.store.store import EventStore
from recorder.tape import iter_tape_rows, read_tape

SEEDS = seed_files()
FORMATS = sorted(SEEDS)


def _head(store: EventStore) -> tuple[int, str | None]:
    last = store.last_position()
    if not last:
        return 0, None
    return last, dict(store.iter_hashes(last))[last]


def _try_import(store: EventStore, path: Path, fmt: str) -> str:
    """Import ``path``; the outcome's name. Asserts the no-partial-write rule on refusal."""
    before = _head(store)
    try:
        result = import_file(store, path, fmt)
    except CodetapeError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert _head(store) == before, "a refused import changed the log"
        return "refused"
    assert store.last_position() == before[0] + result.events
    return "imported"


def test_every_seed_imports_as_is(store: EventStore, tmp_path: Path) -> None:
    # The fuzzing starts from valid files: were they refused, it would test nothing.
    for fmt, data in SEEDS.items():
        path = tmp_path / f"seed.{fmt}"
        path.write_bytes(data)
        assert _try_import(store, path, fmt) == "imported", fmt
    assert store.verify().ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_files_are_imported_or_refused_whole(
    store: EventStore, tmp_path: Path, fmt: str
) -> None:
    seen: dict[str, int] = {}
    counter = iter(range(1_000_000))

    @FUZZ
    @given(data=mutated(SEEDS[fmt]), as_auto=st.booleans())
    def run(data: bytes, as_auto: bool) -> None:
        path = tmp_path / f"case{next(counter)}.{fmt}"
        path.write_bytes(data)
        outcome = _try_import(store, path, "auto" if as_auto else fmt)
        seen[outcome] = seen.get(outcome, 0) + 1
        path.unlink()

    run()
    # Both ends were reached: the mutations neither always break nor never break the file.
    assert seen.get("refused", 0) > 0, seen
    report = store.verify()
    assert report.ok, report


ADVERSARIAL = {
    "deep JSON tape line": b'{"kind":"session_open","meta":' + deep(100_000) + b"}\n",
    "deep JSON object tape line": deep(100_000, b'{"a":', b"}") + b"\n",
    "deep test-proxy": b'{"Entries":[' + deep(100_000) + b"]}",
    "deep chunks line": b'{"type":"response.created","r":' + deep(100_000) + b"}\n",
    "deep chunks body": b'{"object":"response","x":' + deep(100_000) + b"}",
    "deep YAML": b"interactions:\n- " + deep(100_000) + b"\n",
    "YAML self-reference": b"interactions: &a [*a]\n",
    "YAML parsed_body self-reference": (
        b"interactions:\n- request: {method: POST, uri: 'https://x/v1/responses',"
        b" parsed_body: &b [*b]}\n  response: {status: {code: 200}, body: {string: ''}}\n"
    ),
    "not UTF-8": b"\xff\xfe\x00\x00garbage\n",
    "NUL bytes": b"\x00" * 4096,
    "only blank lines": b"\n\r\n\n",
    "BOM then a tape line": b"\xef\xbb\xbf" + SEEDS["tape"].split(b"\n", 1)[0] + b"\n",
    "tape cut inside a line": SEEDS["tape"][: len(SEEDS["tape"]) // 2],
    "5,000-digit number in a tape line": (
        b'{"kind":"session_open","tape":1,"session":"s","seq":' + b"1" * 5000 + b',"at_ns":1}\n'
    ),
    "5,000-digit number in a chunks line": b'{"type":"response.created","n":'
    + b"1" * 5000
    + b"}\n",
    "5,000-digit number in test-proxy": b'{"Entries":[' + b"1" * 5000 + b"]}",
    "5,000-digit number in a cassette": (
        b"interactions:\n- request: {method: POST, uri: 'https://x/v1/responses', parsed_body: "
        + b"1" * 5000
        + b"}\n  response: {status: {code: 200}, body: {string: ''}}\n"
    ),
    "one huge unterminated line": b'{"kind":"sse","text":"' + b"x" * (8 << 20),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_files_are_refused_with_one_line_and_nothing_written(
    store: EventStore, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "input"
    path.write_bytes(ADVERSARIAL[name])
    for fmt in ["auto", *FORMATS]:
        assert _try_import(store, path, fmt) == "refused", (name, fmt)
    assert store.last_position() == 0


def _read_both_ways(path: Path) -> int:
    events = read_tape(path)
    rows = sum(1 for _ in iter_tape_rows(path))
    return len(events) + rows


def test_the_tape_reader_reads_or_names_the_bad_line(tmp_path: Path) -> None:
    outcomes: dict[str, int] = {}

    @FUZZ
    @given(data=st.one_of(mutated(SEEDS["tape"]), st.binary(max_size=2000)))
    def run(data: bytes) -> None:
        path = tmp_path / "t.jsonl"
        path.write_bytes(data)
        try:
            _read_both_ways(path)
        except CodetapeError as exc:
            assert str(exc) and "\n" not in str(exc)
            assert str(path) in str(exc)  # the message names the file (and the line)
            outcomes["refused"] = outcomes.get("refused", 0) + 1
        else:
            outcomes["read"] = outcomes.get("read", 0) + 1

    run()
    assert outcomes.get("refused", 0) > 0, outcomes


@pytest.mark.parametrize(
    "name", ["deep JSON tape line", "5,000-digit number in a cassette", "not UTF-8"]
)
def test_the_cli_refuses_a_hostile_file_in_one_line_and_imports_the_next(
    db_url: str, tmp_path: Path, name: str
) -> None:
    from click.testing import CliRunner

    from recorder.cli import main
    from recorder.store import migrate

    migrate.upgrade(db_url)
    bad, good = tmp_path / "bad.txt", tmp_path / "good.jsonl"
    bad.write_bytes(ADVERSARIAL[name])
    good.write_bytes(SEEDS["tape"])
    result = CliRunner().invoke(main, ["import", str(bad), str(good), "--db", db_url])
    assert result.exit_code != 0  # one file failed
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if "bad.txt" in line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    with EventStore.open(db_url) as store:
        assert [s.name for s in store.sessions()] == ["vercel-ai/azure-text.1"]


def test_a_tape_that_grows_between_the_check_and_the_store_is_refused(
    store: EventStore, tmp_path: Path
) -> None:
    from recorder.redact import Redactor

    path = tmp_path / "shrinking.jsonl"
    path.write_bytes(SEEDS["tape"])

    class GrowAfterTheCheck(Redactor):
        """Sees each request once per pass; adds to the file as the second pass begins."""

        calls = 0

        def url_redacted(self, url: str) -> tuple[str, list[str], bool]:
            GrowAfterTheCheck.calls += 1
            if GrowAfterTheCheck.calls == 2:
                # Whole lines, so every line still parses: only the check can tell.
                with path.open("ab") as more:
                    more.write(SEEDS["tape"])
            return super().url_redacted(url)

    with pytest.raises(CodetapeError, match="changed while it was being imported"):
        import_file(store, path, "tape", GrowAfterTheCheck())
    assert GrowAfterTheCheck.calls >= 2
    assert store.last_position() == 0
