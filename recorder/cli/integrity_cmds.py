"""Commands for checkable integrity: keygen and checkpoint (`verify` lives in log_cmds)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from recorder.cli.app import OutputFile, db_option, main, open_store

if TYPE_CHECKING:
    from recorder.integrity import Checkpoint


@main.command()
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    required=True,
    help="Private key file to create; the public key goes beside it as FILE.pub.",
)
def keygen(output: Path) -> None:
    """Create an Ed25519 key pair for signing checkpoints (PEM files).

    Keep the private key where the database's writers cannot read it; give the
    public key to whoever verifies. Existing files are never overwritten.
    """
    from recorder.integrity import write_key_pair

    private, public = write_key_pair(output)
    click.echo(f"wrote private key {private} (mode 0600) and public key {public}")


def _describe(cp: Checkpoint) -> str:
    return f"position {cp.size}, head {cp.head_hash[:16]}, origin {cp.origin}"


@main.command()
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    required=True,
    help="Ed25519 private key (PEM) to sign with (see `codetape keygen`).",
)
@click.option(
    "-o",
    "--output",
    type=OutputFile(),
    help="File to write the checkpoint to (default: standard output).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write into this directory as POSITION.checkpoint, only if the log still "
    "extends the newest checkpoint there.",
)
@click.option("--origin", help="The log's name (default: codetape/log/ + its first row's hash).")
@click.option(
    "--every-seconds",
    type=click.FloatRange(min=0.1),
    help="With --dir: keep running, checkpointing this often while the log grows.",
)
@click.option(
    "--every-events",
    type=click.IntRange(min=1),
    help="With --dir: keep running, checkpointing whenever this many events were added.",
)
@db_option
def checkpoint(
    key: Path,
    output: Path | None,
    directory: Path | None,
    origin: str | None,
    every_seconds: float | None,
    every_events: int | None,
    db: str | None,
) -> None:
    """Sign the log's head position and hash (a checkpoint to keep outside the database).

    The whole log is verified first, and nothing is signed if it does not
    verify. `codetape verify --checkpoint FILE --key PUBLIC_KEY` later proves
    the log still extends it, and `codetape export --checkpoint FILE` makes
    tapes that prove their rows against it.
    """
    if output is not None and directory is not None:
        raise click.UsageError("give -o FILE or --dir DIR, not both")
    watching = every_seconds is not None or every_events is not None
    if watching and directory is None:
        raise click.UsageError("--every-seconds and --every-events need --dir")
    from recorder.integrity import Checkpointer, create_checkpoint, load_private_key, write_note

    private = load_private_key(key)
    with open_store(db) as store:
        if directory is None:
            made, note = create_checkpoint(store, private, origin=origin)
            if output is None:
                sys.stdout.write(note)
            else:
                write_note(note, output)
                click.echo(f"wrote checkpoint {output} ({_describe(made)})", err=True)
            return
        checkpointer = Checkpointer(store, private, directory, origin=origin)
        if not watching:
            made_now = checkpointer.advance()
            if made_now is None:
                click.echo(f"the log has not grown since {checkpointer.latest_source}", err=True)
            else:
                click.echo(f"wrote {checkpointer.latest_source} ({_describe(made_now)})")
            return
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_signal)
        click.echo(f"checkpointing into {directory}; Ctrl-C stops", err=True)
        try:
            checkpointer.watch(
                stop,
                every_seconds=every_seconds,
                every_events=every_events,
                on_checkpoint=lambda cp: click.echo(
                    f"wrote {checkpointer.latest_source} ({_describe(cp)})"
                ),
            )
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
