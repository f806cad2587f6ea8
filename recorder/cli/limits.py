"""The limit options of the server commands (``proxy``, ``serve``): sizes, timeouts, connections.

Guarantees: a size is bytes or a number with a unit (B, kB, KiB, MB, MiB, GB,
GiB); anything else, a zero or negative timeout or connection count, is a
usage error (exit status 2) naming the option. Both commands get the same
options with the same defaults (:mod:`recorder.http_limits`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from recorder.http_limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    ServerLimits,
)

__all__ = ["parse_size", "server_limit_options", "size_option"]

F = TypeVar("F", bound=Callable[..., Any])

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A click callback: ``value`` as a number of bytes."""
    text = value.strip().lower().replace(" ", "")
    digits = len(text) - len(text.lstrip("0123456789"))
    number, unit = text[:digits], text[digits:]
    if not number or unit not in _SIZE_UNITS:
        raise click.BadParameter(
            f"wants a size such as 64MiB, 500kB or 1048576 (bytes), got {value!r}", ctx, param
        )
    return int(number) * _SIZE_UNITS[unit]


def size_option(
    name: str, dest: str, default: str, help: str, *, minimum: int = 0
) -> Callable[[F], F]:
    """An option taking a size (``64MiB``) of at least ``minimum``, given in bytes."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> int:
        size = parse_size(ctx, param, value)
        if size < minimum:
            raise click.BadParameter(f"must be at least {minimum} byte(s), got {value!r}")
        return size

    return click.option(
        name, dest, default=default, show_default=True, metavar="SIZE", callback=parse, help=help
    )


def server_limit_options(func: F) -> F:
    """``--max-request-size``, ``--header-timeout``, ``--max-connections``, passed on as
    ``limits`` (a :class:`~recorder.http_limits.ServerLimits`)."""

    @functools.wraps(func)
    def command(
        *args: Any,
        max_request_bytes: int,
        header_timeout: float,
        max_connections: int,
        **kwargs: Any,
    ) -> Any:
        limits = ServerLimits(max_request_bytes, header_timeout, max_connections)
        return func(*args, limits=limits, **kwargs)

    options = [
        size_option(
            "--max-request-size",
            "max_request_bytes",
            "64MiB",
            "Answer 413 to a request whose body is larger (bodies are held whole in memory; "
            "units B, kB, KiB, MB, MiB, GB, GiB).",
        ),
        click.option(
            "--header-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_HEADER_TIMEOUT,
            show_default=True,
            metavar="SECONDS",
            help="Close a connection that has not sent a whole request head this long after "
            "it opened or after its previous response (idle keep-alive connections close "
            "after 5 s); answer 408 to a request whose body stops arriving for as long.",
        ),
        click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_CONNECTIONS,
            show_default=True,
            metavar="N",
            help="Answer 503 and close any connection beyond N open at once.",
        ),
    ]
    wrapped: Any = command
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]
