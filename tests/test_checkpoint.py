"""Signed checkpoints catch what plain `verify` cannot: a log rewritten with recomputed hashes.

Each attack below is made the way someone with write access to the database
would (triggers off, raw SQL, every hash recomputed: see tests/tampering.py).
Plain `verify` passes each one, as the README says; `verify --checkpoint`
fails each one at the first position it can no longer vouch for.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from tampering import rewrite, rows, tamper

from recorder.cli import main
from recorder.errors import TapeError
from recorder.events import Event, EventKind, new_id
from recorder.export import export_sessions
from recorder.ingest import import_file
from recorder.integrity import (
    Checkpoint,
    Checkpointer,
    CheckpointError,
    KeyFileError,
    create_checkpoint,
    load_private_key,
    load_public_key,
    open_note,
    parse_note,
    verifier_key,
    verify_log,
    verify_tape,
    write_key_pair,
)
from recorder.integrity.keys import key_id
from recorder.store import EventStore
from recorder.store.hashing import event_hash
from recorder.tape import read_tape

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"


@dataclass
class Keys:
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    private_path: Path
    public_path: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    private_path, public_path = write_key_pair(tmp_path / "log-key")
    return Keys(
        load_private_key(private_path), load_public_key(public_path), private_path, public_path
    )


def session(name: str, frames: int = 7) -> list[Event]:
    """A closed session of ``frames + 5`` events: open, request, head, frames, end, close."""
    sid, xid = new_id(), new_id()
    batch = [
        Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": name}),
        Event(sid, EventKind.REQUEST, 0, xid, payload=b'{"model":"m"}', meta={"method": "POST"}),
        Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}),
    ]
    batch += [
        Event(sid, EventKind.SSE, 2 + i, xid, payload=f"data: {name} {i}\n\n".encode())
        for i in range(frames)
    ]
    batch.append(Event(sid, EventKind.EXCHANGE_END, 2 + frames, xid, meta={"outcome": "completed"}))
    batch.append(Event(sid, EventKind.SESSION_CLOSE, 1))
    return batch


def signed_log(store: EventStore, keys: Keys, names: str = "ABC") -> list[tuple[str, Checkpoint]]:
    """Sessions of 11 events each, with a checkpoint signed after each: at 11, 22, 33."""
    signed = []
    for name in names:
        store.append(session(name, frames=6))
        cp, note = create_checkpoint(store, keys.private)
        signed.append((f"cp{cp.size}", open_note(note, keys.public)))
    return signed


def problems(store: EventStore, signed: list[tuple[str, Checkpoint]]) -> list[tuple[int, str]]:
    report = verify_log(store, signed).report
    return [(p.position, p.message) for p in report.problems]


# -- the log --------------------------------------------------------------------


def test_an_untouched_log_extends_all_its_checkpoints(store: EventStore, keys: Keys) -> None:
    signed = signed_log(store, keys)
    result = verify_log(store, signed)
    assert result.ok
    assert [c.ok for c in result.checkpoints] == [True, True, True]
    assert [c.checkpoint.size for c in result.checkpoints] == [11, 22, 33]


def test_a_forged_tail_with_recomputed_hashes(store: EventStore, keys: Keys) -> None:
    signed = signed_log(store, keys)
    original = rows(store)
    # The last two rows of session C (its exchange_end and session_close) swapped for
    # forged ones: the exchange now "failed", and everything is re-chained.
    forged_end = replace(original[-2], meta_json='{"outcome":"failed"}')
    rewrite(store, [(ev.position, ev) for ev in [*original[:-2], forged_end, original[-1]]])
    assert store.verify().ok  # plain verify cannot see it
    found = problems(store, signed)
    assert found == [
        (
            23,
            "rows 23-33 no longer hash to the head signed in checkpoint cp33 (position 33, "
            f"signed {signed[2][1].signed_at:%Y-%m-%d %H:%M:%S} UTC): a row among them was "
            "altered, removed or inserted and the chain recomputed (rows up to 22 still match "
            "an earlier checkpoint)",
        )
    ]


def test_a_payload_altered_and_rehashed(store: EventStore, keys: Keys) -> None:
    signed = signed_log(store, keys)
    original = rows(store)
    altered = [
        (ev.position, replace(ev, payload=b"data: altered\n\n") if ev.position == 5 else ev)
        for ev in original
    ]
    rewrite(store, altered)
    assert store.verify().ok
    found = problems(store, signed)
    # Every checkpoint fails (the change is before all of them); the first names row 1..11.
    assert [p for p, _ in found] == [1, 1, 1]
    assert found[0][1].startswith("rows 1-11 no longer hash to the head signed in checkpoint cp11")


def test_a_session_deleted_and_the_rest_renumbered_and_rehashed(
    store: EventStore, keys: Keys
) -> None:
    signed = signed_log(store, keys)
    original = rows(store)
    kept = [ev for ev in original if not 12 <= ev.position <= 22]  # session B
    rewrite(store, [(n, ev) for n, ev in enumerate(kept, start=1)])
    assert store.verify().ok
    found = problems(store, signed)
    assert [p for p, _ in found] == [12, 23]
    assert found[0][1].startswith("rows 12-22 no longer hash to the head signed in checkpoint cp22")
    assert found[1][1].startswith("the log ends at position 22, but checkpoint cp33")
    assert found[1][1].endswith("covers 33: rows 23-33 were removed")


def test_a_session_deleted_and_the_rest_rehashed_in_place(store: EventStore, keys: Keys) -> None:
    signed = signed_log(store, keys)
    kept = [(ev.position, ev) for ev in rows(store) if not 12 <= ev.position <= 22]
    rewrite(store, kept)
    # The hole alone gives it away, even without a checkpoint.
    assert store.verify().first_bad_position == 12
    assert problems(store, signed)[0] == (12, "positions 12-22 are missing: rows were removed")


def test_newest_rows_cut_off(store: EventStore, keys: Keys) -> None:
    signed = signed_log(store, keys)
    tamper(store, "DELETE FROM events WHERE position > 30")
    assert store.verify().ok
    assert problems(store, signed) == [
        (
            31,
            f"the log ends at position 30, but checkpoint cp33 (position 33, signed "
            f"{signed[2][1].signed_at:%Y-%m-%d %H:%M:%S} UTC) covers 33: rows 31-33 were removed",
        )
    ]


def test_rows_appended_after_the_newest_checkpoint_are_not_its_business(
    store: EventStore, keys: Keys
) -> None:
    """What a checkpoint cannot do (the README says so): vouch for rows after it."""
    signed = signed_log(store, keys)
    forged = [replace(ev, meta={"name": "forged"}) if ev.seq == 0 else ev for ev in session("D")]
    store.append(forged)
    assert verify_log(store, signed).ok


def test_a_row_altered_without_rehashing_is_named_exactly(store: EventStore, keys: Keys) -> None:
    signed = signed_log(store, keys)
    blob = "'\\x41'::bytea" if store.backend == "postgresql" else "X'41'"
    tamper(store, f"UPDATE events SET payload = {blob}, codec = NULL WHERE position = 16")
    result = verify_log(store, signed)
    # The stored hashes are still the signed ones; the row no longer fits its own.
    assert [(p.position, p.message) for p in result.report.problems] == [
        (16, "hash mismatch: the row was altered")
    ]
    assert [c.ok for c in result.checkpoints] == [True, False, False]
    assert "position 16 fails its own check" in result.checkpoints[1].message


def test_nothing_is_signed_over_a_log_that_does_not_verify(store: EventStore, keys: Keys) -> None:
    store.append(session("A"))
    tamper(store, "DELETE FROM events WHERE position = 3")
    with pytest.raises(
        CheckpointError, match=r"position 3 is missing: a row was removed.*not sign"
    ):
        create_checkpoint(store, keys.private)


def test_an_empty_log_has_nothing_to_sign(store: EventStore, keys: Keys) -> None:
    with pytest.raises(CheckpointError, match="empty"):
        create_checkpoint(store, keys.private)


def test_the_cli_round_trip(store: EventStore, keys: Keys, tmp_path: Path) -> None:
    runner = CliRunner()
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    db = ["--db", store.url]
    sign = ["checkpoint", "--key", str(keys.private_path), "--dir", str(directory), *db]
    for name in "ABC":
        store.append(session(name, frames=6))
        made = runner.invoke(main, sign)
        assert made.exit_code == 0, made.output
    assert sorted(p.name for p in directory.iterdir()) == [
        "000000000011.checkpoint",
        "000000000022.checkpoint",
        "000000000033.checkpoint",
    ]
    again = runner.invoke(main, sign)
    assert again.exit_code == 0 and "has not grown" in again.output
    stdout = runner.invoke(main, ["checkpoint", "--key", str(keys.private_path), *db])
    assert stdout.exit_code == 0
    assert parse_note(stdout.stdout).size == 33
    to_file = tmp_path / "head.checkpoint"
    written = runner.invoke(
        main, ["checkpoint", "--key", str(keys.private_path), "-o", str(to_file), *db]
    )
    assert written.exit_code == 0
    assert open_note(to_file.read_text(), keys.public).size == 33
    umask = os.umask(0o22)
    os.umask(umask)
    assert to_file.stat().st_mode & 0o777 == 0o666 & ~umask  # public, unlike the key
    for mistake, code, message in (
        # Options that do not go together are usage mistakes (2); a wrong key is not.
        (["-o", str(to_file), "--dir", str(directory)], 2, "give -o FILE or --dir DIR, not both"),
        (["--every-seconds", "5"], 2, "--every-seconds and --every-events need --dir"),
        (["--key", str(keys.public_path)], 1, "is not a PEM private key (it is a public key)"),
    ):
        out = runner.invoke(main, ["checkpoint", "--key", str(keys.private_path), *mistake, *db])
        assert out.exit_code == code and message in out.output and out.output.count("\n") == 1

    check = ["verify", "--checkpoint", str(directory), "--key", str(keys.public_path), *db]
    ok = runner.invoke(main, check)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.count(": extended") == 3

    original = rows(store)
    rewrite(store, [(ev.position, ev) for ev in original if ev.position != 30][:-3])
    assert runner.invoke(main, ["verify", *db]).exit_code == 0
    bad = runner.invoke(main, [*check, "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert report["first_bad_position"] == 30
    assert [c["ok"] for c in report["checkpoints"]] == [True, True, False]

    no_key = runner.invoke(main, ["verify", "--checkpoint", str(directory), *db])
    assert no_key.exit_code == 1
    assert no_key.output == "Error: --checkpoint needs --key PUBLIC_KEY (the key that signed it)\n"
    refused = runner.invoke(main, sign)
    assert refused.exit_code == 1
    assert refused.output.startswith("Error: the log ends at position 29, before checkpoint ")
    assert refused.output.endswith("(position 33): rows were removed; not signing it\n")
    assert len(list(directory.iterdir())) == 3


# -- the checkpointer -----------------------------------------------------------


def test_checkpointer_signs_each_growth_once(store: EventStore, keys: Keys, tmp_path: Path) -> None:
    checkpointer = Checkpointer(store, keys.private, tmp_path)
    assert checkpointer.advance() is None  # empty log
    store.append(session("A"))
    first = checkpointer.advance()
    assert first is not None and first.size == 12
    assert checkpointer.advance() is None
    store.append(session("B"))
    second = checkpointer.advance()
    assert second is not None and second.size == 24 and second.origin == first.origin
    assert verify_log(store, [("a", first), ("b", second)]).ok
    # A new checkpointer over the same directory checks the log against the newest file first.
    original = rows(store)
    rewrite(store, [(ev.position, replace(ev, recorded_at_ns=1)) for ev in original])
    with pytest.raises(CheckpointError, match=r"no longer extends checkpoint .*000000000024"):
        Checkpointer(store, keys.private, tmp_path).advance()


def test_checkpointer_watch_signs_every_n_events(
    store: EventStore, keys: Keys, tmp_path: Path
) -> None:
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    checkpointer = Checkpointer(store, keys.private, directory)
    stop = threading.Event()
    made: list[int] = []
    seen = threading.Condition()

    def note(cp: Checkpoint) -> None:
        with seen:
            made.append(cp.size)
            seen.notify_all()

    watcher = threading.Thread(
        target=checkpointer.watch,
        args=(stop,),
        kwargs={"every_events": 20, "on_checkpoint": note, "poll_seconds": 0.01},
    )
    watcher.start()
    try:
        for name in "ABCDE":  # 12 events each
            store.append(session(name))
            with seen:
                # Only a guard against hanging: the watcher polls every 10 ms.
                assert seen.wait_for(lambda: made and made[-1] >= store.last_position() - 19, 30)
    finally:
        stop.set()
        watcher.join(30)
    assert made == [12, 36, 60]
    assert sorted(p.name for p in directory.iterdir()) == [
        f"{n:012d}.checkpoint" for n in (12, 36, 60)
    ]


# -- the note -------------------------------------------------------------------


def test_the_note_is_a_signed_tlog_checkpoint(store: EventStore, keys: Keys) -> None:
    store.append(session("A"))
    cp, note = create_checkpoint(store, keys.private, origin="audit.example/codetape")
    text, _, signature_line = note.partition("\n\n")
    lines = text.split("\n")
    assert lines[:3] == ["audit.example/codetape", "12", base64.b64encode(cp.root).decode()]
    assert lines[3] == f"chain-head sha256-v1 {store.verify().head_hash}"
    assert lines[4].startswith("signed-at ")
    dash, name, blob = signature_line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", "audit.example/codetape")
    raw = base64.b64decode(blob)
    assert raw[:4] == key_id("audit.example/codetape", keys.public)
    keys.public.verify(raw[4:], (text + "\n").encode())  # Ed25519 over the note text
    vkey = verifier_key("audit.example/codetape", keys.public)
    assert vkey.startswith(f"audit.example/codetape+{raw[:4].hex()}+")


def test_a_note_is_accepted_only_as_signed(store: EventStore, keys: Keys) -> None:
    store.append(session("A"))
    cp, note = create_checkpoint(store, keys.private)
    assert open_note(note, keys.public) == cp
    other = Ed25519PrivateKey.generate()
    with pytest.raises(CheckpointError, match="not signed by this key"):
        open_note(note, other.public_key())
    bumped = note.replace("\n12\n", "\n13\n", 1)
    assert bumped != note
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(bumped, keys.public)
    # A witness's cosignature beside the log's is ignored, as signed-note requires.
    witness = "\u2014 witness.example " + base64.b64encode(b"\0" * 68).decode() + "\n"
    assert open_note(note + witness, keys.public) == cp
    for broken in ("", "hello\n", note.replace("\u2014", "-"), note.replace("\n\n", "\n")):
        with pytest.raises(CheckpointError):
            open_note(broken, keys.public)


def test_key_files(keys: Keys, tmp_path: Path) -> None:
    assert keys.private_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_pair(keys.private_path)
    with pytest.raises(KeyFileError, match="is a private key"):
        load_public_key(keys.private_path)
    with pytest.raises(KeyFileError, match=r"not a PEM private key \(it is a public key\)"):
        load_private_key(keys.public_path)
    garbage = tmp_path / "garbage"
    garbage.write_text("nope")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(garbage)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "missing")
    runner = CliRunner()
    made = runner.invoke(main, ["keygen", "-o", str(tmp_path / "k2")])
    assert made.exit_code == 0
    assert (tmp_path / "k2.pub").is_file()
    again = runner.invoke(main, ["keygen", "-o", str(tmp_path / "k2")])
    assert again.exit_code == 1 and again.output.startswith("Error: ")


# -- tapes ----------------------------------------------------------------------


def tape_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, lines: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))


@pytest.fixture
def signed_store(store: EventStore, keys: Keys) -> Iterator[tuple[EventStore, str]]:
    """Sessions A, B, C (positions 1-33) and the signed note of their head."""
    for name in "ABC":
        store.append(session(name, frames=6))
    _, note = create_checkpoint(store, keys.private)
    yield store, note


def test_a_tape_checks_alone_and_against_a_checkpoint(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, note = signed_store
    cp = open_note(note, keys.public)
    plain, proven = tmp_path / "b.jsonl", tmp_path / "b-proven.jsonl"
    export_sessions(store, ["B"], plain)
    export_sessions(store, ["B"], proven, checkpoint=note)

    alone = verify_tape(plain)
    assert alone.ok and alone.rows == 11 and alone.checks == []
    unproven = verify_tape(plain, checkpoints=[("cp", cp)])
    assert not unproven.ok
    assert "holds 11 of its 33 rows and no proof" in unproven.checks[0].message

    checked = verify_tape(proven, key=keys.public)  # the checkpoint it carries
    assert checked.ok
    assert (checked.checks[0].covered, checked.checks[0].not_covered) == (11, 0)
    assert verify_tape(proven, checkpoints=[("cp", cp)]).ok
    proof = tape_lines(proven)[-1]["proof"]
    assert isinstance(proof, dict) and 0 < len(proof["nodes"]) <= 2 * (33).bit_length()

    # Readers of events do not see the chain fields or the proof line.
    assert read_tape(proven) == read_tape(plain)
    assert [e.payload for e in read_tape(proven)] == [e.payload for e in session_rows(store, "B")]


def session_rows(store: EventStore, name: str) -> list[Event]:
    return [ev.to_event() for ev in store.session_events(store.find_session(name).id)]


def test_a_whole_log_tape_needs_no_proof(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, note = signed_store
    everything = tmp_path / "all.jsonl"
    export_sessions(store, ["C", "A", "B"], everything)  # any order of sessions
    result = verify_tape(everything, checkpoints=[("cp", open_note(note, keys.public))])
    assert result.ok and result.checks[0].covered == 33


def test_an_edited_tape_fails_alone(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, _ = signed_store
    tape = tmp_path / "b.jsonl"
    export_sessions(store, ["B"], tape)
    lines = tape_lines(tape)
    lines[5]["text"] = "data: edited\n\n"
    write_lines(tape, lines)
    result = verify_tape(tape)
    assert not result.ok
    assert [(p.position, p.message) for p in result.problems] == [
        (17, "hash mismatch: the row was altered")
    ]
    runner = CliRunner()
    out = runner.invoke(main, ["verify", str(tape)])
    assert out.exit_code == 1
    assert f"{tape}:6 (position 17): hash mismatch: the row was altered" in out.output


def test_a_tape_with_a_line_removed_fails_alone(
    signed_store: tuple[EventStore, str], tmp_path: Path
) -> None:
    store, _ = signed_store
    tape = tmp_path / "b.jsonl"
    export_sessions(store, ["B"], tape)
    lines = tape_lines(tape)
    del lines[4]
    write_lines(tape, lines)
    messages = [p.message for p in verify_tape(tape).problems]
    assert "no prev_hash, and the line before is not the row before it" in messages


def test_a_rehashed_forged_tape_passes_alone_but_not_the_checkpoint(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, note = signed_store
    tape = tmp_path / "b.jsonl"
    # Format 1 lines stand alone, so a forger can edit and rehash them one by one.
    export_sessions(store, ["B"], tape, checkpoint=note, version=1)
    lines = tape_lines(tape)
    lines[5]["text"] = "data: forged\n\n"
    # Recompute every hash from the forged row on, as a forger would.
    prev = str(lines[4]["hash"])
    for record in lines[5:-1]:
        ev = read_one(record)
        record["hash"] = prev = event_hash(
            prev, int(str(record["position"])), ev.session_id, ev.exchange_id, ev.seq or 0,
            ev.kind.value, ev.recorded_at_ns, ev.offset_ns, ev.sse_event, ev.sse_type,
            ev.sequence_number, ev.response_id, json.dumps(ev.meta, sort_keys=True,
            separators=(",", ":"), ensure_ascii=False), ev.payload,
        )  # fmt: skip
    write_lines(tape, lines)
    assert verify_tape(tape).ok  # internally consistent
    result = verify_tape(tape, key=keys.public)
    assert not result.ok
    assert "the tape's rows are not the rows it signed" in result.checks[0].message
    out = CliRunner().invoke(main, ["verify", str(tape), "--key", str(keys.public_path)])
    assert out.exit_code == 1


def read_one(record: dict[str, object]) -> Event:
    from recorder.tape import line_to_event

    return line_to_event(json.dumps(record))


def test_rows_after_the_checkpoint_are_counted_as_not_covered(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, note = signed_store
    store.append(session("D"))
    tape = tmp_path / "cd.jsonl"
    export_sessions(store, ["C", "D"], tape, checkpoint=note)
    result = verify_tape(tape, key=keys.public)
    assert result.ok
    assert (result.checks[0].covered, result.checks[0].not_covered) == (11, 12)
    out = CliRunner().invoke(main, ["verify", str(tape), "--key", str(keys.public_path)])
    assert out.exit_code == 0
    assert "12 row(s) after its position are not covered" in out.output


def test_no_proof_is_made_for_a_log_that_no_longer_matches(
    signed_store: tuple[EventStore, str], tmp_path: Path
) -> None:
    store, note = signed_store
    rewrite(store, [(ev.position, replace(ev, recorded_at_ns=1)) for ev in rows(store)])
    tape = tmp_path / "b.jsonl"
    with pytest.raises(CheckpointError, match="no longer matches the checkpoint"):
        export_sessions(store, ["B"], tape, checkpoint=note)
    assert [name for name in os.listdir(tmp_path) if "b.jsonl" in name] == []


def test_a_tape_carrying_a_checkpoint_of_another_key(
    signed_store: tuple[EventStore, str], tmp_path: Path
) -> None:
    store, note = signed_store
    tape = tmp_path / "b.jsonl"
    export_sessions(store, ["B"], tape, checkpoint=note)
    result = verify_tape(tape, key=Ed25519PrivateKey.generate().public_key())
    assert not result.ok
    assert "not signed by this key" in result.problems[0].message


def test_old_tapes_without_hashes(store: EventStore, tmp_path: Path) -> None:
    old = FIXTURES / "pydantic-ai" / "test_openai_responses_stream.jsonl"
    with pytest.raises(TapeError, match="carries no hashes"):
        verify_tape(old)
    out = CliRunner().invoke(main, ["verify", str(old)])
    assert out.exit_code == 1 and out.output.startswith("Error: ") and out.output.count("\n") == 1
    # ...and still import, as do tapes with chain fields and a proof line.
    assert import_file(store, old).events == 34


def test_a_tape_with_hashes_and_a_proof_imports(
    signed_store: tuple[EventStore, str], tmp_path: Path
) -> None:
    from recorder.store import migrate

    store, note = signed_store
    tape = tmp_path / "b.jsonl"
    export_sessions(store, ["B"], tape, checkpoint=note)
    second = f"sqlite:///{tmp_path / 'second.db'}"
    migrate.upgrade(second)
    with EventStore.open(second) as fresh:
        assert import_file(fresh, tape).events == 11
        assert [e.to_event() for e in fresh.iter_events()] == session_rows(store, "B")


def test_verify_refuses_a_tape_cut_at_a_line_boundary_by_the_rule_import_applies(
    signed_store: tuple[EventStore, str], tmp_path: Path
) -> None:
    store, _ = signed_store
    tape = tmp_path / "b.jsonl"
    export_sessions(store, ["B"], tape)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(tape.read_text().splitlines(keepends=True)[:6]))  # every hash holds
    what = "cut short: session 'B' is never closed; exchange #1 (POST ?) never ended"
    out = CliRunner().invoke(main, ["verify", str(cut)])
    assert out.exit_code == 1, out.output
    assert out.stderr == f"{cut}: the tape is {what}\n"
    assert "ok" not in out.stdout
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade", "--db", fresh]).exit_code == 0
    imported = CliRunner().invoke(main, ["import", str(cut), "--db", fresh])
    assert imported.exit_code == 1
    assert imported.stderr.startswith(f"Error: {cut} is {what}. Import it anyway with --partial")
    assert verify_tape(tape).ok  # the whole tape


def test_verify_and_import_refuse_an_empty_tape_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade", "--db", fresh]).exit_code == 0
    for args in (["verify", str(empty)], ["import", str(empty), "--db", fresh]):
        out = CliRunner().invoke(main, args)
        assert (out.exit_code, out.stderr) == (1, f"Error: {empty}: the file is empty\n"), args


def test_verify_with_a_key_fails_a_tape_whose_proof_line_was_removed(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, note = signed_store
    tape = tmp_path / "b.jsonl"
    export_sessions(store, ["B"], tape, checkpoint=note)
    stripped = tmp_path / "stripped.jsonl"
    stripped.write_text("".join(tape.read_text().splitlines(keepends=True)[:-1]))
    assert verify_tape(stripped).ok  # alone it is a sound tape
    out = CliRunner().invoke(main, ["verify", str(stripped), "--key", str(keys.public_path)])
    assert out.exit_code == 1, out.output
    assert "the tape carries no signed checkpoint to check against" in out.stderr
    assert "ok" not in out.stdout
    # Given the checkpoint file, the tape's rows are checked against it instead.
    cp_file = tmp_path / "head.checkpoint"
    cp_file.write_text(note)
    given = ["verify", str(stripped), "--key", str(keys.public_path), "--checkpoint", str(cp_file)]
    out = CliRunner().invoke(main, given)
    assert out.exit_code == 1  # 11 of its 33 rows, and the proof is gone
    assert "no proof for this checkpoint" in out.stderr


def test_the_checkpoint_a_tape_carries_is_checked_when_checkpoint_files_are_given(
    signed_store: tuple[EventStore, str], keys: Keys, tmp_path: Path
) -> None:
    store, note = signed_store
    # A whole-log tape that carries a checkpoint signed by someone else's key.
    _, foreign = create_checkpoint(store, Ed25519PrivateKey.generate())
    tape = tmp_path / "all.jsonl"
    export_sessions(store, ["A", "B", "C"], tape, checkpoint=foreign)
    cp_file = tmp_path / "head.checkpoint"
    cp_file.write_text(note)
    key = str(keys.public_path)
    out = CliRunner().invoke(
        main, ["verify", str(tape), "--key", key, "--checkpoint", str(cp_file)]
    )
    assert out.exit_code == 1, out.output
    assert "the checkpoint the tape carries" in out.stderr
    assert "not signed by this key" in out.stderr
    assert "33 row(s) proven to be in the signed log" in out.stdout  # the file's check passed
