"""Where the database URL comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.config import default_sqlite_path, is_default, normalize_url, resolve_url


def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("CODETAPE_DB", raising=False)
    assert resolve_url(None) == f"sqlite:///{tmp_path}/codetape/codetape.db"
    assert is_default(resolve_url(None))
    assert default_sqlite_path() == tmp_path / "codetape" / "codetape.db"
    monkeypatch.setenv("CODETAPE_DB", "postgresql://u@h:5/d")
    assert resolve_url(None) == "postgresql+psycopg://u@h:5/d"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@127.0.0.1:5432/db", "postgresql+psycopg://u@127.0.0.1:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_bare_path_is_a_sqlite_file(tmp_path: Path) -> None:
    assert normalize_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
