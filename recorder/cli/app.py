"""The ``codetape`` click group and what every command shares.

Guarantees:

* A :class:`~recorder.errors.CodetapeError` raised anywhere under a command
  becomes one line on stderr (``Error: ...``), followed only by the
  candidates when a name was ambiguous, and exit status 1; a usage mistake
  (an unknown option, a bad value) is one such line too, with exit status 2;
  Ctrl-C exits 130 with one line. Never a traceback.
* With ``--json`` on the command line, the same errors are one JSON object on
  stderr (``{"error": "..."}``) with the same exit status, so a script reads
  stdout as data and stderr as a failure.
* ``--db`` is accepted before the command (``codetape --db URL sessions``) or
  after it, and resolves like :func:`recorder.config.resolve_url`; an empty
  ``--db`` is a usage error.
* Every time option takes :class:`TimeParam` (bounded to what the log can
  store), every file the CLI writes :class:`OutputFile` (refused at once
  when it is empty or names a directory), and every archive directory
  :data:`ARCHIVE_DIR`: a bad value is a usage mistake (exit status 2),
  found before any work is done.
* Output goes through one rich console per command, created when the command
  runs, so ``COLUMNS`` and the terminal in force at that moment decide the width.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from recorder.errors import AmbiguousSession, CodetapeError

if TYPE_CHECKING:
    from rich.console import Console

    from recorder.store.store import EventStore

__all__ = [
    "ARCHIVE_DIR",
    "EXIT_INTERRUPTED",
    "TIME_HELP",
    "CliError",
    "OutputFile",
    "TimeParam",
    "console",
    "db_option",
    "emit_json",
    "get_console",
    "json_option",
    "listen_option",
    "main",
    "open_store",
]

F = TypeVar("F", bound=Callable[..., Any])

_DB_KEY = "codetape.db"
_CONSOLE_KEY = "codetape.console"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

TIME_HELP = (
    "now, a date (2026-03-31) or an ISO 8601 time (2026-03-31T14:05, seconds and "
    "an offset such as +02:00 optional; UTC unless an offset is given)"
)


class CliError(click.ClickException):
    """A user mistake: one ``Error:`` line (plus ``details`` lines), or a JSON object.

    ``extra`` goes into the JSON form beside ``"error"``.
    """

    def __init__(
        self,
        message: str,
        details: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        exit_code: int = 1,
    ) -> None:
        super().__init__(message)
        self.details = list(details)
        self.extra = dict(extra or {})
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    @classmethod
    def from_error(cls, exc: CodetapeError) -> CliError:
        if isinstance(exc, AmbiguousSession):
            return cls(
                str(exc),
                [f"  {sid}  {about}" for sid, about in exc.candidates],
                {"candidates": [{"id": sid, "about": about} for sid, about in exc.candidates]},
            )
        return cls(str(exc))

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)
        for line in self.details:
            click.echo(line, err=True)


def _wants_json(args: Sequence[str]) -> bool:
    cut = list(args).index("--") if "--" in args else len(args)
    return "--json" in args[:cut]


def _report_json(message: str, extra: dict[str, Any] | None = None) -> None:
    click.echo(json.dumps({"error": message, **(extra or {})}, ensure_ascii=False), err=True)


def _silence_stdout() -> None:
    # The reader went away (`codetape sessions | head`): point stdout at
    # /dev/null so the interpreter's final flush cannot complain either.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


class _DropInterrupts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, KeyboardInterrupt)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the sys.stderr of the moment, like logging's last-resort handler."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def quiet_interrupted_cleanup() -> None:
    """Keep SQLAlchemy from printing a traceback for the Ctrl-C it was cleaning up after.

    A Ctrl-C that lands while the pool resets a connection is logged by
    SQLAlchemy with its traceback (through logging's last-resort handler)
    and then re-raised; the command reports the interruption itself. Other
    warnings and errors still reach stderr as before.
    """
    logger = logging.getLogger("sqlalchemy")
    if any(isinstance(h, _Stderr) for h in logger.handlers):
        return
    handler = _Stderr()
    handler.setLevel(logging.WARNING)
    handler.addFilter(_DropInterrupts())
    logger.addHandler(handler)


class _Group(click.Group):
    """The top-level group: commands are imported when run, listed from a table.

    ``codetape --help`` lists :data:`recorder.cli.commands.COMMANDS` without
    importing a command module; ``codetape NAME`` imports only NAME's module,
    which registers its commands on this group.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        from recorder.cli.commands import COMMANDS

        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = self.commands.get(cmd_name)
        if found is None:
            from recorder.cli.commands import COMMANDS

            entry = COMMANDS.get(cmd_name)
            if entry is not None:
                importlib.import_module(f"recorder.cli.{entry[0]}")
                found = self.commands.get(cmd_name)
        return found

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from recorder.cli.commands import COMMANDS

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(limit)))
            else:
                # A stand-in with the same help shortens it exactly as the command would.
                stand_in = click.Command(name, help=COMMANDS[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, False, **extra)
        as_json = _wants_json(argv)
        quiet_interrupted_cleanup()
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `codetape` alone: the help, as click gives it
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = exc.format_message()
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message += f" (see `{exc.ctx.command_path} --help`)"
            if as_json:
                _report_json(message, getattr(exc, "extra", None))
            elif isinstance(exc, CliError):
                exc.show()
            else:
                click.echo(f"Error: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C or end of input outside a command's own handling
            if as_json:
                _report_json("interrupted")
            else:
                click.echo("\nError: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(0)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CodetapeError as exc:
            raise CliError.from_error(exc) from None
        except KeyboardInterrupt:
            raise click.Abort() from None


def _remember_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        if not value.strip():
            raise click.BadParameter("is empty: give a database URL", ctx, _param)
        ctx.meta[_DB_KEY] = value
    return value


@click.group("codetape", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="codetape")
@click.option(
    "--db",
    "db",
    metavar="URL",
    default=None,
    expose_value=False,
    callback=_remember_db,
    help="Database URL for the command (default: $CODETAPE_DB, else the embedded SQLite file).",
)
def main() -> None:
    """codetape: record OpenAI Responses API sessions as an immutable event log,
    replay them offline, and report what ran and what it cost.

    The database is --db URL (before or after the command), else $CODETAPE_DB,
    else an embedded SQLite file in your user data directory (created on first
    use). URLs: sqlite:///PATH or postgresql://user@host:port/db.
    """


def _db_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        inherited = ctx.meta.get(_DB_KEY)
        return inherited if isinstance(inherited, str) else None
    return _remember_db(ctx, param, value)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db",
        metavar="URL",
        envvar=None,
        default=None,
        callback=_db_value,
        help="Database URL (default: $CODETAPE_DB, else the embedded SQLite file).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def _parse_listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(
            f"wants HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a free one), got {value!r}",
            ctx,
            param,
        )
    return host, int(port)


def listen_option(default: str) -> Callable[[F], F]:
    """``--listen HOST:PORT``, the same for every server command; gives ``(host, port)``."""
    return click.option(
        "--listen",
        default=default,
        show_default=True,
        metavar="HOST:PORT",
        callback=_parse_listen,
        help="Address to listen on (port 0 picks a free one).",
    )


class TimeParam(click.ParamType[int, Any]):
    """A time option: ``now`` (unless ``now=False``), a date or an ISO 8601 time, as ns.

    Parsed and bounded by :func:`recorder.times.parse_instant`: text that is
    not a time, or a time the log cannot store, is a bad value (exit 2).
    """

    name = "time"

    def __init__(self, *, now: bool = True) -> None:
        self.now = now

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from recorder.times import BadTime, parse_instant

        if self.now and value == "now":
            from recorder.events import now_ns

            return now_ns()
        try:
            return parse_instant(str(value))
        except BadTime as exc:
            self.fail(str(exc), param, ctx)


def _first_existing(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that exists (None when none can be looked at)."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return candidate
        except OSError:
            return None
    return None


class OutputFile(click.ParamType[Path | str, Any]):
    """A file the command writes, as a :class:`~pathlib.Path` (``-`` as is, if ``dash``).

    Refused before any work, as a bad value (exit 2): an empty name, a name
    that can only be a directory (ending in ``/``, ``.``, ``..``), a path
    under something that is not a directory, and, unless ``dir_okay``, an
    existing directory. What the file may replace (a directory, a device)
    is the writer's to judge (:func:`recorder.atomic.writable_target`).
    """

    name = "file"

    def __init__(self, *, dash: bool = False, dir_okay: bool = True) -> None:
        self.dash = dash
        self.dir_okay = dir_okay

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Path | str:
        if isinstance(value, Path):
            return value
        text = str(value)
        if self.dash and text == "-":
            return text
        if not text:
            self.fail("is empty: give a file name", param, ctx)
        path = Path(text)
        seps = tuple(s for s in (os.sep, os.altsep) if s)
        if text.endswith(seps) or path.name in ("", ".", ".."):
            self.fail(f"{text!r} names a directory, not a file: give a file name", param, ctx)
        if not self.dir_okay and path.is_dir():
            self.fail(f"{text!r} is a directory: give a file name", param, ctx)
        found = _first_existing(path.parent)
        if found is not None and not found.is_dir():
            self.fail(f"cannot write {text}: {found} is not a directory", param, ctx)
        return path


ARCHIVE_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
"""The type of every ``--archive DIR`` option: an existing directory."""


def open_store(db: str | None) -> EventStore:
    from recorder.store.store import EventStore

    return EventStore.open(db)


def emit_json(value: Any, format_name: str | None = None) -> None:
    """Print ``value`` as indented JSON; checked first against the published ``format_name``.

    Checking means a document that strayed from its schema (``codetape schema
    NAME``) fails loudly here instead of surprising a script.
    """
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if format_name is not None:
        from recorder.formats import check_json

        check_json(format_name, text)
    click.echo(text)


class _CommandConsole:
    """``console``: stands for the running command's console (see :func:`get_console`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(get_console(), name)


console: Console = cast("Console", _CommandConsole())
"""For modules that print through one name; every attribute is the current command's."""


def get_console() -> Console:
    """The rich console of the running command (one per command run)."""
    from rich.console import Console

    from recorder.cli.render import new_console

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return new_console()
    found = ctx.meta.get(_CONSOLE_KEY)
    if not isinstance(found, Console):
        found = ctx.meta[_CONSOLE_KEY] = new_console()
    return found
