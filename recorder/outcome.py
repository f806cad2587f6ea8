"""How an exchange ended, decided the same way for live capture and for imports.

Guarantees: a stream's outcome follows its last terminal event the client saw
(``response.completed`` → completed, ``response.failed`` or ``error`` →
failed, ``response.incomplete`` → incomplete); a stream that stops without one
is interrupted, also when the terminal event was in a last frame cut off
before its blank line (the client drops that frame); an HTTP status of 400 or
more is an HTTP error whatever the body says. The reason is the API's own
message where it gave one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from recorder.events import Outcome

__all__ = ["StreamOutcome", "outcome_for_body"]

_TERMINAL = {
    "response.completed": Outcome.COMPLETED,
    "response.failed": Outcome.FAILED,
    "response.incomplete": Outcome.INCOMPLETE,
    "error": Outcome.FAILED,
}


def _error_message(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("code")
        return str(message) if message else None
    response = data.get("response")
    if isinstance(response, dict):
        if isinstance(response.get("error"), dict):
            return _error_message(response)
        details = response.get("incomplete_details")
        if isinstance(details, dict) and details.get("reason"):
            return str(details["reason"])
    if data.get("type") == "error" and data.get("message"):
        return str(data["message"])
    details = data.get("incomplete_details")
    if isinstance(details, dict) and details.get("reason"):
        return str(details["reason"])
    return None


@dataclass(slots=True)
class StreamOutcome:
    """Folds the SSE events of one stream into its outcome.

    It is given only the events the client saw: a last frame cut off before
    its blank line is dropped by the client (:attr:`recorder.sse.SSEFrame.cut`)
    and goes to :meth:`cut` instead, so a stream whose ``response.completed``
    was cut off is interrupted, as the client saw it.
    """

    outcome: Outcome | None = None
    reason: str | None = None
    cut_type: str | None = None
    """The type of a cut-off last frame, when there was one (``""`` if unknown)."""

    def observe(self, event_type: str | None, data: Any) -> None:
        terminal = _TERMINAL.get(event_type or "")
        if terminal is None:
            return
        # An `error` event is followed by `response.failed`; keep the first reason.
        if self.outcome is not Outcome.FAILED or terminal is not Outcome.FAILED:
            self.outcome = terminal
        self.reason = self.reason or _error_message(data)

    def cut(self, event_type: str | None) -> None:
        """The stream ended inside a frame of ``event_type``, which the client dropped."""
        self.cut_type = event_type or ""

    def result(self) -> tuple[Outcome, str | None]:
        if self.outcome is None:
            if self.cut_type is not None:
                what = f"a {self.cut_type} event" if self.cut_type else "an event"
                return Outcome.INTERRUPTED, (
                    f"stream ended without a terminal event: it stopped inside {what} "
                    "that had no blank line after it, which the client drops"
                )
            return Outcome.INTERRUPTED, "stream ended without a terminal event"
        return self.outcome, self.reason


def outcome_for_body(status: int | None, body: bytes) -> tuple[Outcome, str | None]:
    """Outcome of a non-streamed exchange from its status and JSON body."""
    data: Any = None
    if body[:1] in (b"{", b"["):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
    if status is not None and status >= 400:
        return Outcome.HTTP_ERROR, _error_message(data) or f"HTTP {status}"
    if isinstance(data, dict) and data.get("object") == "response":
        state = data.get("status")
        if state == "failed":
            return Outcome.FAILED, _error_message(data)
        if state == "incomplete":
            return Outcome.INCOMPLETE, _error_message(data)
    return Outcome.COMPLETED, None
