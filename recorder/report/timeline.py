"""Timelines as inline SVG, drawn to scale: a session's exchanges and idle gaps, a call's stages.

Guarantees: every x coordinate is a linear function of a recorded time (the
log's ``recorded_at_ns`` for exchanges, arrival offsets for stages); nothing
is stretched to fit, so a segment too short to see is drawn 1 px wide and
keeps its exact duration in its tooltip (``<title>``). A recording without
arrival times gets no stage timeline, only a note and the API's coarse
``created_at`` → ``completed_at`` when the response gave them. The output is
static SVG: no script, no external reference.
"""

from __future__ import annotations

from html import escape

from recorder.report.gather import ExchangeView, SessionView

__all__ = ["duration", "exchange_svg", "session_svg"]

_WIDTH = 1000
_LEFT = 150
_RIGHT = 12
_ROW = 22
_BAR = 14
_STEPS_NS = [
    n * unit
    for unit in (1_000_000, 1_000_000_000, 60_000_000_000)
    for n in (1, 2, 5, 10, 20, 30, 50, 100, 200, 500)
]


def duration(ns: int | None) -> str:
    """``ns`` as people read it: 850 ms, 12.4 s, 25 min 3 s, 2 h 5 min."""
    if ns is None:
        return "unknown"
    if ns < 1_000_000:
        return f"{ns / 1e6:.3f} ms"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.0f} ms"
    seconds = ns / 1e9
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class _Scale:
    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.span = max(end - start, 1)
        self.width = _WIDTH - _LEFT - _RIGHT

    def x(self, t: int) -> float:
        return _LEFT + (t - self.start) / self.span * self.width

    def ticks(self) -> list[tuple[float, str]]:
        step = next((s for s in _STEPS_NS if self.span / s <= 8), _STEPS_NS[-1])
        out = []
        k = 0
        while k * step <= self.span:
            out.append((self.x(self.start + k * step), duration(k * step) if k else "0"))
            k += 1
        return out


def _rect(scale: _Scale, y: float, start: int, end: int, css: str, title: str) -> str:
    x0 = scale.x(start)
    width = max(scale.x(end) - x0, 1.0)
    return (
        f'<rect class="{css}" x="{x0:.1f}" y="{y:.1f}" width="{width:.1f}" height="{_BAR}">'
        f"<title>{escape(title)}</title></rect>"
    )


def _text(x: float, y: float, text: str, css: str = "lbl", anchor: str = "start") -> str:
    return (
        f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>'
    )


def _axis(scale: _Scale, y: float) -> list[str]:
    parts = [f'<line class="axis" x1="{_LEFT}" y1="{y}" x2="{_WIDTH - _RIGHT}" y2="{y}"/>']
    for x, label in scale.ticks():
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}"/>')
        parts.append(_text(x, y + 15, label, "tick", "middle"))
    return parts


def _svg(height: float, parts: list[str], label: str) -> str:
    return (
        f'<svg class="timeline" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {_WIDTH} {height:.0f}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _end(x: ExchangeView) -> int:
    if x.last_offset_ns is not None:
        return x.started_ns + x.last_offset_ns
    return x.ended_ns if x.ended_ns is not None else x.started_ns


def session_svg(session: SessionView) -> str:
    """The session's exchanges on one wall-clock axis, with the idle gaps between them."""
    exchanges = session.exchanges
    if not exchanges:
        return ""
    start = min(x.started_ns for x in exchanges)
    end = max(_end(x) for x in exchanges)
    scale = _Scale(start, end)
    parts: list[str] = []
    y = 6.0
    latest = start
    for x in exchanges:
        xend = _end(x)
        if x.started_ns > latest:
            gap = x.started_ns - latest
            mid = (scale.x(latest) + scale.x(x.started_ns)) / 2
            parts.append(
                f'<line class="idle" x1="{scale.x(latest):.1f}" y1="{y + _BAR / 2:.1f}" '
                f'x2="{scale.x(x.started_ns):.1f}" y2="{y + _BAR / 2:.1f}">'
                f"<title>idle {escape(duration(gap))}</title></line>"
            )
            if scale.x(x.started_ns) - scale.x(latest) > 70:
                parts.append(_text(mid, y - 1, f"idle {duration(gap)}", "idle-lbl", "middle"))
        parts.append(_text(4, y + 11, f"#{x.index + 1} {x.method} {x.path[-18:]}"))
        css = "xchg" if x.outcome in (None, "completed") else "xchg bad"
        title = f"#{x.index + 1} {x.method} {x.path}: {duration(xend - x.started_ns)}"
        if not x.timed:
            title += " (no arrival times recorded)"
        parts.append(_rect(scale, y, x.started_ns, xend, css, title))
        for call in x.calls:
            stage = call.stage
            if stage is None or stage.started_ns is None:
                continue
            mark = x.started_ns + stage.started_ns
            parts.append(
                f'<circle class="callmark" cx="{scale.x(mark):.1f}" cy="{y + _BAR / 2:.1f}" r="3">'
                f"<title>{escape(call.call_id)} started</title></circle>"
            )
        latest = max(latest, xend)
        y += _ROW
    parts.extend(_axis(scale, y + 2))
    return _svg(y + 24, parts, f"timeline of session {session.info.name or session.info.id}")


def exchange_svg(x: ExchangeView) -> str:
    """One exchange's code interpreter calls, stage by stage, on its own axis ("" if untimed)."""
    if not x.timed or x.last_offset_ns is None:
        return ""
    scale = _Scale(0, x.last_offset_ns)
    parts = [_text(4, 17, "response")]
    parts.append(
        _rect(scale, 6, 0, x.last_offset_ns, "resp", f"response: {duration(x.last_offset_ns)}")
    )
    y = 6.0 + _ROW
    for call in x.calls:
        s = call.stage
        if s is None or s.started_ns is None:
            continue
        parts.append(_text(4, y + 11, call.call_id[:22]))
        code_end = s.code_done_ns if s.code_done_ns is not None else s.interpreting_ns
        if code_end is not None:
            parts.append(
                _rect(
                    scale,
                    y,
                    s.started_ns,
                    code_end,
                    "codegen",
                    f"code generation: {duration(code_end - s.started_ns)}",
                )
            )
        if s.interpreting_ns is not None and code_end is not None and s.interpreting_ns > code_end:
            parts.append(
                _rect(
                    scale,
                    y,
                    code_end,
                    s.interpreting_ns,
                    "wait",
                    f"waiting to run: {duration(s.interpreting_ns - code_end)}",
                )
            )
        done = s.completed_ns if s.completed_ns is not None else s.item_done_ns
        if s.interpreting_ns is not None and done is not None:
            parts.append(
                _rect(
                    scale,
                    y,
                    s.interpreting_ns,
                    done,
                    "exec",
                    f"execution: {duration(done - s.interpreting_ns)}",
                )
            )
        y += _ROW
    parts.extend(_axis(scale, y + 2))
    return _svg(y + 24, parts, f"stages of exchange #{x.index + 1}")
