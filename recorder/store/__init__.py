"""The event store: schema, engines, the append/read/verify API, migrations.

The names below are imported on first use, so that a submodule that needs no
SQLAlchemy (:mod:`recorder.store.plain_read`, :mod:`recorder.store.listing`)
can be imported without importing it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recorder.store.store import (
        EventStore,
        ExchangeInfo,
        SessionInfo,
        VerifyProblem,
        VerifyReport,
    )

__all__ = ["EventStore", "ExchangeInfo", "SessionInfo", "VerifyProblem", "VerifyReport"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'recorder.store' has no attribute {name!r}")
    return getattr(importlib.import_module("recorder.store.store"), name)
