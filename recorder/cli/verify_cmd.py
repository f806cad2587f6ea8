"""``verify``: re-derive the log's (or a tape's) hash chain, and check signed checkpoints.

Ids are printed whole; the head hash too, so it can be kept elsewhere and
compared later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from recorder.cli.app import ARCHIVE_DIR, db_option, emit_json, json_option, main, open_store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from recorder.integrity import Checkpoint

__all__ = ["verify"]


@main.command()
@click.argument("tape", required=False, type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Signed checkpoint file, or a directory of them, to check against (repeatable).",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    help="Public key (PEM) the checkpoints were signed with; with a TAPE, also checks the "
    "checkpoint the tape carries, and fails a tape that carries none unless --checkpoint "
    "is given.",
)
@click.option(
    "--archive",
    "archive_dir",
    type=ARCHIVE_DIR,
    help="Directory of the log's archive files (`codetape archive`): check them too, so the "
    "whole history is verified, from the first position to the head.",
)
@click.option(
    "--projections/--no-projections",
    "check_projections",
    default=True,
    show_default=True,
    help="Also check that the projection tables every report reads hold exactly what the "
    "log gives (folded again from the log into temporary copies; read-only).",
)
@db_option
@json_option
def verify(
    tape: Path | None,
    checkpoints: tuple[Path, ...],
    key: Path | None,
    archive_dir: Path | None,
    check_projections: bool,
    db: str | None,
    as_json: bool,
) -> None:
    """Re-derive every hash in the log (or in TAPE); exit 1 naming the first bad position.

    Without --checkpoint this proves the rows form one unbroken chain, not
    that they are the rows recorded: anyone who can write the database can
    recompute every hash. With --checkpoint and --key it also proves the log
    (or the tape's rows) still extends each signed head.

    Once old partitions are archived and dropped, the live log is checked
    from the newest archive seal on (its first row's predecessor is the
    seal's head hash); --archive DIR checks the archive files as well: each
    present, unchanged, and chaining into the next and into the live log.

    The projection tables (what every report reads) are ordinary tables the
    chain does not cover: they are checked against the log too, each up to
    its checkpoint (with --archive, against the archived history as well),
    unless --no-projections.

    Also reports exchanges left open (interrupted captures) and capture gaps.
    """
    from recorder.errors import CodetapeError
    from recorder.integrity import load_checkpoints, load_public_key, verify_log
    from recorder.repair import open_exchange_liveness

    if checkpoints and key is None:
        raise CodetapeError("--checkpoint needs --key PUBLIC_KEY (the key that signed it)")
    public = load_public_key(key) if key is not None else None
    signed = load_checkpoints(checkpoints, public) if public is not None else []
    if tape is not None:
        if db is not None or archive_dir is not None:
            raise CodetapeError("give a TAPE, or --db and --archive, not both")
        _verify_tape(tape, public, signed, as_json)
        return
    with open_store(db) as store:
        result = verify_log(store, signed)
        # For each exchange left open: may its recorder still be writing it?
        still_open = open_exchange_liveness(store, result.report.open_exchanges)
        archived = None
        if archive_dir is not None:
            from recorder.archive import verify_archive

            archived = verify_archive(store, archive_dir)
        derived = None
        if check_projections and result.report.ok and (archived is None or not archived[0]):
            from recorder.projections.check import check_projections as check_derived

            derived = check_derived(store, archive=archive_dir)
    report = result.report
    archive_ok = archived is None or not archived[0]
    derived_ok = derived is None or all(c.ok for c in derived)
    if as_json:
        emit_json(
            {
                "ok": report.ok and archive_ok and derived_ok,
                "checked": report.checked,
                "start_position": report.start_position,
                "head_position": report.head_position,
                "head_hash": report.head_hash,
                "first_bad_position": report.first_bad_position,
                "problems": [
                    {"position": p.position, "message": p.message} for p in report.problems
                ],
                "open_exchanges": report.open_exchanges,
                "open_exchange_sessions": [
                    {
                        "exchange": xid,
                        "session": sid,
                        "lease": None if state is None else state.lease,
                        "lease_expires_in_s": None if state is None else state.expires_in_s,
                        "recorder_process": None if state is None else state.process,
                        "repairable": state is not None and state.repairable,
                    }
                    for xid, sid, state in still_open
                ],
                "capture_gaps": report.capture_gaps,
                "checkpoints": [
                    {
                        "source": c.source,
                        "position": c.checkpoint.size,
                        "ok": c.ok,
                        "message": c.message,
                    }
                    for c in result.checkpoints
                ],
                "archive": None
                if archived is None
                else {
                    "directory": str(archive_dir),
                    "files": archived[1],
                    "rows": archived[2],
                    "problems": [
                        {"file": p.file, "position": p.position, "message": p.message}
                        for p in archived[0]
                    ],
                },
                "projections": None
                if derived is None
                else [
                    {
                        "name": c.name,
                        "status": c.status,
                        "position": c.position,
                        "problems": list(c.problems),
                    }
                    for c in derived
                ],
            },
            "verify",
        )
    else:
        for problem in report.problems:
            click.echo(f"position {problem.position}: {problem.message}", err=True)
        if report.open_exchanges:
            click.echo(
                f"{len(report.open_exchanges)} exchange(s) not ended (still recording, or an "
                "interrupted capture):",
                err=True,
            )
            for xid, sid, state in still_open[:20]:
                where = "its session is closed" if state is None else state.describe()
                click.echo(f"  {xid} in session {sid or '?'}: {where}", err=True)
            if len(still_open) > 20:
                click.echo(f"  ... and {len(still_open) - 20} more", err=True)
        if report.capture_gaps:
            click.echo(f"{report.capture_gaps} capture gap(s) recorded", err=True)
        for bad in archived[0] if archived is not None else []:
            click.echo(f"archive {bad}", err=True)
        if report.ok:
            since = (
                ""
                if report.start_position == 1
                else f" from position {report.start_position} (positions 1-"
                f"{report.start_position - 1} are archived)"
            )
            click.echo(
                f"ok: {report.checked} events verified{since}; head {report.head_position} "
                f"{report.head_hash}"
            )
            for check in result.checkpoints:
                click.echo(check.message)
        if archived is not None and archive_ok:
            click.echo(
                f"ok: {archived[2]} archived events in {archived[1]} file(s) of {archive_dir} "
                "verified, chained into the live log"
            )
        for derived_check in derived or []:
            if not derived_check.ok:
                click.echo(f"projection {derived_check.describe()}", err=True)
        if not derived_ok:
            click.echo(
                "projection tables were changed outside codetape: every report reads them; "
                "`codetape projections rebuild` replaces them from the log",
                err=True,
            )
        if derived is not None and derived_ok:
            done = [c for c in derived if c.checked]
            skipped = [c for c in derived if not c.checked]
            line = f"ok: {len(done)} projection(s) match the log"
            if skipped:
                line += "; not checked: " + ", ".join(f"{c.name} ({c.reason})" for c in skipped)
            click.echo(line)
    if not report.ok or not archive_ok or not derived_ok:
        raise SystemExit(1)


def _verify_tape(
    tape: Path,
    public: Ed25519PublicKey | None,
    signed: list[tuple[str, Checkpoint]],
    as_json: bool,
) -> None:
    from recorder.integrity import verify_tape

    result = verify_tape(tape, key=public, checkpoints=signed)
    unchecked = result.embedded is not None and public is None
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "rows": result.rows,
                "problems": [
                    {"where": p.where, "position": p.position, "message": p.message}
                    for p in result.problems
                ],
                "carries_checkpoint": result.embedded is not None,
                "checkpoints": [
                    {
                        "source": c.source,
                        "position": c.checkpoint.size,
                        "ok": c.ok,
                        "covered": c.covered,
                        "not_covered": c.not_covered,
                        "message": c.message,
                    }
                    for c in result.checks
                ],
            },
            "verify-tape",
        )
    else:
        for problem in result.problems:
            at = f" (position {problem.position})" if problem.position is not None else ""
            click.echo(f"{problem.where}{at}: {problem.message}", err=True)
        if result.ok:
            click.echo(f"ok: {result.rows} rows of {tape} verified against their chain hashes")
        for check in result.checks:
            line = check.message
            if check.ok and check.not_covered:
                line += f"; {check.not_covered} row(s) after its position are not covered"
            click.echo(line, err=not check.ok)
        if unchecked:
            click.echo(
                "the tape carries a signed checkpoint: pass --key PUBLIC_KEY to check it",
                err=True,
            )
    if not result.ok:
        raise SystemExit(1)
