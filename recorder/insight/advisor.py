"""Container reuse advisor: the containers a session paid for while it already had one to reuse.

Judged from the log alone, on the containers and costs projections, with the
containers projection's own rule for whether a container is alive
(:meth:`~recorder.projections.containers.ContainerInfo.state_at`: its own
``expires_after``, else the idle timeout; not after its deletion).

Guarantees:

* A charged container C (created by the log: ``created_via`` ``auto`` or
  ``api``) is *avoidable* when, at its creation time, another charged
  container of the same memory tier, created earlier by the same *group*
  (the same session, or with ``by="label=KEY"`` the sessions sharing that
  label's value), was alive and reusable. The reusable container named is
  the earliest such one.
* ``fee`` is C's fee under the fee-table rule of C's creation day (the same
  figure the cost report charges). ``avoidable`` is that fee minus what the
  container C's work would have gone to would have cost more, its life
  extended to cover C's (zero extra under the flat ``per_container`` rule, so
  there ``avoidable == fee``). Summed over a group, it is exactly the actual
  fees minus the fees of the same work with every avoidable container's
  calls sent to the container it could have reused.
* Requests that enabled code_interpreter with ``container: {"type":
  "auto"}`` and made no call (possible unattributed containers, as in the
  cost report) are listed separately, never in a total.
* Money is :class:`~decimal.Decimal`; a fee the table cannot price is
  ``None`` and counted as unknown, never as zero.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from recorder.errors import CodetapeError
from recorder.projections.containers import (
    DEFAULT_IDLE_MINUTES,
    DEFAULT_MEMORY,
    ContainerInfo,
    container_rows,
)
from recorder.projections.fees import Fee, FeeTable
from recorder.store.schema import event_rows, pj_ci_stages, pj_costs

__all__ = [
    "Advice",
    "AdviceTotal",
    "AvoidableContainer",
    "BadGrouping",
    "PossibleUnattributed",
    "advise_rows",
    "parse_grouping",
]

_SECOND = 1_000_000_000
_MINUTE = 60 * _SECOND
_ZERO = Decimal(0)


class BadGrouping(CodetapeError):
    """``by`` is neither ``session`` nor ``label=KEY``."""


def parse_grouping(by: str) -> str | None:
    """The label key of ``label=KEY``, ``None`` for ``session``; else :class:`BadGrouping`."""
    if by == "session":
        return None
    key = by.removeprefix("label=")
    if by.startswith("label=") and key:
        return key
    raise BadGrouping(f"cannot group the advice by {by!r}: use session or label=KEY")


def _day(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // _SECOND, dt.UTC).strftime("%Y-%m-%d")


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class AvoidableContainer:
    """A container created while the group already had a reusable one of its tier."""

    container_id: str
    memory: str
    group: str
    session_id: str
    day: str
    created_at_ns: int
    created_via: str
    """``auto`` (a responses request with ``container: {"type": "auto"}``) or ``api``."""
    exchange_id: str | None
    """The exchange whose request created it."""
    request_position: int | None
    """The log position of that request."""
    response_id: str | None
    call_ids: tuple[str, ...]
    """The code interpreter calls of that exchange that ran in it."""
    reusable_id: str
    reusable_response_id: str | None
    reusable_expires_at_ns: int
    """When the reusable container would have expired had nothing used it again."""
    fee: Decimal | None
    avoidable: Decimal | None
    basis: str
    rule: str
    suggestion: str
    """The one-line code change that would have reused it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "memory": self.memory,
            "group": self.group,
            "session_id": self.session_id,
            "day": self.day,
            "created_at_ns": self.created_at_ns,
            "created_via": self.created_via,
            "exchange_id": self.exchange_id,
            "request_position": self.request_position,
            "response_id": self.response_id,
            "call_ids": list(self.call_ids),
            "could_reuse": self.reusable_id,
            "could_reuse_response_id": self.reusable_response_id,
            "could_reuse_expires_at_ns": self.reusable_expires_at_ns,
            "fee": _money(self.fee),
            "avoidable_fee": _money(self.avoidable),
            "basis": self.basis,
            "rule": self.rule,
            "suggestion": self.suggestion,
        }


@dataclass(frozen=True, slots=True)
class PossibleUnattributed:
    """A ``container: auto`` request without a call: OpenAI may have made and billed one."""

    exchange_id: str
    session_id: str
    group: str
    day: str
    memory: str
    request_position: int | None
    response_id: str | None
    possible_fee: Decimal | None
    rule: str
    reusable_id: str | None
    """A container of the group and tier alive at the time, which it could have named."""

    def to_json(self) -> dict[str, Any]:
        return {
            "exchange_id": self.exchange_id,
            "session_id": self.session_id,
            "group": self.group,
            "day": self.day,
            "memory": self.memory,
            "request_position": self.request_position,
            "response_id": self.response_id,
            "possible_fee": _money(self.possible_fee),
            "rule": self.rule,
            "could_reuse": self.reusable_id,
        }


@dataclass(slots=True)
class AdviceTotal:
    """Charged and avoidable containers and fees of one group, one day, or everything."""

    key: str
    containers: int = 0
    fees: Decimal = _ZERO
    avoidable_containers: int = 0
    avoidable: Decimal = _ZERO
    unknown: int = 0
    """Fees the table could not price (left out of the sums above)."""
    bases: set[str] = field(default_factory=set)

    @property
    def basis(self) -> str:
        if self.unknown:
            return "partial (some fees unknown)"
        return "exact" if self.bases <= {"exact"} else "estimated"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "containers": self.containers,
            "fees": str(self.fees),
            "avoidable_containers": self.avoidable_containers,
            "avoidable_fees": str(self.avoidable),
            "unknown_fees": self.unknown,
            "basis": self.basis,
        }


@dataclass(frozen=True, slots=True)
class Advice:
    """What :func:`advise_rows` found (``by`` is ``session`` or ``label=KEY``)."""

    by: str
    avoidable: list[AvoidableContainer]
    unattributed: list[PossibleUnattributed]
    groups: list[AdviceTotal]
    days: list[AdviceTotal]
    total: AdviceTotal
    fee_table: FeeTable
    idle_minutes: int | None
    session_groups: dict[str, str]
    """Session id → its group key, for every session with a charged container."""

    def for_session(self, session_id: str) -> list[AvoidableContainer]:
        return [a for a in self.avoidable if a.session_id == session_id]

    def line(self, session_id: str) -> str:
        """One sentence on ``session_id``'s containers, as the demo prints it."""
        charged = [t for t in self.groups if t.key == self.session_groups.get(session_id)]
        made = charged[0].containers if charged else 0
        mine = self.for_session(session_id)
        if not mine:
            return (
                f"container advice: {made} container(s) created, none while another of its "
                "tier was still reusable: nothing to save by reuse"
            )
        amounts = [a.avoidable for a in mine]
        known = sum((a for a in amounts if a is not None), _ZERO)
        unknown = " (some fees unknown)" if any(a is None for a in amounts) else ""
        return (
            f"container advice: {len(mine)} of {made} container(s) were created while a "
            f"reusable one of the same tier existed: ${known} avoidable{unknown}; e.g. "
            f"{mine[0].suggestion}"
        )

    def to_json(self) -> dict[str, Any]:
        possible = sum((u.possible_fee for u in self.unattributed if u.possible_fee), _ZERO)
        return {
            "by": self.by,
            "idle_minutes": self.idle_minutes,
            "rule": "a container is avoidable when, at its creation, another container of the "
            "same memory tier created by the same group was alive and reusable "
            f"(its own expires_after, else {self.idle_minutes or DEFAULT_IDLE_MINUTES} idle "
            "minutes); avoidable fee = its fee minus what reusing the other would have added",
            "total": self.total.to_json(),
            "groups": [g.to_json() for g in self.groups],
            "days": [d.to_json() for d in self.days],
            "avoidable_containers": [a.to_json() for a in self.avoidable],
            "possible_unattributed_containers": [u.to_json() for u in self.unattributed],
            "possible_unattributed_fees": str(possible),
            "fee_table": {"source": self.fee_table.source, "as_of": self.fee_table.as_of},
        }

    CSV_FIELDS = (
        "kind",
        "day",
        "group",
        "session_id",
        "container_id",
        "memory",
        "exchange_id",
        "request_position",
        "response_id",
        "could_reuse",
        "fee",
        "avoidable_fee",
        "basis",
        "rule",
        "suggestion",
    )

    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per avoidable container, then one per possible unattributed container."""
        rows: list[dict[str, Any]] = []
        for a in self.avoidable:
            rows.append({"kind": "avoidable", **a.to_json()})
        for u in self.unattributed:
            rows.append(
                {
                    "kind": "possible_unattributed",
                    **u.to_json(),
                    "container_id": "",
                    "fee": _money(u.possible_fee),
                    "avoidable_fee": "",
                    "basis": "not in totals",
                    "suggestion": "",
                }
            )
        return rows


# -- judging ---------------------------------------------------------------------


@dataclass(slots=True)
class _Kept:
    """A container kept in the counterfactual, carrying the work of those merged into it."""

    info: ContainerInfo
    created: int
    last: int
    end: int


def _born(c: ContainerInfo) -> int:
    return c.created_at_ns if c.created_at_ns is not None else c.first_activity_ns


def _end(c: ContainerInfo, idle_minutes: int | None) -> int:
    """When the container stops costing: as the cost report estimates it."""
    idle = idle_minutes or c.expires_after_minutes or DEFAULT_IDLE_MINUTES
    end = c.last_activity_ns + idle * _MINUTE
    return end if c.deleted_at_ns is None else min(end, c.deleted_at_ns)


def _fee(table: FeeTable, k: _Kept) -> Fee:
    return table.fee(k.info.memory, k.created, k.last, k.end)


def _suggestion(c: ContainerInfo, reuse: str, memory: str) -> str:
    if c.created_via == "api":
        return f'container_id = "{reuse}"  # instead of client.containers.create(...)'
    was = '{"type": "auto"' + (f', "memory_limit": "{memory}"' if memory != "1g" else "") + "}"
    return f'tools=[{{"type": "code_interpreter", "container": "{reuse}"}}]  # instead of {was}'


@dataclass(frozen=True, slots=True)
class _Creator:
    response_id: str | None
    request_position: int | None


def advise_rows(
    conn: sa.Connection,
    fee_table: FeeTable,
    sessions: dict[str, tuple[str, dict[str, str]]],
    *,
    by: str = "session",
    idle_minutes: int | None = None,
) -> Advice:
    """Judge every container of the (caught-up) projections. ``sessions``: id → (name, labels)."""
    label = parse_grouping(by)

    def group_of(session_id: str) -> str:
        name, labels = sessions.get(session_id, ("", {}))
        if label is not None and label in labels:
            return f"{label}={labels[label]}"
        # Without the label, a session shares containers with nobody but itself.
        return f"{name} ({session_id[:8]})" if name else session_id

    charged = [c for c in container_rows(conn) if c.created_via in ("auto", "api")]
    charged.sort(key=_born)  # stable: log order among equal times
    creators = _creators(conn, [c.created_exchange_id for c in charged])
    calls = _calls(conn, [c.created_exchange_id for c in charged])

    groups: dict[str, AdviceTotal] = {}
    days: dict[str, AdviceTotal] = {}
    total = AdviceTotal("total")
    avoidable: list[AvoidableContainer] = []
    earlier: dict[tuple[str, str], list[ContainerInfo]] = {}
    kept: dict[str, _Kept] = {}
    """Container id → the kept container its work goes to in the counterfactual."""
    session_groups: dict[str, str] = {}

    for c in charged:
        memory = c.memory or DEFAULT_MEMORY
        key = group_of(c.session_id)
        session_groups[c.session_id] = key
        born = _born(c)
        mine = _Kept(c, born, c.last_activity_ns, _end(c, idle_minutes))
        fee = _fee(fee_table, mine)
        targets = [d for d in earlier.get((key, memory), []) if d.state_at(born, idle_minutes)[1]]
        earlier.setdefault((key, memory), []).append(c)
        saved: Decimal | None = None
        rule = fee.rule
        if targets:
            target = targets[0]
            root = kept[target.container_id]
            before = _fee(fee_table, root)
            grown = _Kept(
                root.info, root.created, max(root.last, mine.last), max(root.end, mine.end)
            )
            after = _fee(fee_table, grown)
            kept[c.container_id] = root
            root.last, root.end = grown.last, grown.end
            extra: Decimal | None = None
            if before.amount is not None and after.amount is not None:
                extra = after.amount - before.amount
            if fee.amount is not None and extra is not None:
                saved = fee.amount - extra
            if root.info.container_id != target.container_id:
                via = f" (which carries {target.container_id}'s work)"
            else:
                via = ""
            rule += (
                f"; reusing {root.info.container_id}{via} would have added "
                f"{'an unknown amount' if extra is None else '$' + str(extra)}"
            )
            _, _, expires = target.state_at(born, idle_minutes)
            creator = creators.get(c.created_exchange_id or "", _Creator(None, None))
            target_creator = creators.get(target.created_exchange_id or "", _Creator(None, None))
            avoidable.append(
                AvoidableContainer(
                    container_id=c.container_id,
                    memory=memory,
                    group=key,
                    session_id=c.session_id,
                    day=_day(born),
                    created_at_ns=born,
                    created_via=c.created_via,
                    exchange_id=c.created_exchange_id,
                    request_position=creator.request_position,
                    response_id=creator.response_id,
                    call_ids=tuple(calls.get((c.created_exchange_id or "", c.container_id), ())),
                    reusable_id=target.container_id,
                    reusable_response_id=target_creator.response_id,
                    reusable_expires_at_ns=expires or born,
                    fee=fee.amount,
                    avoidable=saved,
                    basis=fee.basis if saved is not None else "unknown",
                    rule=rule,
                    suggestion=_suggestion(c, target.container_id, memory),
                )
            )
        else:
            kept[c.container_id] = mine
        for t in (
            groups.setdefault(key, AdviceTotal(key)),
            days.setdefault(_day(born), AdviceTotal(_day(born))),
            total,
        ):
            t.containers += 1
            if fee.amount is None:
                t.unknown += 1
            else:
                t.fees += fee.amount
                t.bases.add(fee.basis)
            if targets:
                t.avoidable_containers += 1
                if saved is None:
                    t.unknown += 1
                else:
                    t.avoidable += saved

    unattributed = _unattributed(
        conn, fee_table, group_of, earlier, idle_minutes, {c.container_id for c in charged}
    )
    return Advice(
        by=by,
        avoidable=avoidable,
        unattributed=unattributed,
        groups=sorted(groups.values(), key=lambda g: g.key),
        days=sorted(days.values(), key=lambda d: d.key),
        total=total,
        fee_table=fee_table,
        idle_minutes=idle_minutes,
        session_groups=session_groups,
    )


def _creators(conn: sa.Connection, exchange_ids: Iterable[str | None]) -> dict[str, _Creator]:
    """Response id and request position of each creating exchange."""
    wanted = sorted({x for x in exchange_ids if x})
    found: dict[str, _Creator] = {}
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        responses = dict(
            conn.execute(
                sa.select(pj_costs.c.exchange_id, pj_costs.c.response_id).where(
                    pj_costs.c.exchange_id.in_(part)
                )
            ).all()
        )
        positions = dict(
            conn.execute(
                sa.select(event_rows.c.exchange_id, event_rows.c.position).where(
                    event_rows.c.exchange_id.in_(part), event_rows.c.seq == 0
                )
            ).all()
        )
        for xid in part:
            found[xid] = _Creator(responses.get(xid), positions.get(xid))
    return found


def _calls(
    conn: sa.Connection, exchange_ids: Iterable[str | None]
) -> dict[tuple[str, str], list[str]]:
    """(exchange id, container id) → the code interpreter call ids, in output order."""
    wanted = sorted({x for x in exchange_ids if x})
    t = pj_ci_stages
    found: dict[tuple[str, str], list[str]] = {}
    for start in range(0, len(wanted), 500):
        query = (
            sa.select(t.c.exchange_id, t.c.container_id, t.c.call_id)
            .where(t.c.exchange_id.in_(wanted[start : start + 500]))
            .order_by(t.c.first_position, t.c.output_index, t.c.call_id)
        )
        for xid, cid, call in conn.execute(query).all():
            found.setdefault((xid, cid or ""), []).append(call)
    return found


def _unattributed(
    conn: sa.Connection,
    fee_table: FeeTable,
    group_of: Callable[[str], str],
    earlier: dict[tuple[str, str], list[ContainerInfo]],
    idle_minutes: int | None,
    known: set[str],
) -> list[PossibleUnattributed]:
    t = pj_costs
    rows = conn.execute(
        sa.select(t)
        .where(t.c.ci_container == "auto", t.c.ci_calls == 0)
        .order_by(t.c.first_position)
    ).mappings()
    result = []
    for r in rows:
        memory = r["ci_memory"] or DEFAULT_MEMORY
        key = group_of(r["session_id"])
        at = r["at_ns"]
        fee = fee_table.fee(memory, at, at, at)
        alive = [d for d in earlier.get((key, memory), []) if d.state_at(at, idle_minutes)[1]]
        used = [c for c in json.loads(r["containers"] or "[]") if c in known]
        if used:
            continue  # the projection saw a container after all
        result.append(
            PossibleUnattributed(
                exchange_id=r["exchange_id"],
                session_id=r["session_id"],
                group=key,
                day=_day(at),
                memory=memory,
                request_position=r["first_position"],
                response_id=r["response_id"],
                possible_fee=fee.amount,
                rule="code_interpreter enabled with container auto but no call recorded: "
                "OpenAI may have created and billed a container; not in totals; " + fee.rule,
                reusable_id=alive[0].container_id if alive else None,
            )
        )
    return result
