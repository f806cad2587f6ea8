"""``codetape demo``: record a bundled real Code Interpreter session, then show every report.

Guarantees:

* No API key, no network: the session is recorded by the real ``openai``
  SDK (``openai.OpenAI`` with a dummy key, through :func:`recorder.client.record`)
  whose only transport is a :class:`~recorder.capture.RecordingTransport`
  around a :class:`~replay.transport.ReplayTransport` serving the bundled tape.
  The SDK issues the tape's recorded request(s) through its own typed calls
  and consumes the stream; the recorder stores what the SDK received. The
  base URL is the SDK's default, set explicitly so that ``OPENAI_BASE_URL``
  cannot send the demo elsewhere; the replay answers only from the tape and
  has no fallback, so no request can reach a network.
* The recorded session's SSE bytes are the bundled tape's, byte for byte.
* Pace: the tape's original timing when it has one; imported recordings (such
  as the bundled one) have none, so they replay instantly, and the arrival
  times in the new session are this replay's, not the original's. The session
  says so in ``metadata.demo`` (``original_timing``, ``pace``).
* Re-runnable: when the database already holds a complete demo session whose
  SSE bytes are the bundled tape's, :func:`record` reuses the latest such
  session instead of recording another (so reports such as ``codetape cost``
  do not count the demo twice); otherwise (first run, an interrupted earlier
  run, a newer bundled tape) it records a new one.
* The tape ships inside the package (``recorder/projections/data``), so the
  demo works from an installed wheel.
* The session's HTML report (:func:`write_report`) goes beside the database
  when that is a SQLite file, else into the user data directory, unless a
  path is given; it is written atomically like every report.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder.events import EventKind
from recorder.store.store import EventStore, SessionInfo

if TYPE_CHECKING:
    from collections.abc import Iterable

    from openai import OpenAI

    from recorder.events import Event, StoredEvent
    from recorder.report import WrittenReport
    from replay.source import Exchange

__all__ = [
    "DEMO_API_KEY",
    "DEMO_LABELS",
    "DEMO_REPORT",
    "DEMO_SESSION_NAME",
    "DEMO_TAPE",
    "SDK_BASE_URL",
    "DemoRecording",
    "demo_tape_path",
    "find_recorded",
    "record",
    "report_path",
    "sse_bytes",
    "write_report",
]

DEMO_TAPE = "demo_code_interpreter.jsonl"
DEMO_SESSION_NAME = "demo: code interpreter (replayed pydantic-ai recording)"
DEMO_LABELS = {"demo": "true", "source": "replay"}
DEMO_API_KEY = "demo-no-key"
DEMO_REPORT = "codetape-demo-report.html"
SDK_BASE_URL = "https://api.openai.com/v1"
"""The ``openai`` SDK's default base URL, which the bundled tape was recorded against."""

OnEvent = Callable[[Any], None]
"""Called with each typed stream event the SDK yields, as it arrives."""


def demo_tape_path() -> Path:
    """The bundled tape, from a checkout or an installed wheel."""
    resource = resources.files("recorder.projections").joinpath("data", DEMO_TAPE)
    return Path(str(resource))


@dataclass(frozen=True, slots=True)
class DemoRecording:
    """What :func:`record` did."""

    session_id: str
    new: bool
    """False when an earlier demo session was reused."""
    original_timing: bool
    """Whether the tape carries arrival times (then it was replayed at its original pace)."""
    pace: str
    """The replay pace that recorded the session: ``original`` or ``instant``."""


def sse_bytes(events: Iterable[Event | StoredEvent]) -> bytes:
    """The payloads of the ``sse`` events among ``events``, concatenated in order."""
    return b"".join(ev.payload for ev in events if ev.kind is EventKind.SSE)


def _tape_sse_bytes() -> bytes:
    from recorder.tape import read_tape

    return sse_bytes(read_tape(demo_tape_path()))


def _demo_facts(info: SessionInfo) -> tuple[bool, str]:
    demo = info.metadata.get("demo")
    if not isinstance(demo, dict):
        return False, "instant"
    return bool(demo.get("original_timing")), str(demo.get("pace", "instant"))


def find_recorded(store: EventStore) -> SessionInfo | None:
    """The latest complete demo session whose SSE bytes are the bundled tape's, if any."""
    expected: bytes | None = None
    for info in reversed(store.sessions()):
        if not info.closed or any(info.labels.get(k) != v for k, v in DEMO_LABELS.items()):
            continue
        exchanges = store.exchanges(info.id)
        if not exchanges or any(x.outcome != "completed" for x in exchanges):
            continue
        if expected is None:
            expected = _tape_sse_bytes()
        if sse_bytes(store.session_events(info.id)) == expected:
            return info
    return None


def record(store: EventStore, on_event: OnEvent | None = None) -> DemoRecording:
    """Put a demo session into ``store`` (or find the one recorded before); say which.

    ``on_event`` sees each stream event the SDK yields while recording.
    """
    found = find_recorded(store)
    if found is not None:
        original_timing, pace = _demo_facts(found)
        return DemoRecording(found.id, False, original_timing, pace)
    return _replay_into(store, on_event)


def _replay_into(store: EventStore, on_event: OnEvent | None) -> DemoRecording:
    # The SDK and the replay are imported here: the CLI imports this module lazily anyway.
    from recorder.capture.session import CaptureSession
    from recorder.client import record as recording_client
    from replay.source import load_tape
    from replay.transport import Pace, ReplayTransport

    recording = load_tape(demo_tape_path())
    tape_session = recording.exchanges[0].session_id if recording.exchanges else None
    original_timing = any(
        x.head_offset_ns is not None or any(c.offset_ns is not None for c in x.chunks)
        for x in recording.exchanges
    )
    pace = Pace.ORIGINAL if original_timing else Pace.INSTANT
    replay = ReplayTransport(recording, pace=pace)
    capture = CaptureSession(
        store,
        DEMO_SESSION_NAME,
        labels=dict(DEMO_LABELS),
        metadata={
            "demo": {
                "tape": DEMO_TAPE,
                "tape_session": tape_session,
                "original_timing": original_timing,
                "pace": pace.value,
            }
        },
        # A demo that could not store what it showed would mislead: fail instead.
        on_store_error="raise",
    )
    try:
        with recording_client(
            store,
            capture,
            transport=replay,
            api_key=DEMO_API_KEY,
            base_url=SDK_BASE_URL,
            max_retries=0,
        ) as client:
            for exchange in recording.exchanges:
                _issue(client, exchange, on_event)
        replay.check_all_played()
    finally:
        capture.close()
    return DemoRecording(capture.id, True, original_timing, pace.value)


def _issue(client: OpenAI, exchange: Exchange, on_event: OnEvent | None) -> None:
    """Send ``exchange``'s request through the SDK; stream events go to ``on_event`` live."""
    from replay.reissue import reissue, responses_kwargs

    if not (exchange.method == "POST" and exchange.path.endswith("/responses")):
        reissue(client, exchange)
        return
    body = responses_kwargs(exchange)
    if not body.pop("stream", False):
        client.responses.create(**_typed(client.responses.create, body))
        return
    kwargs = _typed(client.responses.create, body)
    with client.responses.create(stream=True, **kwargs) as stream:
        for event in stream:
            if on_event is not None:
                on_event(event)


def _typed(method: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as keyword arguments of ``method``; fields it does not know go in ``extra_body``."""
    known = set(inspect.signature(method).parameters)
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def report_path(store: EventStore) -> Path:
    """Where the demo's report goes: beside a SQLite file database, else the user data dir."""
    import sqlalchemy as sa

    from recorder.config import default_sqlite_path

    url = sa.make_url(store.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent / DEMO_REPORT
    return default_sqlite_path().parent / DEMO_REPORT


def write_report(store: EventStore, session_id: str, path: Path | None = None) -> WrittenReport:
    """Write the demo session's HTML report (to :func:`report_path` unless ``path`` is given)."""
    from recorder.report import write_report as write

    target = path if path is not None else report_path(store)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write(store, [session_id], target)
