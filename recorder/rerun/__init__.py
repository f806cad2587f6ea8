"""Model migration: re-issue a recorded session with another model, record it, compare the two.

Guarantees:

* :func:`rerun` sends the original session's requests in order (see
  :mod:`recorder.rerun.issue` for what is rewritten: the model, the
  overrides, and the ids of this run in place of the original's) to a live
  endpoint through the normal recorder, into a new session of the same log
  whose labels link it to the original (``rerun_of``, ``rerun_model``) and
  whose metadata holds the model, the overrides and the endpoint (``--upstream``
  or ``OPENAI_BASE_URL``, redacted as request URLs are: no user info, no
  secret query value). The API
  key is ``api_key`` or ``OPENAI_API_KEY``, as for the SDK; redaction keeps
  it, like every ``Authorization`` header, out of the log.
* An error from the endpoint (HTTP or mid-stream) is recorded and compared
  like any answer, and the rerun goes on; a request that cannot reach the
  endpoint is recorded as a transport error, and the ones after it are not
  sent (a dead endpoint is not retried once per request). Neither is judged
  a change of behaviour: their verdict is ``not compared``, and
  :attr:`RerunResult.unreachable` says why.
* :func:`compare_sessions` compares two sessions of the same requests,
  paired in order (see :mod:`recorder.rerun.compare` for the verdicts); the
  rerun's result is that comparison plus the notes of what was rewritten.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from recorder.errors import CodetapeError
from recorder.redact import Redactor
from recorder.rerun.compare import (
    BEHAVIOUR,
    IDENTICAL,
    NOT_COMPARED,
    OUTPUT,
    CallComparison,
    ExchangeComparison,
    compare_exchange,
    money,
)
from recorder.rerun.issue import IdMap, Issued, apply_overrides, rewrite
from recorder.store.store import EventStore, SessionInfo

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "BEHAVIOUR",
    "IDENTICAL",
    "NOT_COMPARED",
    "OUTPUT",
    "CallComparison",
    "ExchangeComparison",
    "RerunError",
    "RerunResult",
    "apply_overrides",
    "compare_sessions",
    "rerun",
]


class RerunError(CodetapeError):
    """The rerun cannot start (no API key, a bad endpoint URL, nothing to re-issue)."""


@dataclass(slots=True)
class RerunResult:
    """The comparison of an original session with its rerun."""

    original: SessionInfo
    rerun: SessionInfo
    model: str
    exchanges: list[ExchangeComparison]
    notes: list[str] = field(default_factory=list)
    unreachable: str | None = None
    """Why the endpoint could not be reached, when a request could not be sent."""

    def recorded(self) -> str:
        """What the rerun's session holds, in words."""
        sent = [x for x in self.exchanges if x.new is not None]
        failed = sum(x.new.outcome == "transport_error" for x in sent if x.new is not None)
        answered = len(sent) - failed
        parts = [f"{answered} answered request(s)"] if answered or not failed else []
        if failed:
            parts.append(
                f"{failed} {'that' if parts else 'request(s) that'} could not reach the endpoint "
                "(recorded as a transport error)"
            )
        return " and ".join(parts)

    def summary(self) -> dict[str, Any]:
        verdicts = Counter(x.verdict for x in self.exchanges)
        judged = [x for x in self.exchanges if x.verdict != NOT_COMPARED]

        def total(side: str) -> dict[str, Any]:
            tokens = {"input_tokens": 0, "output_tokens": 0}
            cost = Decimal(0)
            unknown = 0
            latency: int | None = 0
            calls = 0
            for x in judged:  # both sides of the same exchanges, like with like
                view = x.old if side == "original" else x.new
                if view is None:
                    continue
                usage = view.usage or {}
                for key in tokens:
                    tokens[key] += usage.get(key) or 0
                amount = x.old_cost if side == "original" else x.new_cost
                if amount is None:
                    unknown += 1
                else:
                    cost += amount
                latency = (
                    None
                    if latency is None or view.last_offset_ns is None
                    else latency + view.last_offset_ns
                )
                calls += len(view.calls)
            return {
                **tokens,
                "cost": str(cost),
                "unknown_costs": unknown,
                "latency_ms": None if latency is None else round(latency / 1e6, 3),
                "code_interpreter_calls": calls,
            }

        return {
            "exchanges": len(self.exchanges),
            IDENTICAL: verdicts.get(IDENTICAL, 0),
            OUTPUT: verdicts.get(OUTPUT, 0),
            BEHAVIOUR: verdicts.get(BEHAVIOUR, 0),
            NOT_COMPARED: verdicts.get(NOT_COMPARED, 0),
            "original": total("original"),
            "rerun": total("rerun"),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "original": {"session_id": self.original.id, "name": self.original.name},
            "rerun": {"session_id": self.rerun.id, "name": self.rerun.name},
            "model": self.model,
            "summary": self.summary(),
            "exchanges": [x.to_json() for x in self.exchanges],
            "notes": self.notes,
            "unreachable": self.unreachable,
        }

    def render(self) -> str:
        from recorder.report.timeline import duration

        lines = [
            f"rerun of {self.original.name!r} ({self.original.id[:8]}) with model {self.model}: "
            f"recorded as {self.rerun.name!r} ({self.rerun.id[:8]})"
        ]
        for x in self.exchanges:
            lines.extend(x.render())
        s = self.summary()
        o, r = s["original"], s["rerun"]

        def dollars(side: dict[str, Any]) -> str:
            unknown = side["unknown_costs"]
            return money(Decimal(side["cost"])) + (f" (+{unknown} unknown)" if unknown else "")

        def ms(v: float | None) -> str:
            return duration(None if v is None else int(v * 1e6))

        unjudged = ""
        if s[NOT_COMPARED]:
            unjudged = f", {s[NOT_COMPARED]} not compared (never reached the endpoint)"
        lines.append(
            f"summary: {s['exchanges']} exchange(s): {s[IDENTICAL]} identical, {s[OUTPUT]} "
            f"changed output, {s[BEHAVIOUR]} changed behaviour{unjudged}"
        )
        if s[NOT_COMPARED] < s["exchanges"]:
            lines.append(
                f"  tokens in/out {o['input_tokens']}/{o['output_tokens']} → "
                f"{r['input_tokens']}/{r['output_tokens']}; cost {dollars(o)} → "
                f"{dollars(r)}; latency {ms(o['latency_ms'])} → {ms(r['latency_ms'])}; "
                f"code interpreter calls {o['code_interpreter_calls']} → "
                f"{r['code_interpreter_calls']}"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        if self.unreachable is not None:
            lines.append(
                f"recorded: session {self.rerun.name!r} ({self.rerun.id[:8]}) holds "
                f"{self.recorded()}"
            )
        return "\n".join(lines)


def compare_sessions(
    store: EventStore,
    original: str,
    rerun_session: str,
    *,
    issued: list[Issued] | None = None,
    model: str = "",
    unreached: set[str] | None = None,
) -> RerunResult:
    """Compare two sessions of the same requests, exchange by exchange, in order.

    ``issued`` (from :func:`rerun`) says which original exchanges were sent;
    without it every original exchange is paired with the next rerun one.
    ``unreached``: ids of the original exchanges whose rerun never reached the
    endpoint (``not compared``).
    """
    from recorder.report.gather import gather

    old_view = gather(store, original)
    new_view = gather(store, rerun_session)
    remaining = list(new_view.exchanges)
    sent = {i.original.id: i for i in issued} if issued is not None else None
    comparisons = []
    for old in old_view.exchanges:
        item = sent.get(old.id) if sent is not None else None
        notes = item.notes if item is not None else []
        went = sent is None or (item is not None and item.exchange is not None)
        new = remaining.pop(0) if went and remaining else None
        comparisons.append(
            compare_exchange(
                old, new, old_view, new_view, notes, unreached=old.id in (unreached or ())
            )
        )
    return RerunResult(old_view.info, new_view.info, model, comparisons)


def _base_url(upstream: str | None) -> str | None:
    if upstream is None:
        return None
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # Said as it would be stored: a password in a mistyped URL is not for the console.
        shown = Redactor().url(upstream)
        raise RerunError(f"--upstream wants an http(s) URL, got {shown!r}")
    if parts.path in ("", "/"):
        return upstream.rstrip("/") + "/v1"
    return upstream.rstrip("/")


def rerun(
    store: EventStore,
    session: str,
    *,
    model: str,
    upstream: str | None = None,
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
    api_key: str | None = None,
    transport: httpx2.BaseTransport | None = None,
) -> RerunResult:
    """Re-issue ``session`` with ``model`` against ``upstream`` (the SDK's base URL; a URL
    without a path means its ``/v1``; default: ``OPENAI_BASE_URL``, else OpenAI's), record
    it, and compare. ``transport`` replaces the HTTP transport under the recorder."""
    import openai

    from recorder.capture.session import CaptureSession
    from recorder.client import record
    from replay.reissue import reissue, supported
    from replay.source import exchanges_from_events

    if not model.strip():
        raise RerunError("the model is empty: name the model every request is sent with")
    overrides = dict(overrides or {})
    info = store.find_session(session)
    original = exchanges_from_events(store.session_events(info.id))
    if not original:
        raise RerunError(f"session {info.name or info.id!r} has no requests to re-issue")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise RerunError("no API key: set OPENAI_API_KEY (it is sent, never stored)")
    base_url = _base_url(upstream)
    capture = CaptureSession(
        store,
        name or f"{info.name or info.id[:8]} rerun with {model}",
        labels={**info.labels, "rerun_of": info.id, "rerun_model": model},
        metadata={
            "rerun": {
                "of": info.id,
                "model": model,
                "overrides": overrides,
                "upstream": base_url or os.environ.get("OPENAI_BASE_URL") or "default",
            }
        },
        # A comparison over events that were not stored would mislead: fail instead.
        on_store_error="raise",
    )
    idmap = IdMap()
    issued: list[Issued] = []
    notes: list[str] = []
    unreachable: str | None = None
    unreached: set[str] = set()
    try:
        with record(
            store,
            capture,
            transport=transport,
            api_key=key,
            base_url=base_url,
            max_retries=0,
        ) as client:
            for exchange in original:
                item = rewrite(exchange, model, overrides, idmap)
                if item.exchange is not None and not supported(item.exchange):
                    item.notes.append(f"no SDK call is known for {exchange.describe()}")
                    item = Issued(exchange, None, item.notes)
                if item.exchange is not None and unreachable is not None:
                    item.notes.append(f"not sent: the endpoint was unreachable ({unreachable})")
                    item = Issued(exchange, None, item.notes)
                    unreached.add(exchange.id)
                issued.append(item)
                if item.exchange is None:
                    continue
                try:
                    answer = reissue(client, item.exchange)
                except openai.APIConnectionError as exc:
                    unreachable = f"{type(exc).__name__}: {exc}"
                    unreached.add(exchange.id)
                    notes.append(f"{exchange.describe()}: could not reach the endpoint: {exc}")
                    continue
                except openai.APIError as exc:
                    item.notes.append(f"the SDK raised {type(exc).__name__}: {exc}")
                    continue
                idmap.learn(_recorded_object(exchange), _answer_object(answer))
    except openai.OpenAIError as exc:
        raise RerunError(f"cannot start the rerun: {exc}") from None
    finally:
        capture.close()
    result = compare_sessions(
        store, info.id, capture.id, issued=issued, model=model, unreached=unreached
    )
    result.notes.extend(notes)
    result.unreachable = unreachable
    return result


def _recorded_object(exchange: Any) -> Any:
    """The object the original run got back: the final response, or the JSON body."""
    from replay.source import json_body

    if exchange.streamed:
        found = None
        for chunk, t in zip(exchange.chunks, exchange.sse_types, strict=False):
            if t in ("response.completed", "response.failed", "response.incomplete"):
                data = json_body(chunk.data.split(b"data:", 1)[-1])
                if isinstance(data, dict):
                    found = data.get("response")
        return found
    return json_body(exchange.body)


def _answer_object(answer: Any) -> Any:
    """The same for what :func:`replay.reissue.reissue` returned on this run."""
    if isinstance(answer, list):
        for event in reversed(answer):
            response = getattr(event, "response", None)
            if response is not None and hasattr(response, "model_dump"):
                return response.model_dump(mode="json")
        return None
    if hasattr(answer, "model_dump"):
        return answer.model_dump(mode="json")
    return None
