"""Live capture: recording transports for the openai SDK, and the sessions they record into."""

from recorder.capture.exchange import ExchangeRecorder
from recorder.capture.session import BadMetadata, CaptureError, CaptureSession, CaptureStats
from recorder.capture.transport import AsyncRecordingTransport, RecordingTransport

__all__ = [
    "AsyncRecordingTransport",
    "BadMetadata",
    "CaptureError",
    "CaptureSession",
    "CaptureStats",
    "ExchangeRecorder",
    "RecordingTransport",
]
