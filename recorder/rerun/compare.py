"""Comparing a rerun with its original, exchange by exchange, as a reviewer reads it.

Guarantees: both sides come from the log through the same reader
(:func:`recorder.report.gather`), so a figure here is the one the report and
the cost report show. Per exchange: the tool calls (output item types, with
function names), per code interpreter call the code (``same`` / ``changed`` /
``missing`` / ``added``), whether it ran (its final status) and its outputs,
the final text, token usage, cost (tokens, plus container fees charged to the
exchange), and latency (whole response; per call code generation and
execution) when the recordings hold timing. The verdict:

* ``identical``: same status and tool calls, same code, outputs and text;
* ``changed output``: the same tool calls and no error, but the code, its
  outputs, a function call's arguments or the text differ;
* ``changed behaviour``: an error on one side only (or a different one), a
  different sequence of tool calls, a call or exchange missing on one side;
* ``not compared``: the request never reached the endpoint (it could not be
  connected to, or the rerun stopped sending after that): nothing the new
  model did is known, so nothing is judged.

Ids, timestamps and other per-run noise never count as a change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from recorder.report.gather import CallView, ExchangeView, SessionView
from recorder.report.timeline import duration

__all__ = [
    "BEHAVIOUR",
    "IDENTICAL",
    "NOT_COMPARED",
    "OUTPUT",
    "CallComparison",
    "ExchangeComparison",
    "compare_exchange",
    "money",
]

IDENTICAL = "identical"
OUTPUT = "changed output"
BEHAVIOUR = "changed behaviour"
NOT_COMPARED = "not compared"


def _outputs_key(outputs: list[dict[str, Any]] | None) -> Any:
    if outputs is None:
        return None
    return [{k: v for k, v in o.items() if k not in ("file_id", "container_id")} for o in outputs]


def _ns(value: int | None) -> float | None:
    return None if value is None else round(value / 1e6, 3)


@dataclass(frozen=True, slots=True)
class CallComparison:
    """One code interpreter call, paired by its order in the response."""

    index: int
    old: CallView | None
    new: CallView | None

    @property
    def code(self) -> str:
        if self.old is None:
            return "added"
        if self.new is None:
            return "missing"
        return "same" if self.old.code.strip() == self.new.code.strip() else "changed"

    @property
    def executed(self) -> str:
        if self.old is None or self.new is None:
            return self.code
        return "same" if self.old.status == self.new.status else "changed"

    @property
    def outputs(self) -> str:
        if self.old is None or self.new is None:
            return self.code
        same = _outputs_key(self.old.outputs) == _outputs_key(self.new.outputs)
        return "same" if same else "changed"

    def code_diff(self) -> list[str]:
        old = (self.old.code if self.old else "").replace("\r\n", "\n").splitlines()
        new = (self.new.code if self.new else "").replace("\r\n", "\n").splitlines()
        return list(difflib.unified_diff(old, new, "original", "rerun", lineterm="", n=1))[2:]

    def to_json(self) -> dict[str, Any]:
        def side(c: CallView | None) -> dict[str, Any] | None:
            if c is None:
                return None
            s = c.stage
            return {
                "call_id": c.call_id,
                "status": c.status,
                "code": c.code,
                "outputs": c.outputs,
                "code_generation_ms": _ns(s.code_generation_ns) if s else None,
                "execution_ms": _ns(s.execution_ns) if s else None,
            }

        return {
            "index": self.index,
            "code": self.code,
            "executed": self.executed,
            "outputs": self.outputs,
            "original": side(self.old),
            "rerun": side(self.new),
        }


def _cost(x: ExchangeView | None, fees: dict[str, Decimal]) -> Decimal | None:
    if x is None or x.cost is None or x.cost.get("token_cost") is None:
        return None
    return Decimal(x.cost["token_cost"]) + fees.get(x.id, Decimal(0))


def _tools(x: ExchangeView) -> list[str]:
    if x.tools or x.response_status in ("completed", "failed", "incomplete"):
        return x.tools
    return ["code_interpreter_call"] * len(x.calls)


def _failed(x: ExchangeView) -> bool:
    return x.outcome not in (None, "completed") or x.error is not None


def _error(x: ExchangeView) -> str:
    detail = x.error.get("message") if isinstance(x.error, dict) else None
    status = f"HTTP {x.status}" if x.status and x.status >= 400 else (x.outcome or "no ending")
    return f"{status}{': ' + str(detail) if detail else ''}"


@dataclass(slots=True)
class ExchangeComparison:
    """One original exchange and its rerun (``new`` None: not re-issued or not recorded)."""

    old: ExchangeView
    new: ExchangeView | None
    old_cost: Decimal | None
    new_cost: Decimal | None
    notes: list[str] = field(default_factory=list)
    calls: list[CallComparison] = field(default_factory=list)
    verdict: str = IDENTICAL
    reasons: list[str] = field(default_factory=list)

    @property
    def request(self) -> str:
        return f"#{self.old.index + 1} {self.old.method} {self.old.path}"

    @property
    def text(self) -> str:
        if self.new is None:
            return "missing"
        if self.old.text == self.new.text:
            return "same"
        return "missing" if not self.new.text else "changed"

    def to_json(self) -> dict[str, Any]:
        def side(x: ExchangeView | None, cost: Decimal | None) -> dict[str, Any] | None:
            if x is None:
                return None
            return {
                "exchange_id": x.id,
                "status": x.status,
                "outcome": x.outcome,
                "model": x.model or x.requested_model,
                "response_id": x.response_id,
                "error": x.error,
                "tool_calls": _tools(x),
                "text": x.text,
                "usage": x.usage,
                "cost": None if cost is None else str(cost),
                "latency_ms": _ns(x.last_offset_ns),
            }

        return {
            "request": self.request,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "notes": self.notes,
            "text": self.text,
            "calls": [c.to_json() for c in self.calls],
            "original": side(self.old, self.old_cost),
            "rerun": side(self.new, self.new_cost),
        }

    def render(self) -> list[str]:
        head = f"{self.request}: {self.verdict}"
        if self.reasons:
            head += f" ({'; '.join(self.reasons)})"
        lines = [head]
        new = self.new if self.verdict != NOT_COMPARED else None
        if new is not None:
            facts = [
                f"model {self.old.model or self.old.requested_model} → "
                f"{new.model or new.requested_model}"
            ]
            ou, nu = self.old.usage or {}, new.usage or {}
            if ou or nu:

                def io(u: dict[str, int | None]) -> str:
                    return f"{u['input_tokens']}/{u['output_tokens']}" if u else "—"

                facts.append(f"tokens {io(ou)} → {io(nu)} (in/out)")
            facts.append(f"cost {money(self.old_cost)} → {money(self.new_cost)}")
            facts.append(
                f"latency {duration(self.old.last_offset_ns)} → {duration(new.last_offset_ns)}"
            )
            lines.append("    " + "; ".join(facts))
        for c in self.calls:
            timing = ""
            o, n = c.old.stage if c.old else None, c.new.stage if c.new else None
            if (o is not None and o.timed) or (n is not None and n.timed):
                timing = (
                    f"; code generation {duration(o.code_generation_ns if o else None)} → "
                    f"{duration(n.code_generation_ns if n else None)}, execution "
                    f"{duration(o.execution_ns if o else None)} → "
                    f"{duration(n.execution_ns if n else None)}"
                )
            status = f"{c.old.status if c.old else '—'} → {c.new.status if c.new else '—'}"
            lines.append(
                f"    call {c.index + 1}: code {c.code}, ran {status}, outputs {c.outputs}{timing}"
            )
            if c.code == "changed":
                diff = c.code_diff()
                lines.extend("      " + d for d in diff[:12])
                if len(diff) > 12:
                    lines.append(f"      … {len(diff) - 12} more diff lines (--json has both)")
        if new is not None and self.text != "same":
            lines.append(f"    final text {self.text}")
            for d in list(
                difflib.unified_diff(
                    self.old.text.splitlines(), new.text.splitlines(), lineterm="", n=0
                )
            )[2:8]:
                lines.append("      " + d)
        lines.extend(f"    note: {n}" for n in self.notes)
        return lines


def money(value: Decimal | None) -> str:
    if value is None:
        return "unknown"
    text = f"{value:.8f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _fees(view: SessionView) -> dict[str, Decimal]:
    fees: dict[str, Decimal] = {}
    for c in view.container_fees:
        xid = c.get("charged_to_exchange")
        if xid and c.get("fee") is not None:
            fees[xid] = fees.get(xid, Decimal(0)) + Decimal(c["fee"])
    return fees


def compare_exchange(
    old: ExchangeView,
    new: ExchangeView | None,
    old_session: SessionView,
    new_session: SessionView | None,
    notes: list[str],
    *,
    unreached: bool = False,
) -> ExchangeComparison:
    """Compare one exchange with its rerun and give the verdict; ``unreached``: its request
    never reached the endpoint, so there is nothing to compare (``not compared``)."""
    result = ExchangeComparison(
        old,
        new,
        _cost(old, _fees(old_session)),
        _cost(new, _fees(new_session)) if new_session is not None else None,
        list(notes),
    )
    if unreached:
        result.verdict = NOT_COMPARED
        result.reasons.append("the request did not reach the endpoint")
        return result
    if new is None:
        result.verdict = BEHAVIOUR
        result.reasons.append("missing: no rerun of this request")
        return result
    count = max(len(old.calls), len(new.calls))
    result.calls = [
        CallComparison(
            n,
            old.calls[n] if n < len(old.calls) else None,
            new.calls[n] if n < len(new.calls) else None,
        )
        for n in range(count)
    ]
    behaviour, output = result.reasons, []
    if _failed(old) != _failed(new) or (_failed(old) and _error(old) != _error(new)):
        if _failed(new):
            behaviour.append(f"an error: {_error(new)}")
        else:
            behaviour.append(f"the original's error is gone ({_error(old)})")
    old_tools, new_tools = _tools(old), _tools(new)
    if old_tools != new_tools:
        behaviour.append(f"different tool calls: {old_tools or 'none'} → {new_tools or 'none'}")
    for c in result.calls:
        if c.code in ("missing", "added") and old_tools == new_tools:
            behaviour.append(f"call {c.index + 1} {c.code}")
        elif c.code == "changed" or c.executed == "changed" or c.outputs == "changed":
            output.append(f"call {c.index + 1}: code {c.code}, outputs {c.outputs}")
    if old_tools == new_tools and old.tool_arguments != new.tool_arguments:
        output.append("function call arguments changed")
    if old.text != new.text:
        output.append("final text changed")
    if behaviour:
        result.verdict = BEHAVIOUR
    elif output:
        result.verdict = OUTPUT
        result.reasons.extend(output)
    return result
