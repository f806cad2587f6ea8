"""The table of top-level commands: each name, the module that defines it, and its one-line help.

Guarantees: ``codetape --help`` (and completing a command name) reads this
table alone, so it imports no command module, and with them none of
SQLAlchemy, the openai SDK or pydantic; running a command imports just the
module named here (see :class:`recorder.cli.app._Group`). A test checks the
table against the commands themselves, so it cannot drift.
"""

from __future__ import annotations

__all__ = ["COMMANDS"]

COMMANDS: dict[str, tuple[str, str]] = {
    "archive": (
        "archive_cmd",
        "Write old partitions of a PostgreSQL log to verifiable tapes, seal them, and drop them.",
    ),
    "audit": (
        "audit_cmd",
        "Every piece of code that ran, in order, with outputs and the log positions behind it.",
    ),
    "checkpoint": (
        "integrity_cmds",
        "Sign the log's head position and hash (a checkpoint to keep outside the database).",
    ),
    "chunks": (
        "stream_cmds",
        "The session's stream as chunks: output text plus code interpreter stage metadata.",
    ),
    "containers": (
        "container_cmds",
        "Every container seen: tier, creator, activity, files, and whether it is still reusable.",
    ),
    "cost": (
        "cost_cmd",
        "Token cost (genai-prices) and container fees, each marked exact or estimated.",
    ),
    "db": (
        "db_cmds",
        "Create or upgrade the database schema.",
    ),
    "demo": (
        "demo_cmd",
        "Record a bundled real code-interpreter session (no API key, no network) and show "
        "its chunks, stage timeline, audit trail, cost and container state.",
    ),
    "diff": (
        "replay_cmds",
        "Show what changed between two recordings (tapes or sessions) of the same requests.",
    ),
    "export": (
        "transfer_cmds",
        "Export sessions (ids or names) to a tape file (JSON Lines, optionally .zst).",
    ),
    "import": (
        "transfer_cmds",
        "Import tapes or other tools' recordings (VCR.py YAML, vercel chunks, test-proxy JSON).",
    ),
    "keygen": (
        "integrity_cmds",
        "Create an Ed25519 key pair for signing checkpoints (PEM files).",
    ),
    "projections": (
        "projection_cmds",
        "Inspect or rebuild the projections (derived read models).",
    ),
    "proxy": (
        "capture_cmds",
        "Serve a recording proxy: point any client's base URL at it.",
    ),
    "repair": (
        "capture_cmds",
        "Close what dead recorders left open, by appending (never changing) events.",
    ),
    "report": (
        "insight_cmds",
        "Write one self-contained HTML report of SESSION...",
    ),
    "rerun": (
        "insight_cmds",
        "Re-issue SESSION's requests, in order, with --model (and --set fields) against a "
        "live endpoint, recording a new session; then compare the two call by call.",
    ),
    "schema": (
        "schema_cmd",
        "Print the JSON Schema of format NAME; without NAME, list the formats.",
    ),
    "serve": (
        "replay_cmds",
        "Replay a tape or session over HTTP: point any client's base_url at it.",
    ),
    "sessions": (
        "log_cmds",
        "List the sessions in the log, oldest first (by when each was opened).",
    ),
    "show": (
        "log_cmds",
        "Show a session's exchanges and their events (types, sizes, offsets).",
    ),
    "stages": (
        "stream_cmds",
        "Per code interpreter call: stage arrival times, code-generation and execution durations.",
    ),
    "verify": (
        "verify_cmd",
        "Re-derive every hash in the log (or in TAPE); exit 1 naming the first bad position.",
    ),
}
"""Command name -> (module in :mod:`recorder.cli`, the help line ``codetape --help`` shows)."""
