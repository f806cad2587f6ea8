"""The container fee file (``cost --fees FILE``, and the one shipped) as a pydantic v2 model.

Guarantees: :class:`FeeFile` declares every key a fee file may hold and
forbids others (a misspelt ``sesion_minutes`` is an error, not a silent
default); :func:`parse_fee_file` validates a file's text in one pass and
turns any failure into a :class:`~recorder.projections.fees.FeeTableError`
naming the file, the line and the field (``periods[1].rule``).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["FeeFile", "FeePeriod", "field_line", "parse_fee_file"]


class FeePeriod(BaseModel):
    """One dated rule: from ``from`` to ``until`` (inclusive UTC days of creation)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    from_: dt.date | None = Field(None, alias="from", description="First day; null: always.")
    until: dt.date | None = Field(None, description="Last day; null: still in force.")
    rule: Literal["per_container", "per_session", "per_minute"]
    description: str | None = None
    prices: dict[str, Decimal] = Field(
        min_length=1,
        description="Price per memory tier (1g, 4g, ...) in USD: per container, "
        "per started session, or per minute, as the rule says.",
    )
    session_minutes: int = Field(20, gt=0, description="per_session: the session window.")
    minimum_minutes: int = Field(0, ge=0, description="per_minute: the minimum billed.")


class FeeFile(BaseModel):
    """A container fee table: dated periods, each with a rule and prices per memory tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    as_of: str = Field("", description="When the prices were last checked (YYYY-MM-DD).")
    currency: Literal["USD"] = "USD"
    source: str | None = Field(None, description="Where the prices come from.")
    note: str | None = None
    periods: list[FeePeriod] = Field(min_length=1)


def parse_fee_file(raw: str, where: str) -> FeeFile:
    """Validate a fee file's text; the error names ``where``, the line and the field."""
    from recorder.projections.fees import FeeTableError

    try:
        return FeeFile.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            detail = first.get("ctx", {}).get("error", first["msg"])
            raise FeeTableError(f"{where}: not valid JSON ({detail})") from None
        loc = tuple(first["loc"])
        if not loc:
            raise FeeTableError(f"{where}: a fee table is a JSON object with 'periods'") from None
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        line = field_line(raw, loc)
        at = f"{where}:{line}" if line is not None else where
        if first["type"] == "missing":
            raise FeeTableError(f"{at}: field {field!r} is missing") from None
        got = repr(first.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        raise FeeTableError(f"{at}: field {field!r}: {first['msg']} (got {got})") from None


def field_line(raw: str, loc: tuple[Any, ...]) -> int | None:
    """The line of ``raw`` (a JSON document) where the value at ``loc`` starts, if found.

    For a missing field, the line of the object that lacks it.
    """
    decoder = json.JSONDecoder()
    at = 0
    text = raw
    for step in loc:
        at = _skip_space(text, at)
        if isinstance(step, int):
            if text[at : at + 1] != "[":
                return _line(text, at)
            at += 1
            for _ in range(step):
                at = _skip_space(text, at)
                _value, at = decoder.raw_decode(text, at)
                at = _skip_space(text, at)
                if text[at : at + 1] != ",":
                    return None
                at += 1
            continue
        if text[at : at + 1] != "{":
            return _line(text, at)
        start = at
        at += 1
        while True:
            at = _skip_space(text, at)
            if text[at : at + 1] != '"':
                return _line(text, start)  # the object that lacks the key
            key, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            at += 1  # the colon
            at = _skip_space(text, at)
            if key == step:
                break
            _value, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            if text[at : at + 1] != ",":
                return _line(text, start)
            at += 1
    return _line(text, _skip_space(text, at))


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1
