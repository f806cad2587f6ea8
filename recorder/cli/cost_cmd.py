"""``cost``: token cost and container fees, each figure marked exact or estimated.

The table shows every group key whole (a session name, a model); when it is
too wide for the terminal each group becomes a block. ``--json`` and
``--csv`` print the same figures for scripts.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import click

from recorder.cli.app import (
    TIME_HELP,
    TimeParam,
    db_option,
    emit_json,
    get_console,
    json_option,
    main,
    open_store,
)
from recorder.cli.render import (
    BadOption,
    Column,
    Row,
    money,
    note_behind,
    print_records,
)

__all__ = ["cost", "print_cost"]

GROUPINGS = (
    "session",
    "day",
    "model",
    "label",
)  # recorder.projections.GROUPINGS, without importing it

_CSV_FIELDS = (
    "key",
    "exchanges",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "token_cost",
    "containers",
    "container_fees",
    "total",
    "basis",
)


def print_cost(report: dict[str, Any]) -> None:
    console = get_console()
    rows = []
    for g in [*report["groups"], report["total"]]:
        containers = money(g["container_fees"])
        if g["containers"]:
            containers = f"{g['containers']}× {containers}"
        rows.append(
            Row(
                [
                    g["key"],
                    f"{g['input_tokens']:,}",
                    f"{g['cached_tokens']:,}",
                    f"{g['output_tokens']:,}",
                    money(g["token_cost"]),
                    containers,
                    money(g["total"]),
                    g["basis"],
                ],
                style="bold" if g is report["total"] else None,
            )
        )
    print_records(
        console,
        [
            Column(report["by"]),
            *(Column(h, "right") for h in ("in", "cached", "out", "tokens", "containers", "total")),
            Column("basis"),
        ],
        rows,
        title=f"cost by {report['by']} (USD)",
    )
    rules = sorted(
        {f"tokens ({i['token_basis']}): {i['token_rule']}" for i in report["exchanges"]}
        | {f"container ({c['fee_basis']}): {c['fee_rule']}" for c in report["containers"]}
    )
    if rules:
        console.print("[bold]rules[/bold]")
        for rule in rules:
            console.print(f"  · {rule}", markup=False)
    possible = report["possible_unattributed_containers"]
    if possible:
        console.print(
            f"[yellow]{len(possible)} possible unattributed container(s), not in the totals "
            f"(up to {money(report['possible_unattributed_fees'])}): requests that enabled "
            "code_interpreter with container auto but made no call[/yellow]"
        )
        for p in possible:
            console.print(
                f"  · {p['day']} exchange {p['exchange_id']} response {p['response_id']} "
                f"({p['memory']}): {money(p['possible_fee'])}",
                markup=False,
            )
    console.print(
        f"[dim]fee table: {report['fee_table']['source']} (as of {report['fee_table']['as_of']})"
        "[/dim]"
    )


@main.command()
@click.option(
    "--by", type=click.Choice(GROUPINGS), default="session", show_default=True, help="Grouping."
)
@click.option(
    "--since",
    "since_ns",
    type=TimeParam(),
    metavar="TIME",
    help=f"Only exchanges at or after TIME: {TIME_HELP}.",
)
@click.option(
    "--until",
    "until_ns",
    type=TimeParam(),
    metavar="TIME",
    help=f"Only exchanges before TIME: {TIME_HELP}.",
)
@click.option(
    "--fees",
    type=click.Path(path_type=Path),
    help="Your own container fee table (JSON, same shape as the shipped one).",
)
@click.option(
    "--idle-minutes",
    type=click.IntRange(min=1),
    help="Idle timeout for container lifetimes (default: the container's own, else 20).",
)
@db_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print the groups as CSV.")
def cost(
    by: str,
    since_ns: int | None,
    until_ns: int | None,
    fees: Path | None,
    idle_minutes: int | None,
    db: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Token cost (genai-prices) and container fees, each marked exact or estimated."""
    from recorder import projections as P

    if as_json and as_csv:
        raise BadOption("choose one of --json and --csv")
    with open_store(db) as store:
        read = P.read_costs(
            store, by=by, since_ns=since_ns, until_ns=until_ns, fees=fees, idle_minutes=idle_minutes
        )
    report = {**read.value.to_json(), "projections_behind": read.behind}
    if as_json:
        emit_json(report, "cost")
        return
    note_behind(read.behind)
    if as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for g in [*report["groups"], report["total"]]:
            writer.writerow(g)
        click.echo(out.getvalue(), nl=False)
    else:
        print_cost(report)
