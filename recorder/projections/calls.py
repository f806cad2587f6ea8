"""Following code interpreter calls through an exchange's events.

Guarantees: a call is keyed by (exchange id, item id); its fields only ever
come from recorded events (an arrival offset is ``None`` when the recording
has no timing, as with imports from other tools, never a guess); a call that
is still open when its response fails, ends incomplete or its exchange ends
gets the terminal status ``failed`` / ``incomplete``. All state lives in a
JSON-able dict, so a projection can store it between batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from recorder.events import EventKind
from recorder.projections.log_event import DeltaHandler, Parsed, Row
from recorder.projections.projection import Projection
from recorder.projections.wire import (
    CI_ITEM,
    RESPONSE_EVENTS,
    TERMINAL_RESPONSE_EVENTS,
    int_or_none,
    response_object,
    same_json,
    str_or_none,
)

__all__ = ["SSE_TYPES", "TERMINAL", "CallTracker", "CallsProjection"]

TERMINAL = frozenset({"completed", "failed", "incomplete"})
_OFFSETS = ("started", "in_progress", "first_delta", "code_done", "interpreting", "completed")


def _new_call(call_id: str, pe: Parsed, streamed: bool) -> dict[str, Any]:
    return {
        "id": call_id,
        "container_id": None,
        "output_index": None,
        "status": "in_progress",
        "streamed": streamed,
        "first_position": pe.position,
        "last_position": pe.position,
        "positions": [],
        "started_at_ns": pe.recorded_at_ns,
        "finished_at_ns": None,
        "off": dict.fromkeys((*_OFFSETS, "item_done")),
        "deltas": 0,
        "code": "",
        "code_final": False,
        "outputs": None,
    }


class CallTracker:
    """Per-exchange code interpreter call state, advanced one event at a time.

    ``state`` is ``{"x": {exchange_id: {...}}}``; exchanges leave it when they end.
    ``touched`` maps (exchange id, call id) to (exchange, call) for every call
    an event changed since the tracker was made.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.exchanges: dict[str, dict[str, Any]] = state.setdefault("x", {})
        self.touched: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._last: dict[str, Any] | None = None
        """The call ``touched`` got last: touching it again changes nothing there."""

    def _touch(self, xid: str, x: dict[str, Any], call: dict[str, Any], pe: Parsed) -> None:
        if pe.position > call["last_position"]:
            call["last_position"] = pe.position
        if call is not self._last:
            self.touched[(xid, call["id"])] = (x, call)
            self._last = call

    def _mark(self, xid: str, x: dict[str, Any], call: dict[str, Any], pe: Parsed) -> None:
        """A non-delta event that vouches for this call: remember its position."""
        if pe.position not in call["positions"]:
            call["positions"].append(pe.position)
        self._touch(xid, x, call, pe)

    def apply(self, ev: Parsed) -> None:
        xid = ev.exchange_id
        if xid is None:
            return
        kind = ev.kind
        if kind is EventKind.REQUEST:
            self.exchanges[xid] = {
                "sid": ev.session_id,
                "rid": None,
                "calls": {},
                "created_at": None,
                "completed_at": None,
            }
            return
        x = self.exchanges.get(xid)
        if x is None:
            return
        if kind is EventKind.SSE:
            self._sse(xid, x, ev)
        elif kind is EventKind.BODY:
            response = response_object(None, ev.data)
            if response is not None:
                self._response(xid, x, ev, response, streamed=False)
        elif kind is EventKind.EXCHANGE_END:
            outcome = ev.meta.get("outcome")
            status = "failed" if outcome == "failed" else "incomplete"
            for call in x["calls"].values():
                if call["status"] not in TERMINAL:
                    call["status"] = status
                    self._mark(xid, x, call, ev)
            del self.exchanges[xid]

    def code_delta(self, row: Row, item_id: str | None, delta: str | None) -> None:
        """``apply`` for a ``response.code_interpreter_call_code.delta`` frame, from its fields."""
        xid = row[2]
        if xid is not None:
            x = self.exchanges.get(xid)
            if x is not None:
                self._code_delta(xid, x, row[0], row[5], item_id, delta)

    def _code_delta(
        self,
        xid: str,
        x: dict[str, Any],
        position: int,
        offset_ns: int | None,
        item_id: str | None,
        delta: str | None,
    ) -> None:
        call = x["calls"].get(item_id) if item_id is not None else None
        if call is None:
            return
        call["deltas"] += 1
        off = call["off"]
        if off["first_delta"] is None:
            off["first_delta"] = offset_ns
        if delta is not None and not call["code_final"]:
            call["code"] += delta
        # _touch, inline: code deltas are most of a call's events.
        if position > call["last_position"]:
            call["last_position"] = position
        if call is not self._last:
            self.touched[(xid, call["id"])] = (x, call)
            self._last = call

    def _call(self, x: dict[str, Any], data: dict[str, Any]) -> dict[str, Any] | None:
        item_id = data.get("item_id")
        return x["calls"].get(item_id) if isinstance(item_id, str) else None

    def _sse(self, xid: str, x: dict[str, Any], pe: Parsed) -> None:
        t = pe.sse_type
        if t is None or not (t.startswith("response.code_interpreter") or t in _ITEM_OR_RESPONSE):
            return
        if t == "response.code_interpreter_call_code.delta":
            self._code_delta(xid, x, pe.position, pe.offset_ns, *pe.delta_fields())
            return
        data = pe.data
        if not isinstance(data, dict):
            return
        off = pe.offset_ns
        if t in RESPONSE_EVENTS:
            response = response_object(t, data)
            if response is not None:
                self._response(xid, x, pe, response, streamed=True, terminal=t)
            return
        if t == "response.output_item.added" or t == "response.output_item.done":
            item = data.get("item")
            if not isinstance(item, dict) or item.get("type") != CI_ITEM:
                return
            call_id = item.get("id")
            if not isinstance(call_id, str):
                return
            call = x["calls"].get(call_id)
            if call is None:
                call = x["calls"][call_id] = _new_call(call_id, pe, streamed=True)
                call["off"]["started"] = off
            call["output_index"] = int_or_none(data.get("output_index"))
            self._merge_item(call, item)
            if t == "response.output_item.done":
                call["off"]["item_done"] = off
                call["finished_at_ns"] = pe.recorded_at_ns
                status = item.get("status")
                call["status"] = status if status in TERMINAL else "completed"
            self._mark(xid, x, call, pe)
            return
        call = self._call(x, data)
        if call is None:
            return
        if t == "response.code_interpreter_call_code.done":
            call["off"]["code_done"] = off
            code = data.get("code")
            if isinstance(code, str):
                call["code"], call["code_final"] = code, True
        elif t == "response.code_interpreter_call.in_progress":
            call["off"]["in_progress"] = off
        elif t == "response.code_interpreter_call.interpreting":
            call["off"]["interpreting"] = off
            if call["status"] not in TERMINAL:
                call["status"] = "interpreting"
        elif t == "response.code_interpreter_call.completed":
            call["off"]["completed"] = off
            if call["finished_at_ns"] is None:
                call["finished_at_ns"] = pe.recorded_at_ns
            if call["status"] not in TERMINAL:
                call["status"] = "completed"
        else:
            return
        self._mark(xid, x, call, pe)

    @staticmethod
    def _merge_item(call: dict[str, Any], item: dict[str, Any]) -> None:
        container = str_or_none(item.get("container_id"))
        if container:
            call["container_id"] = container
        code = item.get("code")
        if isinstance(code, str) and code:
            call["code"], call["code_final"] = code, True
        outputs = item.get("outputs")
        if (
            isinstance(outputs, list)
            and (outputs or call["outputs"] is None)
            and not same_json(outputs, call["outputs"])
        ):
            # [] on output_item.added means "none yet"; null means "not requested".
            # The same outputs again (the final response repeats output_item.done's)
            # keep the list already held, whose text the batch may have made already
            # (shared_json).
            call["outputs"] = outputs

    def _response(
        self,
        xid: str,
        x: dict[str, Any],
        pe: Parsed,
        response: dict[str, Any],
        *,
        streamed: bool,
        terminal: str | None = None,
    ) -> None:
        rid = str_or_none(response.get("id"))
        if rid:
            x["rid"] = rid
        created = int_or_none(response.get("created_at"))
        completed = int_or_none(response.get("completed_at"))
        if created is not None:
            x["created_at"] = created
        if completed is not None:
            x["completed_at"] = completed
        status_from_terminal = TERMINAL_RESPONSE_EVENTS.get(terminal or "")
        output = response.get("output")
        if isinstance(output, list) and (not streamed or status_from_terminal):
            for index, item in enumerate(output):
                if not isinstance(item, dict) or item.get("type") != CI_ITEM:
                    continue
                call_id = item.get("id")
                if not isinstance(call_id, str):
                    continue
                call = x["calls"].get(call_id)
                if call is None:
                    call = x["calls"][call_id] = _new_call(call_id, pe, streamed=streamed)
                    call["output_index"] = index
                self._merge_item(call, item)
                status = item.get("status")
                if call["status"] not in TERMINAL:
                    call["status"] = status if status in TERMINAL else "completed"
                    call["finished_at_ns"] = pe.recorded_at_ns
                self._mark(xid, x, call, pe)
        if status_from_terminal in ("failed", "incomplete"):
            for call in x["calls"].values():
                if call["status"] not in TERMINAL:
                    call["status"] = status_from_terminal
                    self._mark(xid, x, call, pe)
        if status_from_terminal or not streamed:
            # Coarse timing (the API's own second-resolution clock) for every call.
            for call in x["calls"].values():
                self._touch(xid, x, call, pe)


_ITEM_OR_RESPONSE = RESPONSE_EVENTS | {"response.output_item.added", "response.output_item.done"}
SSE_TYPES = _ITEM_OR_RESPONSE | {
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call_code.done",
    "response.code_interpreter_call.interpreting",
    "response.code_interpreter_call.completed",
}
"""The SSE event types a tracker reads."""


class CallsProjection(Projection):
    """Base of the projections that follow code interpreter calls (stages, audit).

    They share one state shape, so when both start a batch at the same
    checkpoint with the same state the runner follows the calls once.
    """

    shared = "code_interpreter_calls"
    sse_types = SSE_TYPES

    def __init__(self, conn: sa.Connection, state: dict[str, Any]) -> None:
        super().__init__(conn, state)
        self.tracker = CallTracker(state)

    def apply(self, pe: Parsed) -> None:
        self.tracker.apply(pe)

    def delta_routes(self) -> dict[str, DeltaHandler]:
        return {"response.code_interpreter_call_code.delta": self._code_delta}

    def _code_delta(self, row: Row, item_id: str | None, delta: str | None) -> None:
        # Through self, not bound to the tracker: adopt() may swap the tracker.
        self.tracker.code_delta(row, item_id, delta)

    def adopt(self, other: Projection) -> None:
        assert isinstance(other, CallsProjection)
        self.tracker, self.state = other.tracker, other.state

    def touched_calls(
        self,
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        """Each call this batch changed: the columns every call table shares, its
        exchange's state and the call's."""
        for (xid, _), (x, call) in self.tracker.touched.items():
            common = {
                "exchange_id": xid,
                "call_id": call["id"],
                "session_id": x["sid"],
                "response_id": x["rid"],
                "container_id": call["container_id"],
                "status": call["status"],
                "first_position": call["first_position"],
                "started_at_ns": call["started_at_ns"],
            }
            yield common, x, call
