"""Checks the CLI tests share: a failed command says one ``Error:`` line and nothing else."""

from __future__ import annotations

from click.testing import Result


def one_error_line(result: Result, *fragments: str) -> str:
    """The single stderr line of a failed command, checked for ``fragments``."""
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
