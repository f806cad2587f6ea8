"""One call to get a real ``openai`` client that records everything it does.

Guarantees: the client is the SDK's own ``OpenAI`` / ``AsyncOpenAI`` with the
SDK's own HTTP defaults (timeouts, connection limits, redirects); only its
transport is wrapped by a recording transport. Leaving the ``with`` block
closes the client, then the session (its ``session_close`` is written and
the writer drained), also when the block raises.

Example::

    with codetape.record("sqlite:///runs.db", session="nightly") as client:
        with client.responses.stream(model="gpt-5", input="...", tools=[...]) as stream:
            for event in stream:
                ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2
import openai

from recorder.capture.session import CaptureSession, OnStoreError, WriterMode, session_for
from recorder.capture.transport import AsyncRecordingTransport, RecordingTransport
from recorder.redact import Redactor
from recorder.store.store import EventStore

__all__ = ["record", "record_async"]

# The SDK's own pool limits: passing a transport makes httpx2 ignore `limits`.
_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


def _options(
    labels: dict[str, str] | None,
    metadata: dict[str, Any] | None,
    redactor: Redactor | None,
    redact_headers: Iterable[str],
    redact_json_paths: Iterable[str],
    on_store_error: OnStoreError,
    writer: WriterMode,
) -> dict[str, Any]:
    return {
        "writer": writer,
        "labels": labels,
        "metadata": metadata,
        "redactor": redactor,
        "redact_headers": redact_headers,
        "redact_json_paths": redact_json_paths,
        "on_store_error": on_store_error,
    }


@contextmanager
def record(
    store: EventStore | str | None = None,
    session: str | CaptureSession = "capture",
    *,
    labels: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    redactor: Redactor | None = None,
    redact_headers: Iterable[str] = (),
    redact_json_paths: Iterable[str] = (),
    on_store_error: OnStoreError = "log",
    writer: WriterMode = "auto",
    transport: httpx2.BaseTransport | None = None,
    **client_options: Any,
) -> Iterator[openai.OpenAI]:
    """An ``OpenAI`` client recording into a new session ``session`` of ``store``.

    ``store`` is an open store or a database URL (default: like ``--db``).
    ``transport`` is the real transport to wrap (default: the SDK's HTTP
    transport); ``client_options`` go to ``openai.OpenAI`` (``api_key``,
    ``base_url``, ``max_retries``...). ``writer`` says where the recording
    work runs: by default a writer thread of this process; ``"process"`` in
    this process's recorder child (see :class:`~recorder.capture.session.CaptureSession`).
    """
    options = _options(
        labels, metadata, redactor, redact_headers, redact_json_paths, on_store_error, writer
    )
    capture, owned = session_for(store, session, options)
    try:
        inner = transport if transport is not None else httpx2.HTTPTransport(limits=_LIMITS)
        http_client = openai.DefaultHttpxClient(
            transport=RecordingTransport(inner, session=capture)
        )
        with openai.OpenAI(http_client=http_client, **client_options) as client:
            yield client
    finally:
        if owned:
            capture.close()


@asynccontextmanager
async def record_async(
    store: EventStore | str | None = None,
    session: str | CaptureSession = "capture",
    *,
    labels: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    redactor: Redactor | None = None,
    redact_headers: Iterable[str] = (),
    redact_json_paths: Iterable[str] = (),
    on_store_error: OnStoreError = "log",
    writer: WriterMode = "auto",
    transport: httpx2.AsyncBaseTransport | None = None,
    **client_options: Any,
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The asyncio twin of :func:`record`: an ``AsyncOpenAI`` client recording into a session."""
    options = _options(
        labels, metadata, redactor, redact_headers, redact_json_paths, on_store_error, writer
    )
    # Opening a session reads and writes the database: keep it off the event loop.
    capture, owned = await asyncio.to_thread(session_for, store, session, options)
    try:
        inner = transport if transport is not None else httpx2.AsyncHTTPTransport(limits=_LIMITS)
        http_client = openai.DefaultAsyncHttpxClient(
            transport=AsyncRecordingTransport(inner, session=capture)
        )
        async with openai.AsyncOpenAI(http_client=http_client, **client_options) as client:
            yield client
    finally:
        if owned:
            await asyncio.to_thread(capture.close)
