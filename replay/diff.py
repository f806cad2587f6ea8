"""What changed between two recordings of the same requests, as a reviewer sees it.

Guarantees:

* Each exchange is reduced to a :class:`Summary` of what a reviewer cares
  about: request line, status, outcome, model, the sequence of SSE event
  types (runs collapsed to ``type ×N``), each output item (code run by code
  interpreter, its outputs, text, reasoning summaries, function calls), the
  error if any, and token usage. Ids, timestamps, ``sequence_number``,
  ``obfuscation`` padding and other per-run noise never appear in a summary,
  so re-recording the same behaviour gives an empty diff. Images and binary
  bodies are compared by size and SHA-256, not shown.
* Exchanges are paired in order by method and path, with id-like path
  segments (``cntr_…``, ``file-…``) generalised, so a re-recording that made
  one call more or less shows it as added or removed, not as a cascade.
* :func:`diff_recordings` is pure (no I/O); :meth:`DiffReport.render` gives
  text (multi-line values as unified diffs), :meth:`DiffReport.to_json` a
  JSON-able dict.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from replay.source import Exchange, Recording, json_body

__all__ = ["Change", "DiffReport", "ExchangeDiff", "Summary", "diff_recordings", "summarize"]

_ID_SEGMENT = re.compile(r"^(?:[a-z]+[_-][A-Za-z0-9]{8,}|[A-Za-z0-9]{24,})$")
# Keys whose values differ on every run whatever the behaviour.
_NOISE_KEYS = frozenset(
    {
        "id",
        "created_at",
        "completed_at",
        "expires_at",
        "last_active_at",
        "obfuscation",
        "sequence_number",
        "item_id",
        "response_id",
        "container_id",
        "file_id",
        "call_id",
        "previous_response_id",
        "encrypted_content",
        "prompt_cache_key",
        "safety_identifier",
        "bytes",
        "filename",
    }
)
_FINAL_TYPES = ("response.completed", "response.failed", "response.incomplete")


def _digest(data: bytes) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}"


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _NOISE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _data_url(url: str) -> str:
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        media = head.removeprefix("data:").split(";")[0]
        return f"{media} image, {_digest(payload.encode())}"
    return url


@dataclass(frozen=True, slots=True)
class Summary:
    """What one exchange did, without per-run noise (see the module docstring)."""

    request: str
    fields: dict[str, Any]


def _collapse(types: list[str]) -> list[str]:
    out: list[str] = []
    run_type: str | None = None
    run = 0
    for t in [*types, None]:
        if t == run_type:
            run += 1
            continue
        if run_type is not None:
            out.append(run_type if run == 1 else f"{run_type} ×{run}")
        run_type, run = t, 1
    return out


def _item(item: dict[str, Any]) -> dict[str, Any]:
    kind = item.get("type")
    out: dict[str, Any] = {"type": kind}
    if kind == "message":
        texts = []
        for part in item.get("content") or []:
            if isinstance(part, dict):
                if "text" in part:
                    texts.append(part["text"])
                if part.get("annotations"):
                    out["annotations"] = [_strip(a) for a in part["annotations"]]
        out["text"] = "".join(texts)
    elif kind == "code_interpreter_call":
        out["code"] = item.get("code")
        outputs = []
        for o in item.get("outputs") or []:
            if isinstance(o, dict) and o.get("type") == "logs":
                outputs.append({"logs": o.get("logs")})
            elif isinstance(o, dict) and o.get("type") == "image":
                outputs.append({"image": _data_url(str(o.get("url", "")))})
            else:
                outputs.append(_strip(o))
        out["outputs"] = outputs
        out["status"] = item.get("status")
    elif kind == "reasoning":
        out["summary"] = [s.get("text") for s in item.get("summary") or [] if isinstance(s, dict)]
    elif kind == "function_call":
        out["name"] = item.get("name")
        out["arguments"] = item.get("arguments")
    else:
        out.update(_strip(item))
    return out


def _usage(usage: Any) -> Any:
    if not isinstance(usage, dict):
        return usage
    flat: dict[str, Any] = {}
    for key, value in usage.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def _response_fields(response: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": response.get("model"),
        "response status": response.get("status"),
    }
    for n, item in enumerate(response.get("output") or []):
        if isinstance(item, dict):
            for key, value in _item(item).items():
                fields[f"output[{n}].{key}"] = value
    if response.get("error"):
        fields["error"] = _strip(response["error"])
    if response.get("incomplete_details"):
        fields["incomplete"] = response["incomplete_details"]
    fields["usage"] = _usage(response.get("usage"))
    return fields


def summarize(exchange: Exchange) -> Summary:
    """The reviewer's view of one exchange."""
    fields: dict[str, Any] = {"status": exchange.status, "outcome": exchange.outcome}
    if exchange.streamed:
        types = [t or "(untyped)" for t in exchange.sse_types]
        fields["events"] = _collapse(types)
        final: dict[str, Any] | None = None
        errors = []
        for chunk, t in zip(exchange.chunks, exchange.sse_types, strict=False):
            if t in _FINAL_TYPES or t == "error":
                data = json_body(chunk.data.split(b"data:", 1)[-1])
                if t == "error" and isinstance(data, dict):
                    errors.append(_strip(data))
                elif isinstance(data, dict) and isinstance(data.get("response"), dict):
                    final = data["response"]
        if errors:
            fields["error events"] = errors
        if final is not None:
            fields.update(_response_fields(final))
    else:
        body = exchange.body
        parsed = json_body(body)
        if isinstance(parsed, dict) and parsed.get("object") == "response":
            fields.update(_response_fields(parsed))
        elif parsed is not None:
            fields["body"] = _strip(parsed)
        elif body:
            fields["body"] = _digest(body)
    return Summary(_request_key(exchange), fields)


def _request_key(exchange: Exchange) -> str:
    segments = ["{id}" if _ID_SEGMENT.match(s) else s for s in exchange.path.split("/")]
    return f"{exchange.method} {'/'.join(segments)}"


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs: ``old`` / ``new`` are ``None`` when absent."""

    field: str
    old: Any
    new: Any

    def render(self) -> list[str]:
        if (
            isinstance(self.old, str)
            and isinstance(self.new, str)
            and ("\n" in self.old or "\n" in self.new or len(self.old) + len(self.new) > 120)
        ):
            lines = difflib.unified_diff(
                self.old.splitlines(), self.new.splitlines(), "old", "new", lineterm="", n=2
            )
            return [f"  {self.field}:", *(f"    {line}" for line in list(lines)[2:])]
        lists = (isinstance(self.old, list) or self.old is None) and (
            isinstance(self.new, list) or self.new is None
        )
        if lists and (self.old is not None or self.new is not None):
            # A list on one side only (e.g. events of a stream vs a plain call) reads as lines.
            old = [v if isinstance(v, str) else _show(v) for v in self.old or []]
            new = [v if isinstance(v, str) else _show(v) for v in self.new or []]
            lines = difflib.unified_diff(old, new, "old", "new", lineterm="", n=1)
            return [f"  {self.field}:", *(f"    {line}" for line in list(lines)[2:])]
        return [f"  {self.field}: {_show(self.old)} → {_show(self.new)}"]


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(slots=True)
class ExchangeDiff:
    old: Exchange | None
    new: Exchange | None
    changes: list[Change] = field(default_factory=list)

    @property
    def title(self) -> str:
        if self.old is None:
            assert self.new is not None
            return f"only in NEW: {self.new.describe()}"
        if self.new is None:
            return f"only in OLD: {self.old.describe()}"
        if self.old.index == self.new.index:
            return self.old.describe()
        return f"{self.old.describe()} → {self.new.describe()}"


@dataclass(slots=True)
class DiffReport:
    old: str
    new: str
    exchanges: list[ExchangeDiff]

    @property
    def same(self) -> bool:
        return all(
            d.old is not None and d.new is not None and not d.changes for d in self.exchanges
        )

    def render(self) -> str:
        lines = [f"--- {self.old}", f"+++ {self.new}"]
        for d in self.exchanges:
            if d.old is not None and d.new is not None and not d.changes:
                lines.append(f"{d.title}: same")
                continue
            lines.append(f"{d.title}:" if d.changes else d.title)
            for change in d.changes:
                lines.extend(change.render())
        changed = sum(1 for d in self.exchanges if d.changes or d.old is None or d.new is None)
        lines.append(
            "no differences"
            if self.same
            else f"{changed} of {len(self.exchanges)} exchanges differ"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "same": self.same,
            "exchanges": [
                {
                    "old": None if d.old is None else d.old.describe(),
                    "new": None if d.new is None else d.new.describe(),
                    "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in d.changes],
                }
                for d in self.exchanges
            ],
        }


def _compare(old: Summary, new: Summary) -> list[Change]:
    changes = []
    keys = list(old.fields)
    keys += [k for k in new.fields if k not in old.fields]
    for key in keys:
        a, b = old.fields.get(key), new.fields.get(key)
        if a == b:
            continue
        if key == "usage" and isinstance(a, dict) and isinstance(b, dict):
            for sub in [*a, *(k for k in b if k not in a)]:
                if a.get(sub) != b.get(sub):
                    changes.append(Change(f"usage.{sub}", a.get(sub), b.get(sub)))
            continue
        changes.append(Change(key, a, b))
    return changes


def diff_recordings(old: Recording, new: Recording) -> DiffReport:
    """Pair the exchanges of ``old`` and ``new`` and compare their summaries."""
    old_s = [summarize(x) for x in old.exchanges]
    new_s = [summarize(x) for x in new.exchanges]
    matcher = difflib.SequenceMatcher(
        None, [s.request for s in old_s], [s.request for s in new_s], autojunk=False
    )
    result: list[ExchangeDiff] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                result.append(
                    ExchangeDiff(old.exchanges[i], new.exchanges[j], _compare(old_s[i], new_s[j]))
                )
            continue
        result.extend(ExchangeDiff(old.exchanges[i], None) for i in range(i1, i2))
        result.extend(ExchangeDiff(None, new.exchanges[j]) for j in range(j1, j2))
    return DiffReport(old.source, new.source, result)
