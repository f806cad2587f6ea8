"""``import`` and ``export``: files in and out of the log.

Guarantees: each imported file is atomic and gets one line (imported, skipped
as already imported, or failed and why); the others go on after one fails,
and the exit status is 1 if any failed. Ctrl-C stops at once, or right after
the batch being committed, and says exactly what was committed (exit 130).
``export`` resolves every session before writing, then writes a file
atomically or streams to standard output with ``-o -``.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from recorder.cli.app import (
    EXIT_INTERRUPTED,
    CliError,
    OutputFile,
    db_option,
    emit_json,
    json_option,
    main,
)
from recorder.cli.app import open_store as _open_store
from recorder.cli.redaction import redaction_options, redactor_from
from recorder.cli.render import printable

if TYPE_CHECKING:
    from recorder.cli.interrupts import CommitGuard
    from recorder.ingest import FileOutcome
    from recorder.store.store import EventStore

__all__ = ["export_cmd", "import_cmd"]

FORMATS = ("auto", "tape", "vcr", "chunks", "testproxy")


def _reason(outcome: FileOutcome) -> str:
    """The library's message without the file name the line already starts with."""
    text = outcome.error or ""
    for prefix in (f"{outcome.path}: ", f"{outcome.path.name}: ", f"{outcome.path} "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _line(outcome: FileOutcome) -> str:
    if outcome.status == "imported" and outcome.result is not None:
        r = outcome.result
        names = ", ".join(name for _, name in r.sessions)
        partial = "; kept partial (--partial)" if r.partial else ""
        already = (
            f"; {r.already} more were already stored, by an interrupted import of it"
            if r.already
            else ""
        )
        return (
            f"{outcome.path}: imported ({r.format}, {r.events} events{already}{partial}) -> {names}"
        )
    if outcome.status == "duplicate":
        return f"{outcome.path}: skipped, already imported: {_reason(outcome)}"
    text = outcome.error or ""
    if text.startswith((f"{outcome.path}:", f"{outcome.path} ")):
        return text  # it names the file already (with a line number, say)
    return f"{outcome.path}: {_reason(outcome)}"


def _json(outcome: FileOutcome) -> dict[str, Any]:
    r = outcome.result
    return {
        "path": str(outcome.path),
        "status": outcome.status,
        "format": r.format if r else None,
        "events": r.events if r else 0,
        "already_stored": r.already if r else 0,
        "sessions": [{"id": i, "name": n} for i, n in r.sessions] if r else [],
        "partial": r.partial if r else False,
        "error": outcome.error,
    }


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Source format; auto detects it from the content.",
)
@click.option(
    "--partial",
    is_flag=True,
    help="Keep a file that is cut short (a session never closed, an exchange never "
    "ended, a vercel chunks stream without its final event), marking its sessions partial.",
)
@redaction_options
@db_option
@json_option
def import_cmd(
    files: tuple[Path, ...],
    fmt: str,
    partial: bool,
    redact_headers: tuple[str, ...],
    redact_json_paths: tuple[str, ...],
    keep: tuple[str, ...],
    db: str | None,
    as_json: bool,
) -> None:
    """Import tapes or other tools' recordings (VCR.py YAML, vercel chunks, test-proxy JSON).

    Each file is imported atomically: all of its sessions or none. A bad file
    does not stop the others; each gets one line, and the exit status is 1 if
    any failed. A file already imported is skipped. Secrets are redacted
    before anything is stored, as when recording. Ctrl-C stops after at most
    the batch being committed and says what was stored: importing the same
    file again stores the rest.
    """
    from recorder.cli.interrupts import CommitGuard
    from recorder.ingest import import_files

    outcomes: list[FileOutcome] = []
    current: Path | None = None
    committed = 0  # events of ``current`` committed so far
    interrupted = False
    store: EventStore | None = None
    guard: CommitGuard | None = None
    try:
        store = _open_store(db)
        guard = CommitGuard(store.write_engine)  # the engine appends commit on
        with guard:
            redactor = redactor_from(redact_headers, redact_json_paths, keep)

            def on_batch(_path: Path, count: int, guard: CommitGuard = guard) -> None:
                nonlocal committed
                committed = count
                # That batch's fate is known: a Ctrl-C held back during its
                # commit stops the import here, at a batch boundary.
                guard.settle()

            pending = import_files(
                store, list(files), fmt, redactor, partial=partial, on_batch=on_batch
            )
            while len(outcomes) < len(files):
                current, committed = files[len(outcomes)], 0
                outcome = next(pending)
                outcomes.append(outcome)
                current = None
                if not as_json:
                    failed = outcome.status == "failed"
                    line = printable(_line(outcome))  # names are data: shown, not obeyed
                    click.echo(("Error: " if failed else "") + line, err=failed)
                # That file's fate is recorded: a Ctrl-C held back during its
                # commit may stop us now.
                guard.settle()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if store is not None:
            store.close()
        if guard is not None:
            guard.restore()
    if interrupted:
        _report_interrupt(outcomes, files, current, committed, as_json)
    _report(outcomes, as_json)


def _report(outcomes: list[FileOutcome], as_json: bool) -> None:
    failed = [o for o in outcomes if o.status == "failed"]
    if as_json:
        emit_json([_json(o) for o in outcomes])
    elif len(outcomes) > 1:
        imported = sum(o.status == "imported" for o in outcomes)
        skipped = sum(o.status == "duplicate" for o in outcomes)
        click.echo(
            f"{len(outcomes)} files: {imported} imported, {skipped} skipped "
            f"(already imported), {len(failed)} failed"
        )
    if failed:
        if as_json or len(outcomes) > 1:
            raise CliError(f"{len(failed)} of {len(outcomes)} file(s) failed to import")
        raise SystemExit(1)  # its one Error: line is printed already


def _report_interrupt(
    outcomes: list[FileOutcome],
    files: tuple[Path, ...],
    current: Path | None,
    committed: int,
    as_json: bool,
) -> None:
    imported = [o for o in outcomes if o.status == "imported"]
    untried = len(files) - len(outcomes) - (1 if current is not None else 0)
    parts = [
        f"imported {len(imported)} of {len(files)} file(s) before that, committed"
        if imported
        else "nothing was imported"
    ]
    if current is not None and committed:
        parts.append(
            f"{committed} events of {current} were committed, up to a batch boundary "
            "(its sessions cut there are listed as open): import it again to store the rest"
        )
    elif current is not None:
        parts.append(f"nothing of {current} was written")
    if untried > 0:
        parts.append(f"{untried} file(s) not tried")
    message = "interrupted: " + "; ".join(parts)
    if as_json:
        emit_json([_json(o) for o in outcomes])
    raise CliError(message, exit_code=EXIT_INTERRUPTED)


@main.command("export")
@click.argument("sessions", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=OutputFile(dash=True),
    metavar="FILE",
    help="Tape file to write (atomically; a new file or a regular one; a name ending in "
    ".zst is zstd-compressed), or - for stdout.",
)
@click.option(
    "--no-hashes",
    is_flag=True,
    help="Leave out each row's position and chain hash (a tape that round-trips byte for byte).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(path_type=Path),
    help="End the tape with the proof that its rows are in the log this signed checkpoint "
    "covers (a file only, not -o -).",
)
@db_option
@json_option
def export_cmd(
    sessions: tuple[str, ...],
    output: Path | str,
    no_hashes: bool,
    checkpoint_file: Path | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Export sessions (ids or names) to a tape file (JSON Lines, optionally .zst)."""
    from recorder.export import export_sessions, resolve_sessions

    if output == "-" and as_json:
        raise click.UsageError("--json and -o - would both write to standard output")
    if output == "-" and checkpoint_file is not None:
        raise click.UsageError(
            "--checkpoint writes to a file: its proof is checked before the file appears"
        )
    note = None
    if checkpoint_file is not None:
        from recorder.integrity import read_note

        note = read_note(checkpoint_file)
    with _open_store(db) as store:
        ids = resolve_sessions(store, sessions)  # before a first byte is written
        if output == "-":
            out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
            try:
                count = export_sessions(store, ids, out, hashes=not no_hashes)
                out.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise CliError(f"cannot write to standard output: {exc.strerror}") from None
            finally:
                # Hand sys.stdout's buffer back (never close it with the wrapper).
                with contextlib.suppress(OSError, ValueError):
                    out.detach()
            click.echo(f"wrote {count} events to standard output", err=True)
            return
        count = export_sessions(store, ids, Path(output), hashes=not no_hashes, checkpoint=note)
    if as_json:
        emit_json({"path": str(output), "events": count, "sessions": ids})
        return
    click.echo(f"wrote {count} events to {output}")
