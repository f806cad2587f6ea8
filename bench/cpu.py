"""CPU seconds of the processes a benchmark involves, read from ``/proc`` (Linux).

Guarantees: :func:`server_cpu` is the run time of one PostgreSQL server, found
from a connection to it (the postmaster is its backend's parent): the
postmaster's own, every live child's (backends, background workers) and,
through the postmaster's ``cutime``/``cstime``, every child it has reaped, so
a backend that exits between two readings still counts. :func:`process_cpu`
is one process's run time (all its threads), to the nanosecond. A CPU hog of
bench/load.py belongs to neither, so it is never counted. Other servers on
the machine (other jobs' tests) are never counted either.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psycopg

_CLK = os.sysconf("SC_CLK_TCK")

__all__ = ["postmaster_pid", "process_cpu", "server_cpu"]


def _stat(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 first)."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return raw[raw.rindex(b")") + 2 :].split()


def postmaster_pid(url: str) -> int:
    """The postmaster of the server at ``url`` (which must run on this machine)."""
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert backend is not None
    return int(_stat(int(backend[0]))[1])  # field 4: the parent


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the server: the postmaster, its live children and its reaped ones."""
    fields = _stat(postmaster)
    # utime, stime, cutime, cstime: fields 14-17 of the line.
    total = sum(int(x) for x in fields[11:15])
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):  # ended meanwhile
            child = _stat(int(entry))
            if int(child[1]) == postmaster:
                total += int(child[11]) + int(child[12])
    return total / _CLK


def process_cpu(pid: int) -> float:
    """CPU seconds the live threads of process ``pid`` have run (0.0 once it is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):  # the thread ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9
