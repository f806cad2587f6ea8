"""codetape: record OpenAI Responses API sessions as an immutable event log, and replay them.

The capture API is imported lazily (on first attribute access), so ``import
recorder`` and the CLI do not pay for importing the openai SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

# Live capture: name -> module that defines it.
_CAPTURE_API = {
    "AsyncRecordingTransport": "recorder.capture",
    "CaptureError": "recorder.capture",
    "CaptureSession": "recorder.capture",
    "CaptureStats": "recorder.capture",
    "RecordingProxy": "recorder.proxy",
    "RecordingTransport": "recorder.capture",
    "RepairReport": "recorder.repair",
    "record": "recorder.client",
    "record_async": "recorder.client",
    "repair": "recorder.repair",
}

__all__ = sorted(_CAPTURE_API)


def __getattr__(name: str) -> Any:
    module = _CAPTURE_API.get(name)
    if module is None:
        raise AttributeError(f"module 'recorder' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
