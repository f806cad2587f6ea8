"""Record modes, and :class:`Tape`: an OpenAI client bound to one tape file.

Guarantees:

* :class:`RecordMode` is a ``str`` enum; an unknown value raises
  :class:`InvalidRecordMode` listing the valid ones.
* ``none`` (the default) only replays: the tape must exist, and no real
  transport is ever created or called, so no network connection can be
  opened. A request the tape lacks raises :class:`~replay.matching.NoMatch`.
* ``once`` replays an existing tape exactly like ``none``; when the tape does
  not exist it records every request through the real transport.
* ``new_episodes`` replays what matches and sends the rest through the real
  transport, recording them; the new exchanges are appended to the tape as a
  new session, the old lines are kept byte for byte.
* ``all`` sends every request through the real transport and rewrites the tape.
* Recording goes through :class:`recorder.capture.RecordingTransport` into a
  temporary SQLite store, redacted as any recording is (``redact_headers``
  and ``redact_json_paths`` add to the defaults); replaying the same code
  matches, since what was redacted is left out of matching.
  :meth:`Tape.close` closes the capture session and exports it to the tape
  atomically (:func:`recorder.tape.write_tape`), so a run that dies mid-way
  leaves the previous tape untouched. A recording run that made no request
  leaves the tape as it was.
* A tape to replay is refused, in one line, when it is empty or cut short
  (a session never closed, an exchange never ended), as import refuses it.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2
from openai import AsyncOpenAI, OpenAI

from recorder.errors import CodetapeError
from recorder.events import Event, StoredEvent
from recorder.tape import check_whole, read_tape, write_tape
from replay.matching import MatchOptions
from replay.source import Exchange, Recording, exchanges_from_events
from replay.transport import AsyncReplayTransport, Pace, ReplayTransport

__all__ = ["InvalidRecordMode", "RecordMode", "Tape", "TapeMissing"]

# A client bound to a replayed tape needs some key: the SDK refuses to start
# without one, and the recorded request headers had theirs redacted anyway.
REPLAY_API_KEY = "codetape-replay"


class InvalidRecordMode(CodetapeError, ValueError):
    """A record mode that does not exist."""


class TapeMissing(CodetapeError):
    """Replay-only mode and the tape does not exist."""


class RecordMode(enum.StrEnum):
    """When a :class:`Tape` records instead of replaying."""

    NONE = "none"
    ONCE = "once"
    NEW_EPISODES = "new_episodes"
    ALL = "all"

    @classmethod
    def _missing_(cls, value: object) -> RecordMode:
        valid = ", ".join(m.value for m in cls)
        raise InvalidRecordMode(f"unknown record mode {value!r}: choose one of {valid}")


class Tape:
    """Clients for one tape under one record mode (see the module docstring).

    ``real`` / ``async_real`` are the transports a recording mode sends
    requests through (default: new ``httpx2.HTTPTransport`` /
    ``AsyncHTTPTransport``, created only when a request must really be sent).
    """

    def __init__(
        self,
        path: Path | str,
        mode: RecordMode | str = RecordMode.NONE,
        *,
        match: MatchOptions | None = None,
        pace: Pace | str = Pace.INSTANT,
        speed: float = 1.0,
        real: httpx2.BaseTransport | None = None,
        async_real: httpx2.AsyncBaseTransport | None = None,
        name: str | None = None,
        redact_headers: Iterable[str] = (),
        redact_json_paths: Iterable[str] = (),
    ) -> None:
        self.path = Path(path)
        self.redact_headers = tuple(redact_headers)
        self.redact_json_paths = tuple(redact_json_paths)
        self.mode = RecordMode(mode)
        self.match = match or MatchOptions()
        self.pace = pace
        self.speed = speed
        self.name = name or Path(self.path.name.removesuffix(".zst")).stem
        self._real = real
        self._async_real = async_real
        existed = self.path.is_file()
        if self.mode is RecordMode.NONE and not existed:
            raise TapeMissing(
                f"tape {self.path} does not exist and record mode is 'none' "
                "(record it with mode 'once')"
            )
        self.replays = existed and self.mode in (
            RecordMode.NONE,
            RecordMode.ONCE,
            RecordMode.NEW_EPISODES,
        )
        """Whether recorded exchanges are served."""
        self.records = self.mode is not RecordMode.NONE and not (
            existed and self.mode is RecordMode.ONCE
        )
        """Whether requests may go to the real transport (and get recorded)."""
        self._old_events: list[Event] = read_tape(self.path) if self.replays else []
        # A cut tape would replay as a shorter recording passed off as the whole one.
        check_whole(self.path, self._old_events, "Record it again with record mode 'all'")
        self.recording = Recording(str(self.path), tuple(exchanges_from_events(self._old_events)))
        self._tmpdir: str | None = None
        self._capture: Any = None
        self._transport: ReplayTransport | None = None
        self._async_transport: AsyncReplayTransport | None = None
        self._clients: list[OpenAI] = []
        self._async_clients: list[AsyncOpenAI] = []
        self._closed = False

    # -- transports ------------------------------------------------------------------

    def _capture_session(self) -> Any:
        """The one capture session this tape records into (sync and async share it)."""
        if self._capture is None:
            from recorder.capture import CaptureSession
            from recorder.store import migrate

            self._tmpdir = tempfile.mkdtemp(prefix="codetape-record-")
            url = f"sqlite:///{Path(self._tmpdir) / 'record.db'}"
            migrate.upgrade(url)
            self._capture = CaptureSession(
                url,
                self.name,
                labels={"tape": self.path.name},
                on_store_error="raise",
                redact_headers=self.redact_headers,
                redact_json_paths=self.redact_json_paths,
            )
        return self._capture

    def transport(self) -> httpx2.BaseTransport:
        """The sync transport every client of this tape uses."""
        if self._transport is None:
            fallback: httpx2.BaseTransport | None = None
            if self.records:
                from recorder.capture import RecordingTransport

                real = self._real if self._real is not None else httpx2.HTTPTransport()
                fallback = RecordingTransport(real, session=self._capture_session())
            self._transport = ReplayTransport(
                self.recording if self.replays else (),
                match=self.match,
                pace=self.pace,
                speed=self.speed,
                fallback=fallback,
            )
        return self._transport

    def async_transport(self) -> httpx2.AsyncBaseTransport:
        """The async transport every async client of this tape uses."""
        if self._async_transport is None:
            fallback: httpx2.AsyncBaseTransport | None = None
            if self.records:
                from recorder.capture import AsyncRecordingTransport

                real = (
                    self._async_real
                    if self._async_real is not None
                    else httpx2.AsyncHTTPTransport()
                )
                fallback = AsyncRecordingTransport(real, session=self._capture_session())
            self._async_transport = AsyncReplayTransport(
                self.recording if self.replays else (),
                match=self.match,
                pace=self.pace,
                speed=self.speed,
                fallback=fallback,
            )
        return self._async_transport

    # -- clients ---------------------------------------------------------------------

    def _client_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self.records:
            kwargs.setdefault("api_key", REPLAY_API_KEY)
        return kwargs

    def client(self, **kwargs: Any) -> OpenAI:
        """An ``OpenAI`` client bound to this tape (closed by :meth:`close`)."""
        http = httpx2.Client(transport=self.transport())
        client = OpenAI(http_client=http, **self._client_kwargs(kwargs))
        self._clients.append(client)
        return client

    def async_client(self, **kwargs: Any) -> AsyncOpenAI:
        """An ``AsyncOpenAI`` client bound to this tape."""
        http = httpx2.AsyncClient(transport=self.async_transport())
        client = AsyncOpenAI(http_client=http, **self._client_kwargs(kwargs))
        self._async_clients.append(client)
        return client

    # -- results ---------------------------------------------------------------------

    def unplayed(self) -> list[Exchange]:
        """Recorded exchanges not requested by any client of this tape."""
        played: set[str] = set()
        for transport in (self._transport, self._async_transport):
            if transport is not None:
                played.update(x.id for x in transport.served)
        return [x for x in self.recording.exchanges if x.id not in played]

    @property
    def recorded(self) -> int:
        """Requests sent through the real transport so far."""
        return sum(t.forwarded for t in (self._transport, self._async_transport) if t is not None)

    def close(self) -> None:
        """Close the clients; in a recording mode, write what was recorded to the tape."""
        if self._closed:
            return
        self._closed = True
        try:
            # A client closes its transport, which closes the recorder and the
            # real transport behind it; closing the transport again is harmless
            # and covers a transport used without a client.
            for client in self._clients:
                client.close()
            if self._transport is not None:
                self._transport.close()
            if self._capture is not None:
                self._capture.close()
                self._write()
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def aclose(self) -> None:
        """Close the async clients, then everything else (see :meth:`close`)."""
        for client in self._async_clients:
            await client.close()
        self._async_clients.clear()
        self.close()

    def _write(self) -> None:
        from recorder.store.store import EventStore

        capture = self._capture
        with EventStore.open(capture.url) as store:
            new = list(store.session_events(capture.id))
        if not any(ev.exchange_id is not None for ev in new):
            return  # nothing was recorded: keep the tape as it was
        events: Iterable[Event | StoredEvent] = new
        if self.mode is RecordMode.NEW_EPISODES and self._old_events:
            events = [*self._old_events, *new]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_tape(events, self.path)

    def __enter__(self) -> Tape:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Tape:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
