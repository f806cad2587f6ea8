"""The stream as a client presents it: an ordered list of chunks (``output`` + ``metadata``).

Guarantees: chunks are in log order (position, then part for the several
chunks one non-streamed body yields); ``output`` is the text delta the event
carries, ``""`` when none; every code interpreter event gives
``metadata["code_interpreter"] = {"stage": ..., "data": {...}}`` where ``data``
holds at least the call ``id`` and ``container_id``, for ``code_delta`` the
``delta`` and the code so far as ``code``, and for the terminal stage the final
``code`` and the ``outputs`` when they were recorded. The code so far is
rebuilt on read from the stored deltas, so rows stay linear in the stream size.

Mapping from wire events (streamed) to chunks:

===============================================  ===================================================
wire event                                       chunk
===============================================  ===================================================
``response.created``                             metadata ``response`` {id, model, status}
``response.output_text.delta``                   ``output`` = delta
``response.output_text.annotation.added``        metadata ``annotation`` (container_file_citation…)
``response.reasoning_summary_text.delta``        metadata ``reasoning_summary`` = delta
``response.output_item.added`` (ci call)         ``code_interpreter`` stage ``started``
``response.code_interpreter_call.in_progress``   stage ``in_progress``
``response.code_interpreter_call_code.delta``    stage ``code_delta`` {delta, code so far}
``response.code_interpreter_call_code.done``     (none: its code is carried by later stages)
``response.code_interpreter_call.interpreting``  stage ``interpreting`` {code}
``response.code_interpreter_call.completed``     (none: outputs only arrive with the item)
``response.output_item.done`` (ci call)          stage ``completed`` / ``failed`` / ``incomplete``
                                                 (the item's status) {code, outputs, status}
``response.completed`` / ``.failed`` /           metadata ``response`` {id, model, status, usage};
``.incomplete``                                  a call still open gets stage ``failed`` /
                                                 ``incomplete`` first
``error``                                        metadata ``error``
exchange end with calls still open               stage ``incomplete`` (or ``failed``) per call
any other event                                  (none)
===============================================  ===================================================

A non-streamed response body yields the same chunks at once, in output
order: ``response``, then per item either ``started`` + terminal stage (code
interpreter call) or one ``output`` chunk with the message's whole text (and
its annotations), then the final ``response`` chunk. An HTTP error body
yields one ``error`` chunk.

Storage: each run of consecutive text (or one call's code) deltas of an
exchange is one row keyed by its first position, rewritten while the run
grows; :func:`chunk_rows` expands runs back into one chunk per delta.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from recorder.events import EventKind
from recorder.projections.json_text import dump_json, shared_json
from recorder.projections.log_event import DeltaHandler, LogEvent, Parsed, Row
from recorder.projections.projection import Projection
from recorder.projections.row_buffer import RowBuffer
from recorder.projections.wire import (
    CI_ITEM,
    TERMINAL_RESPONSE_EVENTS,
    response_object,
    str_or_none,
)
from recorder.store.schema import pj_chunks

__all__ = ["Chunk", "ChunksProjection", "chunk_rows"]

_TERMINAL = frozenset({"completed", "failed", "incomplete"})
_CI_STAGE = {
    "response.code_interpreter_call.in_progress": "in_progress",
    "response.code_interpreter_call_code.delta": "code_delta",
    "response.code_interpreter_call.interpreting": "interpreting",
}
_HANDLED = frozenset(
    {
        "response.created",
        "response.output_text.delta",
        "response.output_text.annotation.added",
        "response.reasoning_summary_text.delta",
        "response.output_item.added",
        "response.output_item.done",
        "error",
        *_CI_STAGE,
        *TERMINAL_RESPONSE_EVENTS,
    }
)


_dump = dump_json


def _response_summary(response: dict[str, Any], with_usage: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "id": response.get("id"),
        "model": response.get("model"),
        "status": response.get("status"),
    }
    if with_usage:
        summary["usage"] = response.get("usage")
    return summary


class ChunksProjection(Projection):
    name: ClassVar[str] = "chunks"
    version: ClassVar[int] = 1
    tables = (pj_chunks,)
    sse_types = _HANDLED

    def __init__(self, conn: sa.Connection, state: dict[str, Any]) -> None:
        super().__init__(conn, state)
        self.exchanges: dict[str, dict[str, Any]] = state.setdefault("x", {})
        self.rows = RowBuffer(pj_chunks, conn.dialect.name)
        self._ev: LogEvent
        self._part = 0
        self._open: dict[str, dict[str, Any]] = {}
        """Exchanges whose run of deltas grew in this batch."""

    # -- emitting ------------------------------------------------------------

    def _emit(
        self,
        x: dict[str, Any],
        kind: str,
        *,
        output: str = "",
        data: str = "",
        stage: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Store one chunk (``data`` is JSON, ``""`` for none), after the exchange's open run."""
        if x.get("run") is not None:
            self._close_run(x)
        ev = self._ev
        self.rows.add(
            (
                ev.session_id,
                ev.position,
                self._part,
                ev.exchange_id,
                x.get("rid"),
                kind,
                stage,
                call_id,
                output,
                data,
            )
        )
        self._part += 1

    def _delta(self, x: dict[str, Any], kind: str, call_id: str | None, delta: str) -> None:
        """Add a text or code delta to the exchange's run of consecutive deltas.

        Deltas are most of a stream; storing each run of them as one row (keyed
        by its first position, rewritten while it grows) instead of a row per
        delta makes rebuilds several times cheaper. The run's content depends
        only on the events, never on where a batch ended, so catch-up and
        rebuild still write identical rows.
        """
        ev = self._ev
        run = x.get("run")
        if run is not None and (run["k"] != kind or run["c"] != call_id):
            self._close_run(x)
            run = None
        if run is None:
            run = x["run"] = {
                "k": kind,
                "c": call_id,
                "s": ev.session_id,
                "x": ev.exchange_id,
                "r": x.get("rid"),
                "first": ev.position,
                "items": [],
            }
        # A tuple: dumped as the same JSON array as the list a stored state loads as.
        run["items"].append((ev.position, delta))
        self._open[ev.exchange_id or ""] = x

    def _close_run(self, x: dict[str, Any]) -> None:
        self._put_run(x["run"])
        x["run"] = None

    def _put_run(self, run: dict[str, Any]) -> None:
        self.rows.put(
            {
                "session_id": run["s"],
                "position": run["first"],
                "part": 0,
                "exchange_id": run["x"],
                "response_id": run["r"],
                "kind": run["k"],
                "stage": "code_delta" if run["k"] == "code_run" else None,
                "call_id": run["c"],
                "output": "",
                "data": _dump(run["items"]),
            }
        )

    def _ci(
        self,
        x: dict[str, Any],
        stage: str,
        call_id: str,
        extra: dict[str, Any],
        outputs: list[Any] | None = None,
    ) -> None:
        """A code interpreter stage; ``outputs``, if given, is stored as ``extra``'s last key."""
        call = x["calls"].setdefault(call_id, {"c": None, "open": True})
        if stage in _TERMINAL:
            call["open"] = False
        if stage in ("started", *_TERMINAL):
            # The container is stored on these; read_chunks carries it to the others.
            extra = {"container_id": call["c"], **extra}
        data = _dump(extra) if extra else ""
        if outputs is not None:
            # The same text as dumping extra with outputs as its last key, the
            # outputs part shared with the audit projection, which stores them too.
            data = (data[:-1] + "," if extra else "{") + '"outputs":' + shared_json(outputs) + "}"
        self._emit(x, "code_interpreter", data=data, stage=stage, call_id=call_id)

    def _close_open(self, x: dict[str, Any], status: str, reason: str | None) -> None:
        for call_id, call in x["calls"].items():
            if call["open"]:
                extra: dict[str, Any] = {"status": status}
                if reason:
                    extra["reason"] = reason
                self._ci(x, status, call_id, extra)

    # -- consuming -----------------------------------------------------------

    def delta_routes(self) -> dict[str, DeltaHandler]:
        # Deltas are most of the log: handled from their fields, without apply's dispatch.
        return {
            "response.output_text.delta": self._text_delta,
            "response.code_interpreter_call_code.delta": self._code_delta,
        }

    def _text_delta(self, row: Row, item_id: str | None, delta: str | None) -> None:
        """``apply`` for a ``response.output_text.delta`` frame."""
        xid = row[2]
        if xid is None:
            return
        x = self.exchanges.get(xid)
        if x is None:
            return
        run = x.get("run")
        if run is not None and run["k"] == "text_run" and run["c"] is None:
            # The run goes on (most text deltas): what _delta would do, inline.
            run["items"].append((row[0], delta or ""))
            self._open[xid] = x
            return
        self._ev = LogEvent(row)
        self._delta(x, "text_run", None, delta or "")

    def _code_delta(self, row: Row, call_id: str | None, delta: str | None) -> None:
        """``apply`` for a ``response.code_interpreter_call_code.delta`` frame."""
        xid = row[2]
        if xid is None or call_id is None:
            return
        x = self.exchanges.get(xid)
        if x is None:
            return
        calls = x["calls"]
        if call_id not in calls:
            calls[call_id] = {"c": None, "open": True}
        run = x.get("run")
        if run is not None and run["k"] == "code_run" and run["c"] == call_id:
            # The run goes on (most code deltas): what _delta would do, inline.
            run["items"].append((row[0], delta or ""))
            self._open[xid] = x
            return
        self._ev = LogEvent(row)
        self._delta(x, "code_run", call_id, delta or "")

    def apply(self, ev: Parsed) -> None:
        xid = ev.exchange_id
        if xid is None:
            return
        kind = ev.kind
        if kind is EventKind.SSE:
            if ev.sse_type not in _HANDLED:
                return
            x = self.exchanges.get(xid)
            if x is None:
                return
            self._ev, self._part = ev, 0
            t = ev.sse_type
            if t == "response.output_text.delta":
                delta = ev.delta_fields()[1]
                self._delta(x, "text_run", None, delta or "")
            elif t == "response.code_interpreter_call_code.delta":
                call_id, delta = ev.delta_fields()
                if call_id is not None:
                    x["calls"].setdefault(call_id, {"c": None, "open": True})
                    self._delta(x, "code_run", call_id, delta or "")
            else:
                self._sse(x, t, ev.data)
        elif kind is EventKind.REQUEST:
            self.exchanges[xid] = {"rid": None, "calls": {}}
        elif kind is EventKind.RESPONSE_HEAD:
            x = self.exchanges.get(xid)
            if x is not None:
                x["status"] = ev.meta.get("status")
        elif kind is EventKind.BODY:
            x = self.exchanges.get(xid)
            if x is None:
                return
            self._ev, self._part = ev, 0
            self._body(x, ev.data)
        elif kind is EventKind.EXCHANGE_END:
            x = self.exchanges.pop(xid, None)
            if x is None:
                return
            self._ev, self._part = ev, 0
            outcome = ev.meta.get("outcome")
            self._close_open(
                x, "failed" if outcome == "failed" else "incomplete", ev.meta.get("reason")
            )
            if x.get("run") is not None:
                self._close_run(x)

    def _sse(self, x: dict[str, Any], t: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if t == "response.output_text.delta":
            delta = data.get("delta")
            self._delta(x, "text_run", None, delta if isinstance(delta, str) else "")
            return
        stage = _CI_STAGE.get(t or "")
        if stage is not None:
            call_id = data.get("item_id")
            if not isinstance(call_id, str):
                return
            if stage == "code_delta":
                # Stored raw, not as JSON: one per delta, the bulk of a stream's rows.
                delta = data.get("delta")
                x["calls"].setdefault(call_id, {"c": None, "open": True})
                self._delta(x, "code_run", call_id, delta if isinstance(delta, str) else "")
            else:
                self._ci(x, stage, call_id, {})
            return
        if t in ("response.output_item.added", "response.output_item.done"):
            item = data.get("item")
            if not isinstance(item, dict) or item.get("type") != CI_ITEM:
                return
            call_id = item.get("id")
            if not isinstance(call_id, str):
                return
            call = x["calls"].setdefault(call_id, {"c": None, "open": True})
            call["c"] = str_or_none(item.get("container_id")) or call["c"]
            if t == "response.output_item.added":
                self._ci(x, "started", call_id, {"status": item.get("status")})
            else:
                stage, extra, outputs = self._terminal(item)
                self._ci(x, stage, call_id, extra, outputs)
            return
        if t == "response.created":
            response = response_object(t, data)
            if response is not None:
                x["rid"] = str_or_none(response.get("id"))
                self._emit(
                    x, "response", data=_dump({"response": _response_summary(response, False)})
                )
            return
        if t in TERMINAL_RESPONSE_EVENTS:
            response = response_object(t, data)
            if response is None:
                return
            status = TERMINAL_RESPONSE_EVENTS[t]
            if status != "completed":
                reason = None
                details = response.get("incomplete_details") or response.get("error")
                if isinstance(details, dict):
                    reason = str_or_none(details.get("reason") or details.get("message"))
                self._close_open(x, status, reason)
            self._emit(x, "response", data=_dump({"response": _response_summary(response, True)}))
            return
        if t == "response.output_text.annotation.added":
            self._emit(x, "annotation", data=_dump({"annotation": data.get("annotation")}))
        elif t == "response.reasoning_summary_text.delta":
            delta = data.get("delta")
            self._emit(x, "reasoning", data=_dump({"reasoning_summary": delta}))
        elif t == "error":
            error = {k: v for k, v in data.items() if k not in ("type", "sequence_number")}
            self._emit(x, "error", data=_dump({"error": error}))

    @staticmethod
    def _terminal(item: dict[str, Any]) -> tuple[str, dict[str, Any], list[Any] | None]:
        """The terminal stage of a call item, its data and its outputs (if a list)."""
        status = item.get("status")
        stage = status if status in _TERMINAL else "completed"
        extra: dict[str, Any] = {"status": status}
        code = item.get("code")
        if isinstance(code, str) and code:
            extra["code"] = code
        outputs = item.get("outputs")
        return str(stage), extra, outputs if isinstance(outputs, list) else None

    def _body(self, x: dict[str, Any], data: Any) -> None:
        status = x.get("status")
        if isinstance(status, int) and status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            self._emit(x, "error", data=_dump({"error": error, "http_status": status}))
            return
        response = response_object(None, data)
        if response is None:
            return
        x["rid"] = str_or_none(response.get("id"))
        self._emit(x, "response", data=_dump({"response": _response_summary(response, False)}))
        output = response.get("output")
        for item in output if isinstance(output, list) else []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == CI_ITEM and isinstance(item.get("id"), str):
                call_id = item["id"]
                x["calls"][call_id] = {"c": str_or_none(item.get("container_id")), "open": True}
                self._ci(x, "started", call_id, {"status": "in_progress"})
                stage, extra, outputs = self._terminal(item)
                self._ci(x, stage, call_id, extra, outputs)
            elif item.get("type") == "message":
                for part in item.get("content") or []:
                    if not isinstance(part, dict) or part.get("type") != "output_text":
                        continue
                    text = part.get("text")
                    self._emit(x, "text", output=text if isinstance(text, str) else "")
                    for annotation in part.get("annotations") or []:
                        self._emit(x, "annotation", data=_dump({"annotation": annotation}))
        self._emit(x, "response", data=_dump({"response": _response_summary(response, True)}))

    def finish(self) -> None:
        for x in self._open.values():
            if x.get("run") is not None:
                self._put_run(x["run"])
        self.rows.flush(self.conn)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk as the client library presents it."""

    position: int
    part: int
    exchange_id: str | None
    response_id: str | None
    output: str
    metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "part": self.part,
            "exchange_id": self.exchange_id,
            "response_id": self.response_id,
            "output": self.output,
            "metadata": self.metadata,
        }


def chunk_rows(conn: sa.Connection, session_id: str) -> list[Chunk]:
    """The session's chunks in order, with ``code`` so far filled in for code interpreter stages."""
    t = pj_chunks
    query = (
        sa.select(t.c.position, t.c.part, t.c.exchange_id, t.c.response_id, t.c.kind)
        .add_columns(t.c.stage, t.c.call_id, t.c.output, t.c.data)
        .where(t.c.session_id == session_id)
        .order_by(t.c.position, t.c.part)
    )
    rows: list[tuple[Any, ...]] = []
    for row in conn.execute(query):
        position, part, xid, rid, kind, stage, call_id, output, raw = row
        if kind == "text_run":
            rows.extend((p, 0, xid, rid, "text", None, None, d, "") for p, d in json.loads(raw))
        elif kind == "code_run":
            rows.extend(
                (p, 0, xid, rid, "code_interpreter", "code_delta", call_id, "", d)
                for p, d in json.loads(raw)
            )
        else:
            rows.append(tuple(row))
    # Runs of deltas are stored at their first position: put every chunk back in place.
    rows.sort(key=lambda r: (r[0], r[1]))
    code_so_far: dict[tuple[str | None, str], str] = {}
    container: dict[tuple[str | None, str], str | None] = {}
    result = []
    for position, part, xid, rid, kind, stage, call_id, output, raw in rows:
        metadata: dict[str, Any]
        if kind == "code_interpreter":
            key = (xid, call_id or "")
            code = code_so_far.get(key, "")
            if stage == "code_delta":
                code += raw
                code_so_far[key] = code
                data: dict[str, Any] = {"delta": raw, "code": code}
            else:
                data = json.loads(raw) if raw else {}
                if "container_id" in data:
                    container[key] = data["container_id"]
                if stage == "interpreting":
                    data["code"] = code
                elif stage in _TERMINAL:
                    data.setdefault("code", code)
                    code_so_far.pop(key, None)
            data = {"id": call_id, "container_id": container.get(key), **data}
            metadata = {"code_interpreter": {"stage": stage, "data": data}}
        else:
            metadata = json.loads(raw) if raw else {}
        result.append(Chunk(position, part, xid, rid, output, metadata))
    return result
