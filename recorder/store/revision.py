"""The schema revision this code reads and writes, importable without SQLAlchemy.

Guarantees: :data:`SCHEMA_REVISION` is the Alembic revision every
:class:`~recorder.store.EventStore` of this codetape requires (a test pins it
to the head of the migration scripts); this module imports nothing, so the
plain read path (:mod:`recorder.store.plain_read`) can check it cheaply.
"""

from __future__ import annotations

__all__ = ["SCHEMA_REVISION"]

SCHEMA_REVISION = "0009_view_seal"
