"""The formats users and scripts depend on, by name, with their JSON Schemas.

Guarantees:

* :data:`FORMATS` names every published format: a tape line, the container
  fee file, and the ``--json`` output of every report. Each is a pydantic v2
  model (:mod:`recorder.tape_line`, :mod:`recorder.projections.fee_file`,
  :mod:`recorder.formats.reports`), imported only when asked for.
* The schema of each ships as ``recorder/formats/schemas/NAME.json``, exactly
  what :func:`schema_text` generates from the model (a test holds them
  equal), so ``codetape schema NAME`` prints it without importing pydantic.
* :func:`check` validates a document against its format; the CLI checks
  every ``--json`` document this way before printing it.
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["FORMATS", "check", "check_json", "model", "schema_text", "shipped_schema"]

FORMATS: dict[str, tuple[str, str]] = {
    "tape-line": ("recorder.tape_line:TapeLine", "one event line of a format 1 tape"),
    "tape-line-2": ("recorder.tape_line:LeanLine", "one event line of a format 2 tape"),
    "tape-proof": ("recorder.tape_line:TapeProofLine", "a tape's optional last line: its proof"),
    "fees": ("recorder.projections.fee_file:FeeFile", "the container fee file (cost --fees)"),
    "sessions": ("recorder.formats.reports:SessionList", "codetape sessions --json"),
    "show": ("recorder.formats.reports:SessionDetail", "codetape show --json"),
    "chunks": ("recorder.formats.reports:ChunksReport", "codetape chunks --json"),
    "stages": ("recorder.formats.reports:StagesReport", "codetape stages --json"),
    "cost": ("recorder.formats.reports:CostReport", "codetape cost --json"),
    "containers": ("recorder.formats.reports:ContainersReport", "codetape containers --json"),
    "containers-advise": (
        "recorder.formats.reports:ContainersAdvice",
        "codetape containers --advise --json",
    ),
    "audit": ("recorder.formats.reports:AuditReport", "codetape audit --json"),
    "verify": ("recorder.formats.reports:Verification", "codetape verify --json (the log)"),
    "verify-tape": ("recorder.formats.reports:TapeVerification", "codetape verify TAPE --json"),
    "diff": ("recorder.formats.reports:DiffReport", "codetape diff --json"),
    "error": ("recorder.formats.reports:ErrorReport", "any command's error with --json (stderr)"),
}
"""Format name -> ("module:Model", what it describes)."""


def model(name: str) -> type[BaseModel]:
    """The pydantic model of format ``name`` (imports pydantic)."""
    where, _ = FORMATS[name]
    module, _, attr = where.partition(":")
    found: type[BaseModel] = getattr(importlib.import_module(module), attr)
    return found


def schema_text(name: str) -> str:
    """The JSON Schema of format ``name`` as shipped: indented, in model order, one newline."""
    found = model(name).model_json_schema(mode="validation")
    found = {"$schema": "https://json-schema.org/draft/2020-12/schema", **found}
    return json.dumps(found, indent=2, ensure_ascii=False) + "\n"


def shipped_schema(name: str) -> str:
    """The schema file shipped for format ``name`` (no pydantic import)."""
    if name not in FORMATS:
        raise KeyError(name)
    return resources.files("recorder.formats").joinpath(f"schemas/{name}.json").read_text("utf-8")


def check(name: str, document: Any) -> None:
    """Validate ``document`` (parsed JSON) against format ``name``; pydantic's error if not."""
    model(name).model_validate(document)


def check_json(name: str, text: str) -> None:
    """Validate the JSON ``text`` against format ``name``; pydantic's error if not."""
    model(name).model_validate_json(text)
