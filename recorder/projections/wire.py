"""Reading the Responses API wire format: what a request asked for, what a response says.

Guarantees: every helper here is a pure function of one event's parsed JSON
(never of key order, which changed between API versions) and returns
``None`` / empty values for shapes it does not recognise instead of raising,
so a malformed or unexpected recording never stops a projection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CI_ITEM",
    "RESPONSE_EVENTS",
    "TERMINAL_RESPONSE_EVENTS",
    "CodeInterpreterConfig",
    "Endpoint",
    "classify_url",
    "code_interpreter_config",
    "response_object",
    "same_json",
    "usage_numbers",
]

CI_ITEM = "code_interpreter_call"
RESPONSE_EVENTS = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
TERMINAL_RESPONSE_EVENTS = {
    "response.completed": "completed",
    "response.failed": "failed",
    "response.incomplete": "incomplete",
}

_CONTAINER_FILE = re.compile(r"/containers/([^/]+)/files/([^/]+)/content$")
_CONTAINER = re.compile(r"/containers/([^/]+)$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What an exchange's request line addresses."""

    kind: str
    """responses | containers.create | containers.delete | containers.file_content | other"""
    container_id: str | None = None
    file_id: str | None = None


def classify_url(method: str, url: str) -> Endpoint:
    path = urlsplit(url).path.rstrip("/")
    method = method.upper()
    if method == "POST" and path.endswith("/responses"):
        return Endpoint("responses")
    if method == "POST" and path.endswith("/containers"):
        return Endpoint("containers.create")
    m = _CONTAINER_FILE.search(path)
    if m and method == "GET":
        return Endpoint("containers.file_content", m.group(1), m.group(2))
    m = _CONTAINER.search(path)
    if m and method == "DELETE":
        return Endpoint("containers.delete", m.group(1))
    return Endpoint("other")


@dataclass(frozen=True, slots=True)
class CodeInterpreterConfig:
    """The code_interpreter tool as a request (or the response's echo of it) set it."""

    container: str
    """"auto" (OpenAI creates a container) or the explicit container id."""
    memory_limit: str | None
    file_ids: tuple[str, ...] = ()


def code_interpreter_config(tools: Any) -> CodeInterpreterConfig | None:
    """The code_interpreter tool among ``tools`` (a request's or a response's), if any."""
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "code_interpreter":
            continue
        container = tool.get("container")
        if isinstance(container, str):
            return CodeInterpreterConfig(container, None)
        if isinstance(container, dict):
            memory = container.get("memory_limit")
            files = container.get("file_ids")
            return CodeInterpreterConfig(
                "auto" if container.get("type", "auto") == "auto" else str(container.get("type")),
                memory if isinstance(memory, str) else None,
                tuple(f for f in files if isinstance(f, str)) if isinstance(files, list) else (),
            )
        return CodeInterpreterConfig("auto", None)
    return None


def response_object(sse_type: str | None, data: Any) -> dict[str, Any] | None:
    """The response object an SSE lifecycle event or a non-streamed body carries."""
    if not isinstance(data, dict):
        return None
    if sse_type is None:
        return data if data.get("object") == "response" else None
    if sse_type in RESPONSE_EVENTS:
        response = data.get("response")
        return response if isinstance(response, dict) else None
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_numbers(response: dict[str, Any]) -> dict[str, int | None] | None:
    """input, cached input, output (reasoning included) and reasoning tokens, if usage is set."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return None
    input_details = usage.get("input_tokens_details")
    output_details = usage.get("output_tokens_details")
    return {
        "input_tokens": _int(usage.get("input_tokens")),
        "cached_tokens": _int(input_details.get("cached_tokens"))
        if isinstance(input_details, dict)
        else None,
        "output_tokens": _int(usage.get("output_tokens")),
        "reasoning_tokens": _int(output_details.get("reasoning_tokens"))
        if isinstance(output_details, dict)
        else None,
    }


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def int_or_none(value: Any) -> int | None:
    return _int(value)


def same_json(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` encode to the same JSON text (parsed JSON values only).

    Stricter than ``==``, which calls ``1``, ``1.0`` and ``True`` equal, and
    dicts with the same items in another order: keeping either of two values
    for which this holds never changes what is stored.
    """
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return len(a) == len(b) and all(
            ka == kb and same_json(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if type(a) is list:
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float:
        return repr(a) == repr(b)
    return bool(a == b)
