"""`codetape demo`: no key, no network, embedded SQLite by default, re-runnable; both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from recorder.cli import main
from recorder.config import default_sqlite_path
from recorder.demo import demo_tape_path
from recorder.store import EventStore

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_tape_is_the_fixture_it_claims_to_be() -> None:
    fixture = ROOT / "fixtures/realdata/pydantic-ai"
    name = "test_openai_responses_code_execution_return_image_stream.jsonl"
    assert demo_tape_path().read_bytes() == (fixture / name).read_bytes()


def test_demo_on_the_embedded_database_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("CODETAPE_DB", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    first = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert default_sqlite_path().is_file()
    assert str(tmp_path) in str(default_sqlite_path())
    for section in ("as chunks", "stages", "audit trail", "cost", "containers"):
        assert section in first.output
    assert "recorded session" in first.output
    assert "fig.savefig(out_path, dpi=200)" in first.output
    assert "$0.045125" in first.output  # 2772*1.25e-6 + 1166*10e-6 = 0.015125, + $0.03
    second = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "already recorded; reusing" in second.output
    with EventStore.open(None) as store:
        assert len(store.sessions()) == 1
        assert store.verify().ok


def test_demo_with_db(db_url: str) -> None:
    result = CliRunner().invoke(main, ["demo", "--db", db_url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "image (89 KB data URL)" in result.output
    assert "active" in result.output


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, run `codetape demo` there (no network)."""
    import os
    import subprocess
    import sys
    import sysconfig

    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("codetape-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from this environment; its .pth files (the editable checkout) are not read.
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "CODETAPE_DB", "OPENAI_API_KEY")
    }
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["COLUMNS"] = "100"
    result = subprocess.run(
        [str(venv / "bin" / "codetape"), "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "fig.savefig(out_path, dpi=200)" in result.stdout
    assert str(tmp_path / "data") in result.stdout
