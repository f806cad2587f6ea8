"""``chunks`` and ``stages``: a session's stream as it arrived, and its code interpreter timeline.

Both print every id and every log line whole; the stage tables become one
block per call when the terminal is too narrow for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from recorder.cli.app import db_option, emit_json, get_console, json_option, main, open_store
from recorder.cli.render import SECOND, Column, note_behind, print_records, when

if TYPE_CHECKING:
    from recorder.projections import Chunk, Stage

__all__ = ["chunks", "print_chunks", "print_stages", "stages"]


def _output_summary(outputs: list[dict[str, Any]] | None) -> str:
    if outputs is None:
        return "outputs not recorded"
    parts = []
    for o in outputs:
        if o.get("type") == "logs":
            parts.append("logs: " + str(o.get("logs", "")))
        elif o.get("type") == "image":
            parts.append(f"image ({len(str(o.get('url', ''))) // 1024} KB data URL)")
        else:
            parts.append(str(o.get("type")))
    return "; ".join(parts) or "no outputs"


def print_chunks(chunks: list[Chunk]) -> None:
    """The stream as a terminal would show it while it arrives."""
    from rich.text import Text

    console = get_console()
    for chunk in chunks:
        meta = chunk.metadata
        if chunk.output:
            console.print(chunk.output, end="", markup=False)
        if "code_interpreter" in meta:
            stage = meta["code_interpreter"]["stage"]
            data = meta["code_interpreter"]["data"]
            if stage == "code_delta":
                console.print(Text(data.get("delta", ""), style="cyan"), end="")
            elif stage == "started":
                console.print(
                    Text(
                        f"\n▶ code_interpreter started  {data['id']}"
                        f"  in {data.get('container_id')}\n",
                        style="bold magenta",
                    ),
                    end="",
                )
            elif stage == "in_progress":
                console.print(Text("  · in_progress\n", style="magenta"), end="")
            elif stage == "interpreting":
                console.print(
                    Text("\n  · interpreting (running the code)\n", style="magenta"), end=""
                )
            else:
                style = "bold green" if stage == "completed" else "bold red"
                console.print(
                    Text(f"  ■ {stage}: {_output_summary(data.get('outputs'))}\n", style=style),
                    end="",
                )
        elif "response" in meta:
            r = meta["response"]
            usage = r.get("usage")
            line = f"[response {r.get('id')} · {r.get('model')} · {r.get('status')}"
            if isinstance(usage, dict):
                line += f" · {usage.get('input_tokens')} in / {usage.get('output_tokens')} out"
            console.print(Text("\n" + line + "]\n", style="dim"), end="")
        elif "annotation" in meta:
            a = meta["annotation"] or {}
            console.print(
                Text(f" [file {a.get('filename')} ({a.get('file_id')})]", style="yellow"), end=""
            )
        elif "error" in meta:
            console.print(Text(f"\n[error {meta['error']}]\n", style="bold red"), end="")
        elif "reasoning_summary" in meta:
            console.print(Text(str(meta["reasoning_summary"]), style="italic dim"), end="")
    console.print()


@main.command()
@click.argument("session")
@db_option
@json_option
def chunks(session: str, db: str | None, as_json: bool) -> None:
    """The session's stream as chunks: output text plus code interpreter stage metadata."""
    from recorder import projections as P

    with open_store(db) as store:
        info = store.find_session(session)
        read = P.read_chunks(store, info.id)
    if as_json:
        emit_json(
            {
                "session_id": info.id,
                "chunks": [c.to_json() for c in read.value],
                "projections_behind": read.behind,
            },
            "chunks",
        )
        return
    print_chunks(read.value)
    note_behind(read.behind)


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.0f}"


_ARRIVALS = ("started", "in_progress", "first_code_delta", "code_done", "interpreting", "completed")


def print_stages(stages: list[Stage]) -> None:
    console = get_console()
    if not stages:
        console.print("no code interpreter calls")
        return
    timed = [s for s in stages if s.timed]
    if timed:
        rows = []
        for s in timed:
            j = s.to_json()
            rows.append(
                [
                    s.call_id,
                    s.status,
                    *(_ms(j["arrivals_ms"][k]) for k in _ARRIVALS),
                    _ms(j["code_generation_ms"]),
                    _ms(j["execution_ms"]),
                ]
            )
        print_records(
            console,
            [
                Column("call"),
                Column("status"),
                *(
                    Column(h, "right")
                    for h in ("start", "in prog", "1st Δ", "code done", "interp", "done")
                ),
                Column("codegen", "right"),
                Column("exec", "right"),
            ],
            rows,
            title="code interpreter stages (ms since the request was sent)",
        )
    untimed = [s for s in stages if not s.timed]
    if untimed:
        rows = []
        for s in untimed:
            coarse = when(s.response_created_at * SECOND) if s.response_created_at else "—"
            done = s.response_completed_at
            coarse += " / " + (when(done * SECOND) if done else "not given")
            rows.append([s.call_id, s.status, str(s.delta_count), coarse])
        print_records(
            console,
            [
                Column("call"),
                Column("status"),
                Column("code deltas", "right"),
                Column("response created / completed (UTC)"),
            ],
            rows,
            title="code interpreter calls without arrival times",
        )
        console.print(
            f"[dim]{len(untimed)} call(s) come from a recording without arrival times "
            "(an import from another tool): stage times and durations are unknown, "
            "not guessed.[/dim]"
        )


@main.command()
@click.argument("session")
@db_option
@json_option
def stages(session: str, db: str | None, as_json: bool) -> None:
    """Per code interpreter call: stage arrival times, code-generation and execution durations."""
    from recorder import projections as P

    with open_store(db) as store:
        info = store.find_session(session)
        read = P.read_stages(store, info.id)
    if as_json:
        emit_json(
            {
                "session_id": info.id,
                "calls": [s.to_json() for s in read.value],
                "projections_behind": read.behind,
            },
            "stages",
        )
        return
    print_stages(read.value)
    note_behind(read.behind)
