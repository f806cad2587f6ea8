"""One tape line as a pydantic v2 model: the tape format in one place.

Guarantees: :class:`TapeLine` declares every key a format 1 tape event line may hold
(see :mod:`recorder.tape` for what they mean), :class:`LeanLine` those of a
format 2 line (:mod:`recorder.tape_lean`), and :class:`TapeProofLine` the
optional last line; :func:`parse_line` validates a raw line in one pass
(pydantic's own JSON parser, no ``json.loads`` first) and turns any failure
into a :class:`~recorder.errors.TapeError` naming the line and the field.
Unknown keys are ignored, as readers of older tapes always did. ``meta`` is
free-form but for ``meta.headers``, which must be a list of ``[name, value]``
string pairs (what every codetape writes): a line with headers of any other
shape (an object, triples) is refused, so that no header escapes redaction
on import for want of a name to judge it by. An error about ``meta`` never
quotes the value, which may hold the very secrets it carries. A change to
the tape format is a change to this module (and the schema file it ships).
Every integer is bounded to what the store holds (a signed 64-bit value), so
a line with a larger one is refused by its line number, not half-stored.

Pydantic is imported with this module, which only tape readers import.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from recorder.errors import TapeError

__all__ = [
    "LeanLine",
    "ProofBody",
    "TapeLine",
    "TapeProofLine",
    "describe",
    "parse_lean_line",
    "parse_line",
    "parse_proof_line",
]

Kind = Literal[
    "session_open",
    "session_close",
    "request",
    "response_head",
    "sse",
    "body",
    "exchange_end",
    "capture_gap",
    "archived",
]


_HEADERS_SCHEMA: dict[str, Any] = {
    "description": "Request or response headers, in wire order: [name, value] pairs.",
    "type": "array",
    "items": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    },
}
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), "a number")


def _check_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` when its ``headers`` (if any) are ``[name, value]`` string pairs."""
    if "headers" not in meta:
        return meta
    headers = meta["headers"]
    if not isinstance(headers, list):
        raise PydanticCustomError(
            "header_pairs",
            "meta.headers is {got}, not a list of [name, value] string pairs",
            {"got": _json_type(headers)},
        )
    for index, pair in enumerate(headers):
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(p) is str for p in pair)):
            if not isinstance(pair, list):
                got = _json_type(pair)
            elif len(pair) != 2:
                got = f"a list of {len(pair)} items"
            else:
                got = "a pair holding a non-string"
            raise PydanticCustomError(
                "header_pairs",
                "meta.headers[{index}] is {got}, not a [name, value] pair of strings",
                {"index": index, "got": got},
            )
    return meta


Meta = Annotated[
    dict[str, Any],
    AfterValidator(_check_meta),
    Field(
        description="The event's details; its headers are [name, value] string pairs.",
        json_schema_extra={"properties": {"headers": _HEADERS_SCHEMA}},
    ),
]


Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""An integer the store can hold (a signed 64-bit column): a larger one refuses its line."""
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
"""A sequence number: an :data:`Int64` that is not negative."""
Delta64 = Annotated[int, Field(ge=-(2**64) + 1, le=2**64 - 1)]
"""The difference of two :data:`Int64` values (the reader checks that the sum fits)."""


class TapeLine(BaseModel):
    """One event of a tape (one JSON object on one line)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    kind: Kind
    tape: Int64 | None = Field(None, description="Format version; on every session_open line.")
    session: str = Field(min_length=1, description="Session id.")
    exchange: str | None = None
    seq: Count = Field(description="Sequence number within the event's stream.")
    at_ns: Int64 = Field(description="When it was recorded, ns since the epoch.")
    offset_ns: Int64 | None = Field(None, description="Since the request was sent.")
    event: str | None = Field(None, description="The SSE frame's event: field.")
    type: str | None = Field(None, description="The SSE data's type.")
    sequence_number: Int64 | None = None
    response_id: str | None = None
    meta: Meta = Field(default_factory=dict)
    text: str | None = Field(None, description="The payload, when it is UTF-8.")
    b64: str | None = Field(None, description="The payload in base64, when it is not UTF-8.")
    position: Int64 | None = Field(None, description="Chain: the row's place in its log.")
    hash: str | None = None
    prev_hash: str | None = None
    hash_format: str | None = None


class LeanLine(BaseModel):
    """One event of a format 2 tape: a field left out takes its default.

    See :mod:`recorder.tape_lean` for each default (mostly the previous line's value).
    """

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    kind: Kind | None = Field(None, description="Default: the previous line's.")
    tape: Int64 | None = Field(None, description="Format version (2); on every session_open line.")
    session: str | None = Field(None, min_length=1, description="Default: the previous line's.")
    exchange: str | None = Field(None, description="Default: the previous line's.")
    seq: Count | None = Field(None, description="Default: the stream's last seq + 1, or 0.")
    at_ns: Int64 | None = Field(None, description="Recorded at, ns since the epoch (first line).")
    dt_ns: Delta64 | None = Field(None, description="Recorded at, ns after the previous line.")
    offset_ns: Int64 | None = Field(
        None, description="Default: the previous line's plus the time since it."
    )
    event: str | None = Field(None, description="Default: data's type.")
    type: str | None = Field(None, description="Default: data's type.")
    sequence_number: Int64 | None = Field(None, description="Default: data's sequence_number.")
    response_id: str | None = Field(None, description="Default: the previous line's.")
    meta: Meta = Field(default_factory=dict)
    data: dict[str, Any] | None = Field(
        None, description="An SSE frame 'event: TYPE\\ndata: JSON\\n\\n' as its JSON value."
    )
    json_: dict[str, Any] | list[Any] | None = Field(
        None, alias="json", description="A payload of compact JSON, as its JSON value."
    )
    text: str | None = Field(None, description="The payload, when it is UTF-8.")
    b64: str | None = Field(None, description="The payload in base64, when it is not UTF-8.")
    position: Int64 | None = Field(None, description="Chain: the row's place in its log.")
    hash: str | None = None
    prev_hash: str | None = None
    hash_format: str | None = None


class ProofBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    checkpoint: str = Field(description="A signed checkpoint note.")
    nodes: list[str] = Field(description="The Merkle proof tying the tape's rows to it.")


class TapeProofLine(BaseModel):
    """A tape's optional last line: a checkpoint and the proof of the tape's rows."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    proof: ProofBody


def parse_line(line: str, where: str) -> TapeLine:
    """Validate one tape event line; a :class:`TapeError` names ``where`` and the field."""
    try:
        return TapeLine.model_validate_json(line)
    except ValidationError as exc:
        raise TapeError(_json_problem(line, where) or describe(exc, where, "a tape line")) from None


def parse_lean_line(line: str, where: str) -> LeanLine:
    """Validate one format 2 event line; a :class:`TapeError` names ``where`` and the field."""
    try:
        return LeanLine.model_validate_json(line)
    except ValidationError as exc:
        raise TapeError(_json_problem(line, where) or describe(exc, where, "a tape line")) from None


def parse_proof_line(line: str, where: str) -> TapeProofLine:
    try:
        return TapeProofLine.model_validate_json(line)
    except ValidationError as exc:
        raise TapeError(
            _json_problem(line, where) or describe(exc, where, "a proof line")
        ) from None


def _json_problem(line: str, where: str) -> str | None:
    """Python's own account of a line that is not JSON (it counts columns within the line)."""
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        problem = exc.msg.removesuffix(" at")  # "Invalid control character at"
        return f"{where}: not valid JSON ({problem} at column {exc.colno})"
    except RecursionError:
        return f"{where}: not valid JSON (nested too deeply)"
    except ValueError:  # an integer past Python's digit limit
        return f"{where}: not valid JSON (a number with too many digits)"
    return None


def describe(exc: ValidationError, where: str, what: str) -> str:
    """The first error of ``exc`` as one line: ``WHERE: field 'F': what is wrong (got X)``."""
    first = exc.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        detail = str(first.get("ctx", {}).get("error", first["msg"]))
        return f"{where}: not valid JSON ({detail})"
    loc = first["loc"]
    if not loc:
        return f"{where}: {what} must be a JSON object"
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if kind == "header_pairs":
        return f"{where}: {first['msg']}"
    if loc[0] == "meta":
        # Meta holds headers and URLs: never quoted, a secret in it is not for the console.
        return f"{where}: field {field!r}: {first['msg']}"
    if kind == "missing":
        return f"{where}: field {field!r} is missing"
    got = first.get("input")
    shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
    return f"{where}: field {field!r}: {first['msg']} (got {shown})"
