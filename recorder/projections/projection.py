"""The projection base class, and the registry of projections by name.

Guarantees: a :class:`Projection` subclass declares its name, code version,
tables and the SSE event types it reads; the runner hands it one batch at a
time (``start`` with the stored state, ``apply`` per event, ``finish`` writes
rows). :func:`resolve` returns the registered classes for the names given, or
raises :class:`UnknownProjection` naming the ones that exist.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from recorder.errors import CodetapeError
from recorder.projections.log_event import DeltaHandler, Parsed, Row

__all__ = ["Projection", "UnknownProjection", "resolve"]


class UnknownProjection(CodetapeError):
    """A projection name that does not exist."""


class Projection(abc.ABC):
    """One read model: its name, code version, tables and event handler."""

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]
    """Tables this projection owns: emptied on rebuild."""
    shared: ClassVar[str | None] = None
    """Projections with the same ``shared`` key compute the same state from the
    same events; when they start a batch with identical state, the work is done
    once (:meth:`adopt`)."""
    sse_types: ClassVar[frozenset[str] | None] = None
    """The SSE event types :meth:`apply` reads (``None``: all); other SSE events
    are not passed to it. Non-SSE events always are."""

    def __init__(self, conn: Connection, state: dict[str, Any]) -> None:
        self.conn = conn
        self.state = state

    @abc.abstractmethod
    def apply(self, pe: Parsed) -> None:
        """Consume one event (in global position order)."""

    def routes(self) -> dict[str, Callable[[Parsed], None]]:
        """The handler of each SSE event type in :attr:`sse_types` (``apply`` by default).

        The runner calls a route's handler instead of :meth:`apply` for SSE
        events of that type, so a projection can skip re-dispatching its most
        frequent events; the handler must do exactly what ``apply`` would.
        """
        return dict.fromkeys(self.sse_types or (), self.apply)

    def delta_routes(self) -> dict[str, DeltaHandler]:
        """Handlers of delta event types that read nothing but ``item_id`` and ``delta``.

        The runner calls such a handler instead of any route or :meth:`apply`
        for that type, with the row and the event's
        :meth:`LogEvent.delta_fields`, worked out once for every projection
        and without making a :class:`LogEvent`: deltas are most of the log.
        The handler must do exactly what ``apply`` would.
        """
        return {}

    def prefetch(self, events: Sequence[Row]) -> None:  # noqa: B027 - optional hook
        """Before :meth:`apply` sees ``events``: a chance to read stored rows in bulk.

        Only a cache: what it loads must be what per-event lookups would read.
        """

    def adopt(self, other: Projection) -> None:
        """Take the applied state of ``other`` (same ``shared`` key, same start state)."""
        raise NotImplementedError

    @abc.abstractmethod
    def finish(self) -> None:
        """Write this batch's rows on ``self.conn``; ``self.state`` is stored after."""


def _registry() -> dict[str, type[Projection]]:
    from recorder.projections import ALL

    return {p.name: p for p in ALL}


def resolve(names: Iterable[str] | None) -> list[type[Projection]]:
    """Projection classes by name (all of them for ``None``)."""
    registry = _registry()
    if names is None:
        return list(registry.values())
    result = []
    for name in names:
        if name not in registry:
            raise UnknownProjection(
                f"no projection named {name!r}: choose from {', '.join(registry)}"
            )
        result.append(registry[name])
    return result
