"""Costs: token cost per response and container fees, priced on read.

The projection stores facts only — per responses exchange its model, usage
(input, cached input, output including reasoning), code interpreter settings
and calls — and :func:`cost_report` prices them when asked, so a newer price
list or the user's own fee table needs no rebuild.

Guarantees:

* Tokens are priced with ``genai-prices``' bundled snapshot (never fetched
  over the network: codetape does not start its updater) at the response's
  date; model snapshot names resolve (``gpt-4o-mini-2024-07-18``). A
  response without recorded usage, or with a model genai-prices does not
  know, has an ``unknown`` cost, listed, never silently zero.
* A container is charged once, to the exchange that created it (see
  :mod:`recorder.projections.containers`); reuse by id adds nothing;
  ``external`` containers (created outside the log) are listed, not charged.
* A request that enabled code_interpreter with ``container: {"type": "auto"}``
  and has no code interpreter call may still have made OpenAI create (and bill)
  a container: each is listed as a *possible unattributed container* with the
  fee it would cost, kept out of the totals.
* Every figure carries ``basis`` (``exact`` / ``estimated`` / ``unknown``) and
  the rule that produced it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version
from typing import Any, ClassVar

import sqlalchemy as sa

from recorder.events import EventKind
from recorder.projections.containers import DEFAULT_IDLE_MINUTES, DEFAULT_MEMORY, container_rows
from recorder.projections.fees import Fee, FeeTable
from recorder.projections.log_event import Parsed
from recorder.projections.projection import Projection
from recorder.projections.row_buffer import RowBuffer
from recorder.projections.wire import (
    CI_ITEM,
    TERMINAL_RESPONSE_EVENTS,
    classify_url,
    code_interpreter_config,
    response_object,
    str_or_none,
    usage_numbers,
)
from recorder.store.schema import pj_costs

__all__ = ["GROUPINGS", "CostReport", "CostsProjection", "cost_report", "token_cost"]

GROUPINGS = ("session", "day", "model", "label")
_SECOND = 1_000_000_000
_ZERO = Decimal(0)
_STANDARD_TIERS = (None, "auto", "default")


class CostsProjection(Projection):
    name: ClassVar[str] = "costs"
    version: ClassVar[int] = 1
    tables = (pj_costs,)

    def __init__(self, conn: sa.Connection, state: dict[str, Any]) -> None:
        super().__init__(conn, state)
        self.exchanges: dict[str, dict[str, Any]] = state.setdefault("x", {})
        self.rows = RowBuffer(pj_costs, conn.dialect.name)
        self._dirty: dict[str, dict[str, Any]] = {}
        """Exchanges whose row changed in this batch, in the order they first did."""

    def _put(self, xid: str, x: dict[str, Any]) -> None:
        """Mark the exchange's row for writing: built in :meth:`finish`, once.

        Every change to what the row holds is followed by a ``_put``, so the
        row built from ``x`` at the end is the one the last ``_put`` would build.
        """
        self._dirty[xid] = x

    def _row(self, xid: str, x: dict[str, Any]) -> None:
        usage = x.get("usage") or {}
        self.rows.put(
            {
                "exchange_id": xid,
                "session_id": x["sid"],
                "response_id": x.get("rid"),
                "at_ns": x["at"],
                "first_position": x["pos"],
                "endpoint": "responses",
                "requested_model": x.get("req_model"),
                "model": x.get("model"),
                "status": x.get("status"),
                "service_tier": x.get("tier"),
                "input_tokens": usage.get("input_tokens"),
                "cached_tokens": usage.get("cached_tokens"),
                "output_tokens": usage.get("output_tokens"),
                "reasoning_tokens": usage.get("reasoning_tokens"),
                "ci_container": x.get("cfg", [None, None])[0],
                "ci_memory": x.get("cfg", [None, None])[1],
                "ci_calls": len(x.get("calls", ())),
                "containers": json.dumps(x.get("containers", [])),
            }
        )

    def _response(self, x: dict[str, Any], response: dict[str, Any]) -> None:
        x["rid"] = str_or_none(response.get("id")) or x.get("rid")
        x["model"] = str_or_none(response.get("model")) or x.get("model")
        x["tier"] = str_or_none(response.get("service_tier")) or x.get("tier")
        status = str_or_none(response.get("status"))
        if status:
            x["status"] = status
        if "cfg" not in x:
            cfg = code_interpreter_config(response.get("tools"))
            if cfg is not None:
                x["cfg"] = [cfg.container, cfg.memory_limit]
        usage = usage_numbers(response)
        if usage is not None:
            x["usage"] = usage
        output = response.get("output")
        for item in output if isinstance(output, list) else []:
            if isinstance(item, dict) and item.get("type") == CI_ITEM:
                self._call(x, item)

    @staticmethod
    def _call(x: dict[str, Any], item: dict[str, Any]) -> None:
        call_id = item.get("id")
        calls: list[str] = x.setdefault("calls", [])
        if isinstance(call_id, str) and call_id not in calls:
            calls.append(call_id)
        cid = str_or_none(item.get("container_id"))
        containers: list[str] = x.setdefault("containers", [])
        if cid and cid not in containers:
            containers.append(cid)

    def apply(self, ev: Parsed) -> None:
        xid = ev.exchange_id
        if xid is None:
            return
        kind = ev.kind
        if kind is EventKind.SSE:
            t = ev.sse_type
            x = self.exchanges.get(xid)
            if x is None or t not in _SSE_TYPES:
                return
            data = ev.data
            if not isinstance(data, dict):
                return
            if t == "response.output_item.added":
                item = data.get("item")
                if isinstance(item, dict) and item.get("type") == CI_ITEM:
                    self._call(x, item)
                    self._put(xid, x)
                return
            response = response_object(t, data)
            if response is not None:
                self._response(x, response)
                self._put(xid, x)
        elif kind is EventKind.REQUEST:
            meta = ev.meta
            endpoint = classify_url(str(meta.get("method", "")), str(meta.get("url", "")))
            if endpoint.kind != "responses":
                return
            new: dict[str, Any] = {
                "sid": ev.session_id,
                "at": ev.recorded_at_ns,
                "pos": ev.position,
            }
            body = ev.data
            if isinstance(body, dict):
                new["req_model"] = str_or_none(body.get("model"))
                cfg = code_interpreter_config(body.get("tools"))
                if cfg is not None:
                    new["cfg"] = [cfg.container, cfg.memory_limit]
            self.exchanges[xid] = new
            self._put(xid, new)
        elif kind is EventKind.RESPONSE_HEAD:
            x2 = self.exchanges.get(xid)
            if x2 is not None:
                status = ev.meta.get("status")
                x2["http"] = status
                if isinstance(status, int) and status >= 400:
                    x2["status"] = f"http_{status}"
                    self._put(xid, x2)
        elif kind is EventKind.BODY:
            x3 = self.exchanges.get(xid)
            if x3 is not None:
                response = response_object(None, ev.data)
                if response is not None:
                    self._response(x3, response)
                    self._put(xid, x3)
        elif kind is EventKind.EXCHANGE_END:
            x4 = self.exchanges.pop(xid, None)
            if x4 is not None and x4.get("status") in (None, "in_progress", "queued"):
                x4["status"] = str(ev.meta.get("outcome") or "ended")
                self._put(xid, x4)

    def finish(self) -> None:
        for xid, x in self._dirty.items():
            self._row(xid, x)
        self.rows.flush(self.conn)


_SSE_TYPES = frozenset(
    {"response.created", "response.output_item.added", *TERMINAL_RESPONSE_EVENTS}
)
CostsProjection.sse_types = _SSE_TYPES


# -- pricing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenCost:
    amount: Decimal | None
    basis: str
    rule: str
    input: Decimal | None = None
    output: Decimal | None = None


@lru_cache(maxsize=4096)
def _price(
    model: str, at_day: dt.date, input_tokens: int, cached: int, output: int
) -> tuple[Decimal, Decimal, Decimal, str] | str:
    from genai_prices import Usage, calc_price

    try:
        calc = calc_price(
            Usage(input_tokens=input_tokens, cache_read_tokens=cached, output_tokens=output),
            model,
            provider_id="openai",
            genai_request_timestamp=dt.datetime(
                at_day.year, at_day.month, at_day.day, 12, tzinfo=dt.UTC
            ),
        )
    except LookupError:
        return f"genai-prices has no price for model {model!r}"
    return (
        Decimal(calc.input_price),
        Decimal(calc.output_price),
        Decimal(calc.total_price),
        f"{calc.model.id}: {calc.model_price}",
    )


def token_cost(
    model: str | None,
    at_ns: int,
    input_tokens: int | None,
    cached_tokens: int | None,
    output_tokens: int | None,
    service_tier: str | None = None,
) -> TokenCost:
    """The token cost of one response from its recorded usage (input includes cached)."""
    if input_tokens is None or output_tokens is None:
        return TokenCost(None, "unknown", "no usage recorded (the response did not complete)")
    if not model:
        return TokenCost(None, "unknown", "no model recorded")
    day = dt.datetime.fromtimestamp(at_ns // _SECOND, dt.UTC).date()
    priced = _price(model, day, input_tokens, cached_tokens or 0, output_tokens)
    if isinstance(priced, str):
        return TokenCost(None, "unknown", priced)
    inp, out, total, price_rule = priced
    rule = f"genai-prices {_genai_version()} list price {price_rule}"
    if service_tier not in _STANDARD_TIERS:
        return TokenCost(
            total,
            "estimated",
            rule + f"; billed at service tier {service_tier!r}, priced at the standard tier",
            inp,
            out,
        )
    return TokenCost(total, "exact", rule, inp, out)


@lru_cache(maxsize=1)
def _genai_version() -> str:
    return version("genai-prices")


# -- the report ----------------------------------------------------------------


@dataclass(slots=True)
class Group:
    key: str
    exchanges: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    token_cost: Decimal = _ZERO
    container_fees: Decimal = _ZERO
    containers: int = 0
    bases: set[str] = field(default_factory=set)
    unknown: int = 0

    @property
    def total(self) -> Decimal:
        return self.token_cost + self.container_fees

    @property
    def basis(self) -> str:
        if self.unknown:
            return "partial (some figures unknown)"
        if self.bases <= {"exact"}:
            return "exact"
        return "estimated"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "exchanges": self.exchanges,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "token_cost": str(self.token_cost),
            "containers": self.containers,
            "container_fees": str(self.container_fees),
            "total": str(self.total),
            "basis": self.basis,
        }


@dataclass(slots=True)
class CostReport:
    by: str
    groups: list[Group]
    items: list[dict[str, Any]]
    containers: list[dict[str, Any]]
    unattributed: list[dict[str, Any]]
    fee_table: FeeTable

    @property
    def total(self) -> Decimal:
        return sum((g.total for g in self.groups), _ZERO)

    def to_json(self) -> dict[str, Any]:
        total = Group("total")
        for g in self.groups:
            total.exchanges += g.exchanges
            total.input_tokens += g.input_tokens
            total.cached_tokens += g.cached_tokens
            total.output_tokens += g.output_tokens
            total.reasoning_tokens += g.reasoning_tokens
            total.token_cost += g.token_cost
            total.container_fees += g.container_fees
            total.containers += g.containers
            total.bases |= g.bases
            total.unknown += g.unknown
        if self.by == "label":
            # A session with several labels is in several groups: sum the items instead.
            total = _sum_items(self.items, self.containers)
        possible = sum(
            (Decimal(u["possible_fee"]) for u in self.unattributed if u["possible_fee"]), _ZERO
        )
        return {
            "by": self.by,
            "groups": [g.to_json() for g in self.groups],
            "total": total.to_json(),
            "exchanges": self.items,
            "containers": self.containers,
            "possible_unattributed_containers": self.unattributed,
            "possible_unattributed_fees": str(possible),
            "fee_table": {"source": self.fee_table.source, "as_of": self.fee_table.as_of},
        }


def _sum_items(items: list[dict[str, Any]], containers: list[dict[str, Any]]) -> Group:
    g = Group("total")
    for item in items:
        g.exchanges += 1
        g.input_tokens += item["input_tokens"] or 0
        g.cached_tokens += item["cached_tokens"] or 0
        g.output_tokens += item["output_tokens"] or 0
        g.reasoning_tokens += item["reasoning_tokens"] or 0
        if item["token_cost"] is None:
            g.unknown += 1
        else:
            g.token_cost += Decimal(item["token_cost"])
            g.bases.add(item["token_basis"])
    for c in containers:
        if c["fee"] is None:
            g.unknown += c["charged"]
        else:
            g.container_fees += Decimal(c["fee"])
            g.containers += 1
            g.bases.add(c["fee_basis"])
    return g


def _day(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // _SECOND, dt.UTC).strftime("%Y-%m-%d")


def cost_report(
    conn: sa.Connection,
    fee_table: FeeTable,
    *,
    by: str = "session",
    since_ns: int | None = None,
    until_ns: int | None = None,
    sessions: dict[str, tuple[str, dict[str, str]]] | None = None,
    idle_minutes: int | None = None,
) -> CostReport:
    """Price the costs projection. ``sessions`` maps id → (name, labels) for grouping."""
    sessions = sessions or {}
    t = pj_costs
    query = sa.select(t).order_by(t.c.first_position)
    if since_ns is not None:
        query = query.where(t.c.at_ns >= since_ns)
    if until_ns is not None:
        query = query.where(t.c.at_ns < until_ns)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    by_exchange = {r["exchange_id"]: r for r in rows}
    groups: dict[str, Group] = {}

    def keys(session_id: str, at_ns: int, model: str | None) -> list[str]:
        if by == "session":
            name = sessions.get(session_id, ("", {}))[0]
            return [f"{name} ({session_id[:8]})" if name else session_id]
        if by == "day":
            return [_day(at_ns)]
        if by == "model":
            return [model or "(unknown model)"]
        labels = sessions.get(session_id, ("", {}))[1]
        return [f"{k}={v}" for k, v in sorted(labels.items())] or ["(no labels)"]

    def group(key: str) -> Group:
        if key not in groups:
            groups[key] = Group(key)
        return groups[key]

    items = []
    for r in rows:
        cost = token_cost(
            r["model"] or r["requested_model"],
            r["at_ns"],
            r["input_tokens"],
            r["cached_tokens"],
            r["output_tokens"],
            r["service_tier"],
        )
        model = r["model"] or r["requested_model"]
        items.append(
            {
                "exchange_id": r["exchange_id"],
                "session_id": r["session_id"],
                "response_id": r["response_id"],
                "day": _day(r["at_ns"]),
                "model": model,
                "status": r["status"],
                "input_tokens": r["input_tokens"],
                "cached_tokens": r["cached_tokens"],
                "output_tokens": r["output_tokens"],
                "reasoning_tokens": r["reasoning_tokens"],
                "token_cost": None if cost.amount is None else str(cost.amount),
                "token_basis": cost.basis,
                "token_rule": cost.rule,
                "code_interpreter_calls": r["ci_calls"],
                "containers": json.loads(r["containers"]),
            }
        )
        for key in keys(r["session_id"], r["at_ns"], model):
            g = group(key)
            g.exchanges += 1
            g.input_tokens += r["input_tokens"] or 0
            g.cached_tokens += r["cached_tokens"] or 0
            g.output_tokens += r["output_tokens"] or 0
            g.reasoning_tokens += r["reasoning_tokens"] or 0
            if cost.amount is None:
                g.unknown += 1
            else:
                g.token_cost += cost.amount
                g.bases.add(cost.basis)

    containers = []
    for c in container_rows(conn):
        created = c.created_at_ns if c.created_at_ns is not None else c.first_activity_ns
        if since_ns is not None and created < since_ns:
            continue
        if until_ns is not None and created >= until_ns:
            continue
        charged = c.created_via in ("auto", "api")
        fee: Fee | None = None
        if charged:
            idle = idle_minutes or c.expires_after_minutes or DEFAULT_IDLE_MINUTES
            end = c.last_activity_ns + idle * 60 * _SECOND
            if c.deleted_at_ns is not None:
                end = min(end, c.deleted_at_ns)
            fee = fee_table.fee(c.memory, created, c.last_activity_ns, end)
        creator = by_exchange.get(c.created_exchange_id or "")
        model = creator["model"] or creator["requested_model"] if creator else None
        containers.append(
            {
                "container_id": c.container_id,
                "memory": c.memory,
                "created_via": c.created_via,
                "charged": charged,
                "charged_to_exchange": c.created_exchange_id if charged else None,
                "session_id": c.session_id,
                "day": _day(created),
                "fee": None if fee is None or fee.amount is None else str(fee.amount),
                "fee_basis": fee.basis if fee is not None else "not charged here",
                "fee_rule": fee.rule
                if fee is not None
                else "created outside this log (used by explicit id): charged where it was created",
            }
        )
        if fee is None:
            continue
        for key in keys(c.session_id, created, model or "(containers api)"):
            g = group(key)
            if fee.amount is None:
                g.unknown += 1
            else:
                g.container_fees += fee.amount
                g.containers += 1
                g.bases.add(fee.basis)

    unattributed = []
    for r in rows:
        if r["ci_container"] == "auto" and r["ci_calls"] == 0:
            memory = r["ci_memory"] or DEFAULT_MEMORY
            fee = fee_table.fee(memory, r["at_ns"], r["at_ns"], r["at_ns"])
            unattributed.append(
                {
                    "exchange_id": r["exchange_id"],
                    "session_id": r["session_id"],
                    "response_id": r["response_id"],
                    "day": _day(r["at_ns"]),
                    "memory": memory,
                    "status": r["status"],
                    "possible_fee": None if fee.amount is None else str(fee.amount),
                    "rule": "code_interpreter enabled with container auto but no call recorded: "
                    "OpenAI may have created and billed a container; not in totals; " + fee.rule,
                }
            )
    ordered = sorted(groups.values(), key=lambda g: g.key)
    return CostReport(by, ordered, items, containers, unattributed, fee_table)
