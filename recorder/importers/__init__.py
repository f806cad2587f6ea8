"""Importers: turn recordings made by other tools into codetape sessions.

Each importer parses one source format into :class:`RecordedSession` values
(a neutral, in-memory picture of what the source holds) and never touches the
store; :mod:`recorder.ingest` turns those into events and appends them
atomically.
"""
