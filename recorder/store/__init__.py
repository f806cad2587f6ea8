"""The event store: schema, engines, the append/read/verify API, migrations."""

from recorder.store.store import EventStore, ExchangeInfo, SessionInfo, VerifyProblem, VerifyReport

__all__ = ["EventStore", "ExchangeInfo", "SessionInfo", "VerifyProblem", "VerifyReport"]
