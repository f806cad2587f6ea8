"""``archive``: move a PostgreSQL log's old partitions to verified tapes, then drop them.

Thin over :mod:`recorder.archive`: writing and sealing is one step any role
that may append can run; ``--drop`` is the owner's step.
"""

from __future__ import annotations

from pathlib import Path

import click

from recorder.cli.app import TimeParam, db_option, emit_json, json_option, main, open_store
from recorder.cli.render import when

__all__ = ["archive"]


@main.command()
@click.option(
    "--before",
    "before_ns",
    type=TimeParam(now=False),
    metavar="DATE",
    help="Archive the partitions whose rows were all recorded before DATE "
    "(YYYY-MM-DD, midnight UTC, or an ISO 8601 time) and whose sessions are all closed.",
)
@click.option(
    "-o",
    "--output",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory of the archive files (one .jsonl.zst tape per run).",
)
@click.option(
    "--drop",
    is_flag=True,
    help="Then detach and drop every partition a sealed archive file in the directory "
    "covers, once that file verifies (needs the owner of the log's tables).",
)
@db_option
@json_option
def archive(
    before_ns: int | None, directory: Path, drop: bool, db: str | None, as_json: bool
) -> None:
    """Write old partitions of a PostgreSQL log to verifiable tapes, seal them, and drop them.

    With --before, the rows of every full partition recorded before DATE, whose
    sessions are all closed and end there, are written with their positions
    and chain hashes to one compressed tape in the directory, read back and
    re-derived, then sealed by an `archived` event in the log (the files'
    sha256 and the head hash the live log goes on from). Nothing is dropped.

    With --drop (alone, or after --before), partitions covered by a seal whose
    file is in the directory, unchanged and verifying, are detached and dropped
    in one transaction. Only the owner of the log's tables may: the roles of
    `codetape db roles` may not. `codetape verify --archive DIR` then checks
    the whole history.
    """
    from recorder.archive import ArchiveError, drop_archived
    from recorder.archive import archive as run_archive

    if before_ns is None and not drop:
        raise ArchiveError(
            "give --before DATE (to archive), --drop (to drop what is sealed), or both"
        )
    if before_ns is not None and not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
    document: dict[str, object] = {"directory": str(directory)}
    with open_store(db) as store:
        if before_ns is not None:
            result = run_archive(store, before_ns, directory)
            if result.segment is None or result.path is None:
                document["archived"] = None
                if not as_json:
                    click.echo(f"nothing to archive before {when(before_ns)} UTC: {result.reason}")
            else:
                seg = result.segment
                document["archived"] = {
                    "file": str(result.path),
                    "first_position": seg.first,
                    "last_position": seg.last,
                    "events": seg.events,
                    "sessions": seg.sessions,
                    "head_hash": seg.head_hash,
                    "sha256": seg.sha256,
                    "sealed_at": seg.sealed_at,
                }
                if not as_json:
                    click.echo(
                        f"archived positions {seg.first}-{seg.last} ({seg.events} events, "
                        f"{seg.sessions} sessions) to {result.path}\n"
                        f"  sha256 {seg.sha256}\n  head {seg.head_hash}\n"
                        f"  sealed at position {seg.sealed_at}"
                    )
        if drop:
            dropped = drop_archived(store, directory)
            document["dropped"] = [p.name for p in dropped.dropped]
            if not as_json:
                if dropped.dropped:
                    click.echo(
                        f"dropped {len(dropped.dropped)} partition(s), positions "
                        f"{dropped.first}-{dropped.last}: "
                        + ", ".join(p.name for p in dropped.dropped)
                    )
                else:
                    click.echo("no partition to drop: none is covered by a sealed archive file")
    if as_json:
        emit_json(document)
