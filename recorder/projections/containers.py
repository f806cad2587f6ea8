"""Container state: every container id seen, who created it, what it produced, and when.

Guarantees: a container is created by exactly one exchange — the
``POST /v1/containers`` that returned it, or else the first responses request
with ``container: {"type": "auto"}`` whose output used it (``created_via``
``api`` / ``auto``); a container first seen through an explicit id whose
creation is not in the log is ``external`` (created elsewhere, charged
elsewhere). Later uses by id only move ``last_activity_ns``. Files come from
``container_file_citation`` annotations and recorded file downloads.

Activity times are the log's own times (``recorded_at_ns``, or the response's
``completed_at`` when later); for imports from other tools these are the
recording's dates, with second resolution. Whether a container is active at a
time T is decided on read (:func:`container_state`) by a configurable idle
rule, because it depends on T, not on the log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from recorder.events import EventKind
from recorder.projections.log_event import Parsed, Row
from recorder.projections.projection import Projection
from recorder.projections.row_buffer import RowBuffer
from recorder.projections.wire import (
    CI_ITEM,
    classify_url,
    code_interpreter_config,
    int_or_none,
    response_object,
    str_or_none,
)
from recorder.store.schema import pj_container_files, pj_containers

__all__ = [
    "DEFAULT_IDLE_MINUTES",
    "DEFAULT_MEMORY",
    "ContainerInfo",
    "ContainersProjection",
    "container_rows",
]

DEFAULT_MEMORY = "1g"
"""OpenAI's tier when a request does not set ``memory_limit``."""
DEFAULT_IDLE_MINUTES = 20
"""Containers expire after 20 idle minutes (``expires_after`` of the Containers API)."""

_SECOND = 1_000_000_000


def _ok(x: dict[str, Any]) -> bool:
    status = x.get("status")
    return isinstance(status, int) and 200 <= status < 300


class ContainersProjection(Projection):
    name: ClassVar[str] = "containers"
    version: ClassVar[int] = 1
    tables = (pj_containers, pj_container_files)

    def __init__(self, conn: sa.Connection, state: dict[str, Any]) -> None:
        super().__init__(conn, state)
        self.exchanges: dict[str, dict[str, Any]] = state.setdefault("x", {})
        self.containers = RowBuffer(pj_containers, conn.dialect.name)
        self.files = RowBuffer(pj_container_files, conn.dialect.name)
        self._cache: dict[str, dict[str, Any] | None] = {}
        self._file_cache: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._files_loaded: set[str] = set()
        """Containers all of whose stored files are in ``_file_cache``."""

    # -- rows ----------------------------------------------------------------

    def prefetch(self, events: Sequence[Row]) -> None:
        """Load the stored rows of the containers the batch seems to mention, in bulk.

        One lookup per container and batch is a round trip each on
        PostgreSQL; ids found here (OpenAI's ``cntr_`` ids in the frames and
        URLs this projection reads) are read in a few queries instead. Ids it
        misses are still looked up one by one, so this only saves time.
        """
        ids: set[str] = set()
        for row in events:
            if row[3] == "sse" and row[6] not in _SSE_TYPES:
                continue
            payload, meta = row[8], row[7]
            if b"cntr_" in payload:
                ids.update(m.decode("ascii") for m in _CONTAINER_ID.findall(bytes(payload)))
            if meta is not None and "cntr_" in meta:
                ids.update(_CONTAINER_ID_TEXT.findall(meta))
        todo = sorted(ids.difference(self._cache))
        if not todo:
            return
        self._cache.update(dict.fromkeys(todo))
        for stored in self.containers.stored_where(self.conn, "container_id", todo):
            self._cache[stored["container_id"]] = stored
        for stored in self.files.stored_where(self.conn, "container_id", todo):
            self._file_cache[(stored["container_id"], stored["file_id"])] = stored
        self._files_loaded.update(todo)

    def _container(self, cid: str) -> dict[str, Any] | None:
        if cid not in self._cache:
            self._cache[cid] = self.containers.stored(self.conn, (cid,))
        return self._cache[cid]

    def _file(self, cid: str, fid: str) -> dict[str, Any] | None:
        key = (cid, fid)
        if key not in self._file_cache:
            loaded = cid in self._files_loaded
            self._file_cache[key] = None if loaded else self.files.stored(self.conn, key)
        return self._file_cache[key]

    def _activity_ns(self, pe: Parsed, x: dict[str, Any]) -> int:
        completed = x.get("completed_at")
        at: int = pe.recorded_at_ns
        return max(at, completed * _SECOND) if isinstance(completed, int) else at

    def _touch(
        self, cid: str, pe: Parsed, xid: str, x: dict[str, Any], *, call: bool = False
    ) -> dict[str, Any]:
        row = self._container(cid)
        at = self._activity_ns(pe, x)
        if row is None:
            cfg = x.get("cfg")
            auto = cfg is not None and cfg[0] == "auto"
            row = {
                "container_id": cid,
                "memory": (cfg[1] or DEFAULT_MEMORY) if cfg is not None and auto else None,
                "created_via": "auto" if auto else "external",
                "created_exchange_id": xid if auto else None,
                "session_id": x["sid"],
                "created_at_ns": pe.recorded_at_ns if auto else None,
                "first_position": pe.position,
                "first_activity_ns": at,
                "last_activity_ns": at,
                "last_session_id": x["sid"],
                "expires_after_minutes": None,
                "deleted_at_ns": None,
                "calls": 0,
                "exchanges": 0,
            }
            self._cache[cid] = row
        row["last_activity_ns"] = max(row["last_activity_ns"], at)
        row["last_session_id"] = x["sid"]
        seen: list[str] = x.setdefault("seen", [])
        if cid not in seen:
            seen.append(cid)
            row["exchanges"] += 1
        if call:
            row["calls"] += 1
        self.containers.put(row)
        return row

    def _add_file(
        self,
        cid: str,
        fid: str,
        pe: Parsed,
        *,
        filename: str | None,
        source: str,
        size: int | None = None,
    ) -> None:
        row = self._file(cid, fid)
        if row is None:
            row = {
                "container_id": cid,
                "file_id": fid,
                "filename": filename,
                "source": source,
                "bytes": size,
                "first_position": pe.position,
                "exchange_id": pe.exchange_id,
            }
            self._file_cache[(cid, fid)] = row
        else:
            row["filename"] = row["filename"] or filename
            if size is not None:
                row["bytes"] = size
            if source not in row["source"].split("+"):
                row["source"] = row["source"] + "+" + source
        self.files.put(row)

    # -- consuming -----------------------------------------------------------

    def apply(self, ev: Parsed) -> None:
        xid = ev.exchange_id
        if xid is None:
            return
        kind = ev.kind
        if kind is EventKind.SSE:
            t = ev.sse_type
            if t not in _SSE_TYPES:
                return
            x = self.exchanges.get(xid)
            if x is not None:
                self._sse(ev, xid, x, t)
        elif kind is EventKind.REQUEST:
            meta = ev.meta
            endpoint = classify_url(str(meta.get("method", "")), str(meta.get("url", "")))
            new: dict[str, Any] = {"sid": ev.session_id, "ep": endpoint.kind}
            if endpoint.container_id:
                new["cid"] = endpoint.container_id
            if endpoint.file_id:
                new["fid"] = endpoint.file_id
            body = ev.data if endpoint.kind in ("responses", "containers.create") else None
            if isinstance(body, dict):
                if endpoint.kind == "responses":
                    cfg = code_interpreter_config(body.get("tools"))
                    if cfg is not None:
                        new["cfg"] = [cfg.container, cfg.memory_limit]
                else:
                    new["memory"] = str_or_none(body.get("memory_limit"))
            self.exchanges[xid] = new
        elif kind is EventKind.RESPONSE_HEAD:
            x2 = self.exchanges.get(xid)
            if x2 is not None:
                x2["status"] = ev.meta.get("status")
        elif kind is EventKind.BODY:
            x3 = self.exchanges.get(xid)
            if x3 is not None and _ok(x3):
                self._body(ev, xid, x3)
        elif kind is EventKind.EXCHANGE_END:
            self.exchanges.pop(xid, None)

    def _sse(self, pe: Parsed, xid: str, x: dict[str, Any], t: str) -> None:
        data = pe.data
        if not isinstance(data, dict):
            return
        if t in ("response.output_item.added", "response.output_item.done"):
            item = data.get("item")
            if isinstance(item, dict) and item.get("type") == CI_ITEM:
                cid = str_or_none(item.get("container_id"))
                if cid:
                    self._touch(cid, pe, xid, x, call=t == "response.output_item.added")
        elif t == "response.output_text.annotation.added":
            self._annotation(pe, xid, x, data.get("annotation"))
        else:
            response = response_object(t, data)
            if response is None:
                return
            if _response_facts(x, response) is not None:
                for cid in x.get("seen", []):
                    self._touch(cid, pe, xid, x)

    def _annotation(self, pe: Parsed, xid: str, x: dict[str, Any], annotation: Any) -> None:
        if not isinstance(annotation, dict) or annotation.get("type") != "container_file_citation":
            return
        cid = str_or_none(annotation.get("container_id"))
        fid = str_or_none(annotation.get("file_id"))
        if cid and fid:
            self._touch(cid, pe, xid, x)
            self._add_file(
                cid, fid, pe, filename=str_or_none(annotation.get("filename")), source="citation"
            )

    def _body(self, pe: Parsed, xid: str, x: dict[str, Any]) -> None:
        ep = x["ep"]
        data = pe.data
        if ep == "responses":
            response = response_object(None, data)
            if response is None:
                return
            _response_facts(x, response)
            for item in response.get("output") or []:
                if not isinstance(item, dict):
                    continue
                if item.get("type") == CI_ITEM:
                    cid = str_or_none(item.get("container_id"))
                    if cid:
                        self._touch(cid, pe, xid, x, call=True)
                elif item.get("type") == "message":
                    for part in item.get("content") or []:
                        if isinstance(part, dict):
                            for annotation in part.get("annotations") or []:
                                self._annotation(pe, xid, x, annotation)
        elif ep == "containers.create" and isinstance(data, dict):
            cid = str_or_none(data.get("id"))
            if not cid:
                return
            created = int_or_none(data.get("created_at"))
            expires = data.get("expires_after")
            minutes = int_or_none(expires.get("minutes")) if isinstance(expires, dict) else None
            at = created * _SECOND if created is not None else pe.recorded_at_ns
            memory = str_or_none(data.get("memory_limit")) or x.get("memory") or DEFAULT_MEMORY
            row = self._container(cid)
            if row is None:
                row = self._touch(cid, pe, xid, x)
            row.update(
                {
                    "memory": memory,
                    "created_via": "api",
                    "created_exchange_id": xid,
                    "session_id": x["sid"],
                    "created_at_ns": at,
                    "expires_after_minutes": minutes,
                }
            )
            self.containers.put(row)
        elif ep == "containers.delete" and x.get("cid"):
            row = self._touch(str(x["cid"]), pe, xid, x)
            row["deleted_at_ns"] = pe.recorded_at_ns
        elif ep == "containers.file_content" and x.get("cid") and x.get("fid"):
            cid, fid = str(x["cid"]), str(x["fid"])
            self._touch(cid, pe, xid, x)
            self._add_file(cid, fid, pe, filename=None, source="download", size=len(pe.payload))

    def finish(self) -> None:
        self.containers.flush(self.conn)
        self.files.flush(self.conn)


_SSE_TYPES = frozenset(
    {
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.annotation.added",
        "response.completed",
        "response.failed",
        "response.incomplete",
    }
)
ContainersProjection.sse_types = _SSE_TYPES
_CONTAINER_ID = re.compile(rb"cntr_[0-9A-Za-z]+")
_CONTAINER_ID_TEXT = re.compile(r"cntr_[0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class ContainerFile:
    file_id: str
    filename: str | None
    source: str
    bytes: int | None


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container as the log knows it; :meth:`state_at` judges it at a time."""

    container_id: str
    memory: str | None
    created_via: str
    created_exchange_id: str | None
    session_id: str
    created_at_ns: int | None
    first_activity_ns: int
    last_activity_ns: int
    expires_after_minutes: int | None
    deleted_at_ns: int | None
    calls: int
    exchanges: int
    files: tuple[ContainerFile, ...]

    def state_at(
        self, at_ns: int, idle_minutes: int | None = None, max_age_minutes: int | None = None
    ) -> tuple[str, bool, int | None]:
        """(state, reusable, expires_at_ns) at ``at_ns`` under the idle rule.

        ``idle_minutes`` defaults to the container's own ``expires_after`` when
        the log holds it, else :data:`DEFAULT_IDLE_MINUTES`. ``max_age_minutes``
        (e.g. 60, the documented "active for 1 hour") caps the lifetime.
        """
        idle = idle_minutes or self.expires_after_minutes or DEFAULT_IDLE_MINUTES
        expires = self.last_activity_ns + idle * 60 * _SECOND
        born = self.created_at_ns if self.created_at_ns is not None else self.first_activity_ns
        if max_age_minutes is not None:
            expires = min(expires, born + max_age_minutes * 60 * _SECOND)
        if self.deleted_at_ns is not None:
            expires = min(expires, self.deleted_at_ns)
            if at_ns >= self.deleted_at_ns:
                return "deleted", False, expires
        if at_ns < born:
            return "not yet created", False, expires
        if at_ns >= expires:
            return "expired", False, expires
        return "active", True, expires

    def to_json(
        self, at_ns: int, idle_minutes: int | None = None, max_age_minutes: int | None = None
    ) -> dict[str, Any]:
        state, reusable, expires = self.state_at(at_ns, idle_minutes, max_age_minutes)
        return {
            "container_id": self.container_id,
            "memory": self.memory,
            "created_via": self.created_via,
            "created_exchange_id": self.created_exchange_id,
            "session_id": self.session_id,
            "created_at_ns": self.created_at_ns,
            "first_activity_ns": self.first_activity_ns,
            "last_activity_ns": self.last_activity_ns,
            "expires_after_minutes": self.expires_after_minutes,
            "deleted_at_ns": self.deleted_at_ns,
            "code_interpreter_calls": self.calls,
            "exchanges": self.exchanges,
            "files": [
                {"file_id": f.file_id, "filename": f.filename, "source": f.source, "bytes": f.bytes}
                for f in self.files
            ],
            "at_ns": at_ns,
            "state": state,
            "reusable": reusable,
            "expires_at_ns": expires,
        }


def container_rows(conn: sa.Connection) -> list[ContainerInfo]:
    """Every container, in the order the log first saw them."""
    files: dict[str, list[ContainerFile]] = {}
    ft = pj_container_files
    for r in conn.execute(sa.select(ft).order_by(ft.c.first_position, ft.c.file_id)).mappings():
        files.setdefault(r["container_id"], []).append(
            ContainerFile(r["file_id"], r["filename"], r["source"], r["bytes"])
        )
    t = pj_containers
    return [
        ContainerInfo(
            container_id=r["container_id"],
            memory=r["memory"],
            created_via=r["created_via"],
            created_exchange_id=r["created_exchange_id"],
            session_id=r["session_id"],
            created_at_ns=r["created_at_ns"],
            first_activity_ns=r["first_activity_ns"],
            last_activity_ns=r["last_activity_ns"],
            expires_after_minutes=r["expires_after_minutes"],
            deleted_at_ns=r["deleted_at_ns"],
            calls=r["calls"],
            exchanges=r["exchanges"],
            files=tuple(files.get(r["container_id"], ())),
        )
        for r in conn.execute(sa.select(t).order_by(t.c.first_position)).mappings()
    ]


def _response_facts(x: dict[str, Any], response: dict[str, Any]) -> int | None:
    """Note a response's code interpreter config and completion time in its exchange ``x``.

    The config comes from the response only when the request body was not
    recorded (the response echoes its tools). Returns the completion time.
    """
    if "cfg" not in x:
        cfg = code_interpreter_config(response.get("tools"))
        if cfg is not None:
            x["cfg"] = [cfg.container, cfg.memory_limit]
    completed = int_or_none(response.get("completed_at"))
    if completed is not None:
        x["completed_at"] = completed
    return completed
