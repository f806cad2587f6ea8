"""CPU seconds of the processes a benchmark involves, read from ``/proc`` (Linux).

Guarantees: :func:`server_cpu` is the run time of one PostgreSQL server, found
from a connection to it (the postmaster is its backend's parent): the
postmaster's own, every live child's (backends, background workers) and,
through the postmaster's ``cutime``/``cstime``, every child it has reaped, so
a backend that exits between two readings still counts (a reading waits
for the postmaster to reap a backend that has just exited). :func:`process_cpu`
is one process's run time (all its threads), to the nanosecond. A CPU hog of
bench/load.py belongs to neither, so it is never counted. Other servers on
the machine (other jobs' tests) are never counted either.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psycopg

_CLK = os.sysconf("SC_CLK_TCK")

__all__ = ["postmaster_pid", "process_cpu", "server_cpu", "tree_cpu"]


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
        # While the backend lives: field 4, its parent.
        return int(_stat(int(backend[0]))[1])


def server_cpu(postmaster: int, settle: float = 5.0) -> float:
    """CPU seconds of the server: the postmaster, its live children and its reaped ones.

    A backend that has exited but is not yet reaped (a zombie: a bench's
    connection just closed) shows in neither, so the reading waits up to
    ``settle`` seconds for the postmaster to reap every such child.
    """
    deadline = time.monotonic() + settle
    while True:
        children, zombies = 0, False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):  # ended meanwhile
                child = _stat(int(entry))
                if int(child[1]) == postmaster:
                    zombies = zombies or child[0] == b"Z"
                    children += int(child[11]) + int(child[12])
        # utime, stime, cutime, cstime: fields 14-17 of the line.
        own = sum(int(x) for x in _stat(postmaster)[11:15])
        if not zombies or time.monotonic() > deadline:
            return (own + children) / _CLK
        time.sleep(0.01)


def process_cpu(pid: int) -> float:
    """CPU seconds the live threads of process ``pid`` have run (0.0 once it is gone)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):  # the thread ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def tree_cpu(root: int) -> float:
    """CPU seconds of process ``root`` and every live descendant, plus the children
    each of them has reaped (a browser's renderers, say)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += sum(int(x) for x in _stat(pid)[11:15])
    return total / _CLK
