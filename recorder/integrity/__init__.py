"""Integrity a third party can check: signed checkpoints of the log, and tapes that prove
their rows against them.

See :mod:`recorder.integrity.checkpoint` for the design and what a checkpoint
proves, :mod:`recorder.integrity.log` for checkpointing and verifying a log,
and :mod:`recorder.integrity.tapes` for tapes.
"""

from recorder.integrity.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_note,
    parse_note,
    read_note,
    sign,
    write_note,
)
from recorder.integrity.keys import (
    KeyFileError,
    load_private_key,
    load_public_key,
    verifier_key,
    write_key_pair,
)
from recorder.integrity.log import (
    CheckpointCheck,
    Checkpointer,
    LogVerification,
    create_checkpoint,
    default_origin,
    load_checkpoints,
    verify_log,
)
from recorder.integrity.tapes import TapeCheck, TapeVerification, proof_line, verify_tape

__all__ = [
    "Checkpoint",
    "CheckpointCheck",
    "CheckpointError",
    "Checkpointer",
    "KeyFileError",
    "LogVerification",
    "TapeCheck",
    "TapeVerification",
    "create_checkpoint",
    "default_origin",
    "load_checkpoints",
    "load_private_key",
    "load_public_key",
    "open_note",
    "parse_note",
    "proof_line",
    "read_note",
    "sign",
    "verifier_key",
    "verify_log",
    "verify_tape",
    "write_key_pair",
    "write_note",
]
