"""Issue a recorded request again through the OpenAI SDK's typed methods.

Used by the fidelity tests, the pytest plugin's own tests and the benchmark
to drive the real SDK with exactly the requests a tape holds.

Guarantees: :func:`reissue` (sync) and :func:`areissue` (async) call the SDK
method that produces the recorded request (``responses.create``, with
``stream`` as recorded; ``files.create``; ``containers.create`` /
``delete``; ``containers.files.content.retrieve``), passing the recorded
JSON body's fields as keyword arguments (fields the method does not know go
through ``extra_body``), and return what the SDK returned, fully consumed:
the list of stream events, the parsed object, or the downloaded bytes. An
HTTP error the SDK raises is returned as an :class:`ApiError` value, and an
``error`` event mid-stream ends the event list with one, so that two runs
compare equal. A request the source did not keep (``request_known``
false) is sent with a placeholder model and input, which replay matching
accepts for such exchanges.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI, OpenAI

from recorder.errors import CodetapeError
from replay.matching import MatchOptions, RequestView
from replay.source import Exchange, json_body

__all__ = ["ApiError", "areissue", "reissue", "responses_kwargs", "supported"]

_CONTAINER_FILE = re.compile(r"/containers/([^/]+)/files/([^/]+)/content$")
_CONTAINER = re.compile(r"/containers/([^/]+)$")
_PLACEHOLDER = {"model": "codetape-unknown-request", "input": "(not recorded)"}


@dataclass(frozen=True, slots=True)
class ApiError:
    """An error the SDK raised (an HTTP error, or an ``error`` event mid-stream)."""

    type: str
    status: int | None
    message: str
    body: Any

    @classmethod
    def of(cls, exc: openai.APIError) -> ApiError:
        return cls(type(exc).__name__, getattr(exc, "status_code", None), exc.message, exc.body)


def _split(method: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
    known = set(inspect.signature(method).parameters)
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def responses_kwargs(exchange: Exchange) -> dict[str, Any]:
    """The ``responses.create`` keyword arguments that produce the recorded request."""
    body = json_body(exchange.request_body) if exchange.request_known else None
    if not isinstance(body, dict):
        body = dict(_PLACEHOLDER)
        if exchange.streamed:
            body["stream"] = True
    return body


def supported(exchange: Exchange) -> bool:
    """Whether :func:`reissue` knows the SDK call for this exchange."""
    path = exchange.path
    return (
        (exchange.method == "POST" and path.endswith(("/responses", "/files", "/containers")))
        or (exchange.method == "DELETE" and _CONTAINER.search(path) is not None)
        or (exchange.method == "GET" and _CONTAINER_FILE.search(path) is not None)
    )


def _upload(exchange: Exchange) -> dict[str, Any]:
    view = RequestView.of(
        exchange.method,
        exchange.url,
        exchange.request_headers,
        exchange.request_body,
        MatchOptions(),
    )
    fields: dict[str, Any] = {}
    for part in view.body or []:
        content = part["content"]
        if part["filename"] is not None:
            data = content.encode() if isinstance(content, str) else content
            fields[part["name"]] = (part["filename"], data)
        else:
            fields[part["name"]] = content
    return fields


def _unsupported(exchange: Exchange) -> CodetapeError:
    return CodetapeError(f"no SDK call known for {exchange.describe()}")


def reissue(client: OpenAI, exchange: Exchange) -> Any:
    """Send ``exchange``'s request through ``client`` and consume the answer."""
    try:
        return _reissue(client, exchange)
    except openai.APIStatusError as exc:
        return ApiError.of(exc)


def _reissue(client: OpenAI, exchange: Exchange) -> Any:
    path = exchange.path
    if exchange.method == "POST" and path.endswith("/responses"):
        kwargs = _split(client.responses.create, responses_kwargs(exchange))
        if kwargs.get("stream"):
            events: list[Any] = []
            with client.responses.create(**kwargs) as stream:
                try:
                    events.extend(stream)
                except openai.APIError as exc:  # an `error` event: keep what came before
                    events.append(ApiError.of(exc))
            return events
        return client.responses.create(**kwargs)
    if exchange.method == "POST" and path.endswith("/files"):
        return client.files.create(**_upload(exchange))
    if exchange.method == "POST" and path.endswith("/containers"):
        body = json_body(exchange.request_body) or {}
        return client.containers.create(**_split(client.containers.create, body))
    if exchange.method == "DELETE" and (m := _CONTAINER.search(path)):
        return client.containers.delete(m.group(1))
    if exchange.method == "GET" and (m := _CONTAINER_FILE.search(path)):
        return client.containers.files.content.retrieve(m.group(2), container_id=m.group(1)).read()
    raise _unsupported(exchange)


async def areissue(client: AsyncOpenAI, exchange: Exchange) -> Any:
    """Async twin of :func:`reissue`."""
    try:
        return await _areissue(client, exchange)
    except openai.APIStatusError as exc:
        return ApiError.of(exc)


async def _areissue(client: AsyncOpenAI, exchange: Exchange) -> Any:
    path = exchange.path
    if exchange.method == "POST" and path.endswith("/responses"):
        kwargs = _split(client.responses.create, responses_kwargs(exchange))
        if kwargs.get("stream"):
            events: list[Any] = []
            stream = await client.responses.create(**kwargs)
            async with stream:
                try:
                    async for event in stream:
                        events.append(event)
                except openai.APIError as exc:  # an `error` event: keep what came before
                    events.append(ApiError.of(exc))
            return events
        return await client.responses.create(**kwargs)
    if exchange.method == "POST" and path.endswith("/files"):
        return await client.files.create(**_upload(exchange))
    if exchange.method == "POST" and path.endswith("/containers"):
        body = json_body(exchange.request_body) or {}
        return await client.containers.create(**_split(client.containers.create, body))
    if exchange.method == "DELETE" and (m := _CONTAINER.search(path)):
        return await client.containers.delete(m.group(1))
    if exchange.method == "GET" and (m := _CONTAINER_FILE.search(path)):
        content = await client.containers.files.content.retrieve(
            m.group(2), container_id=m.group(1)
        )
        return content.read()
    raise _unsupported(exchange)
