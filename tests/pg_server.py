"""A throwaway PostgreSQL server for the test session.

``PgServer`` runs ``initdb`` into a fresh directory under /tmp, starts ``postgres``
on 127.0.0.1 and a free port (unix socket inside that directory, durability
switched off for speed, trust authentication), and on exit stops it with
``pg_ctl stop -m immediate`` and removes the directory.

    with PgServer() as server:
        print(server.admin_url)   # postgresql://postgres@127.0.0.1:PORT/postgres

initdb and postgres refuse to run as root, so when we are root every server
command runs as the ``postgres`` OS user, in a directory chowned to it.  When we
are not root they run as the current user (the superuser role is still called
``postgres``).

The cluster directory goes under $CODETAPE_TEST_PG_TMPDIR if set, else /dev/shm (a
tmpfs: CREATE DATABASE is ~15x faster there than on this machine's disk), else /tmp.

Binaries are looked up in $CODETAPE_PG_BINDIR, /usr/lib/postgresql/15/bin, other
/usr/lib/postgresql/*/bin (newest first), then $PATH.  ``find_bindir()`` returns
``(None, reason)`` when nothing usable is found, so callers can skip or fail.

Run ``python tests/pg_server.py`` to get a server by hand until Ctrl-C.

Only the standard library is used here: this module must not depend on the
code under test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
PREFERRED_BINDIR = "/usr/lib/postgresql/15/bin"
OS_USER_WHEN_ROOT = "postgres"
SUPERUSER = "postgres"
TMPDIR_ENV = "CODETAPE_TEST_PG_TMPDIR"

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _has_binaries(bindir: str) -> bool:
    return all(os.access(os.path.join(bindir, name), os.X_OK) for name in SERVER_BINARIES)


def _candidate_bindirs() -> list[str]:
    env = os.environ.get("CODETAPE_PG_BINDIR")
    if env:
        # An explicit choice is the only candidate: no silent fallback.
        return [env]
    candidates = [PREFERRED_BINDIR]

    def major(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        # /usr/local/bin/pg_ctl may be a symlink into the real bindir.
        candidates.append(str(Path(on_path).resolve().parent))
        candidates.append(str(Path(on_path).parent))
    return list(dict.fromkeys(candidates))


def find_bindir() -> tuple[str | None, str]:
    """Return ``(bindir, "")`` or ``(None, reason)``."""
    candidates = _candidate_bindirs()
    for bindir in candidates:
        if _has_binaries(bindir):
            if os.geteuid() == 0:
                try:
                    import pwd

                    pwd.getpwnam(OS_USER_WHEN_ROOT)
                except KeyError:
                    return None, (
                        f"PostgreSQL binaries found in {bindir}, but we run as root and there "
                        f"is no {OS_USER_WHEN_ROOT!r} OS user to run initdb/postgres as"
                    )
            return bindir, ""
    return None, (
        f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) not found in "
        f"{', '.join(candidates)} or on $PATH; install postgresql-15, or set "
        "CODETAPE_PG_BINDIR, or point CODETAPE_TEST_PG_URL at a running server"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServerError(RuntimeError):
    pass


class PgServer:
    """A private PostgreSQL cluster; use as a context manager."""

    def __init__(
        self, bindir: str | None = None, *, start_timeout: float = 60.0, durable: bool = False
    ) -> None:
        if bindir is None:
            bindir, reason = find_bindir()
            if bindir is None:
                raise PgServerError(reason)
        self.bindir = bindir
        self.start_timeout = start_timeout
        # Off by default (speed); on, a commit is written out before it is
        # acknowledged, so a server halted mid-stream keeps every commit.
        self.durable = durable
        self.host = "127.0.0.1"
        self.port = 0
        self.base_dir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}

    # -- public -----------------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "postgres.log"

    def start(self) -> PgServer:
        began = time.monotonic()
        try:
            self._make_base_dir()
            self._initdb()
            for attempt in range(3):
                self.port = free_port()
                if self._start_postgres(last_attempt=attempt == 2):
                    break
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory.  Safe to call more than once."""
        try:
            self._stop_postgres()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None

    def halt(self) -> None:
        """Stop the server as a crash would (``-m immediate``), keeping its data and port."""
        self._stop_postgres()

    def resume(self) -> None:
        """Start a halted server again on the same port; it recovers from its WAL."""
        if not self._start_postgres(last_attempt=True):
            raise PgServerError(f"could not restart on port {self.port}")

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _make_base_dir(self) -> None:
        # Under /tmp, not $TMPDIR: the postgres user must be able to reach it and
        # the unix socket path must stay short (about 100 bytes at most).
        # $CODETAPE_TEST_PG_TMPDIR can point elsewhere, e.g. a tmpfs such as /dev/shm,
        # where CREATE DATABASE (a copy of ~300 files) is much faster on slow disks.
        parent = os.environ.get(TMPDIR_ENV) or next(
            (d for d in ("/dev/shm", "/tmp") if os.path.isdir(d) and os.access(d, os.W_OK)), None
        )
        self.base_dir = Path(tempfile.mkdtemp(prefix="codetape-pg-", dir=parent))
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(OS_USER_WHEN_ROOT)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
            # subprocess switches uid/gid itself (no runuser/su needed) and drops
            # root's supplementary groups.
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _run(self, args: list[str], what: str, timeout: float = 120.0) -> str:
        try:
            done = subprocess.run(
                args,
                cwd=self.base_dir,  # root's cwd may be unreadable for the postgres user
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                **self._run_as,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgServerError(f"{what} timed out after {timeout}s: {args}") from exc
        output: str = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            raise PgServerError(f"{what} failed (exit {done.returncode}): {args}\n{output}")
        return output

    def _initdb(self) -> None:
        self._run(
            [
                self._bin("initdb"),
                "-D", str(self.data_dir),
                "-A", "trust",
                "-U", SUPERUSER,
                "-E", "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip
        assert self.base_dir is not None
        settings = dict(SETTINGS, unix_socket_directories=f"'{self.base_dir}'")
        if self.durable:
            settings["synchronous_commit"] = "on"
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# codetape test server\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def _start_postgres(self, *, last_attempt: bool) -> bool:
        """Start the postmaster as our own child; False if the port was taken."""
        args = [self._bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        with open(self.log_path, "ab") as log:
            # Our child (not pg_ctl's), so we reap it and no zombie is left behind;
            # its own session, so a Ctrl-C in the terminal does not stop it before
            # the fixtures' teardown has dropped the test databases.
            self._proc = subprocess.Popen(
                args,
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._run_as,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                tail = self._log_tail()
                if not last_attempt and re.search(r"could not bind|already in use", tail):
                    return False
                raise PgServerError(f"postgres exited during startup; server log:\n{tail}")
            if self._ready():
                return True
            time.sleep(0.02)
        raise PgServerError(
            f"postgres not ready after {self.start_timeout}s; server log:\n{self._log_tail()}"
        )

    def _ready(self) -> bool:
        # The postmaster writes "ready" as the status line of postmaster.pid once
        # it accepts connections; that is what pg_ctl start -w waits for too.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[7].strip() != "ready":
            return False
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
            return True
        return False

    def _stop_postgres(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(PgServerError):
                stop = ["stop", "-D", str(self.data_dir), "-m", "immediate", "-w"]
                self._run(
                    [self._bin("pg_ctl"), *stop],
                    "pg_ctl stop",
                    timeout=60,
                )
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # pg_ctl did not manage; SIGQUIT is what -m immediate sends, SIGKILL last.
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue


def main() -> None:
    with PgServer() as server:
        print(f"{server.admin_url}  (started in {server.startup_seconds:.2f}s; Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
