"""``schema``: the JSON Schemas of the formats scripts depend on (tape lines, fee file, --json).

Prints the schema files shipped with codetape (see :mod:`recorder.formats`),
so it imports no pydantic.
"""

from __future__ import annotations

import click

from recorder.cli.app import CliError, main

__all__ = ["schema"]


@main.command()
@click.argument("name", required=False)
def schema(name: str | None) -> None:
    """Print the JSON Schema of format NAME; without NAME, list the formats.

    The formats: a tape line, the container fee file (cost --fees), and the
    --json output of every report.
    """
    from recorder.formats import FORMATS, shipped_schema

    if name is None:
        width = max(len(n) for n in FORMATS)
        for known, (_model, about) in FORMATS.items():
            click.echo(f"{known:{width}}  {about}")
        return
    if name not in FORMATS:
        raise CliError(f"no format named {name!r}: choose from {', '.join(FORMATS)}")
    click.echo(shipped_schema(name), nl=False)
