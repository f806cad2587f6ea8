"""Live capture: recording transports for the openai SDK, and the sessions they record into."""

from recorder.capture.session import CaptureError, CaptureSession, CaptureStats, ExchangeRecorder
from recorder.capture.transport import AsyncRecordingTransport, RecordingTransport

__all__ = [
    "AsyncRecordingTransport",
    "CaptureError",
    "CaptureSession",
    "CaptureStats",
    "ExchangeRecorder",
    "RecordingTransport",
]
