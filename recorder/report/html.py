"""The session report as one self-contained HTML document.

Guarantees: the document references nothing outside itself — styles are
inline, there is no script, images are ``data:`` URIs taken from the recorded
outputs and downloaded container files — so it opens offline and makes no
request when viewed (links to cited URLs are links, not loads). Every
recorded string is HTML-escaped; code is highlighted by Pygments on the
server side, with line numbers. Each figure comes with the rule behind it as
the cost report states it.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from html import escape
from importlib.metadata import version
from typing import Any

from recorder.report.gather import CallView, ExchangeView, FileView, LogSeal, SessionView
from recorder.report.timeline import duration, exchange_svg, session_svg

__all__ = ["render"]

_SECOND = 1_000_000_000

_CSS = """
:root { color-scheme: light; --ink:#1f2328; --dim:#656d76; --line:#d0d7de; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  margin: 0 auto; max-width: 1120px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px;
  border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 8px; } h4 { font-size: 14px; margin: 12px 0 6px; }
.dim { color: var(--dim); } code, pre { font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo,
  Consolas, monospace; }
table { border-collapse: collapse; margin: 6px 0; } th, td { text-align: left; padding: 3px 10px
  3px 0; vertical-align: top; border-bottom: 1px solid var(--line); }
th { font-weight: 600; } h3, code { overflow-wrap: anywhere; }
td.num, .badge { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.facts th { color: var(--dim); font-weight: 500; width: 170px; }
article.exchange { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
  margin: 14px 0; }
.call { border-left: 3px solid #0969da; padding-left: 10px; margin: 12px 0; }
.call.failed, .call.incomplete { border-left-color: #cf222e; }
pre.logs { background: #f0fff4; border: 1px solid #c7ecd2; padding: 8px; white-space: pre-wrap;
  word-break: break-word; max-height: 420px; overflow: auto; }
.hl { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; overflow: auto;
  max-height: 640px; } .hl pre { margin: 0; padding: 8px 8px 8px 0; line-height: 1.45; }
.hl span.linenos { color: #8c959f; user-select: none; display: inline-block; min-width: 3.2em;
  text-align: right; padding: 0 12px 0 0; }
img.output { max-width: 100%; border: 1px solid var(--line); border-radius: 4px;
  background: white; }
.text { white-space: pre-wrap; background: var(--bg); border-radius: 6px; padding: 10px; }
mark.cite { background: #fff8c5; } sup a { text-decoration: none; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px;
  background: var(--bg); border: 1px solid var(--line); }
.badge.ok { background: #dafbe1; border-color: #aceebb; }
.badge.bad { background: #ffebe9; border-color: #ffcecb; }
.badge.warn { background: #fff8c5; border-color: #eed888; }
.note { background: #fff8c5; border: 1px solid #eed888; border-radius: 6px; padding: 6px 10px; }
svg.timeline { display: block; margin: 6px 0 2px; background: #fff; }
svg .lbl { font: 11px ui-monospace, monospace; fill: var(--ink); }
svg .tick, svg .idle-lbl { font: 10px system-ui, sans-serif; fill: var(--dim); }
svg .axis, svg .tick { stroke: #8c959f; stroke-width: 1; }
svg .xchg { fill: #54aeff; } svg .xchg.bad { fill: #ff8182; } svg .resp { fill: #d8dee4; }
svg .codegen { fill: #0969da; } svg .wait { fill: #afb8c1; } svg .exec { fill: #bf8700; }
svg .idle { stroke: #8c959f; stroke-dasharray: 4 3; stroke-width: 1.5; }
svg .callmark { fill: #bf8700; }
.legend span { display: inline-block; width: 12px; height: 10px; margin: 0 4px 0 12px; }
nav ul { margin: 4px 0; padding-left: 18px; }
"""


def _money(value: str | Decimal | None) -> str:
    if value is None:
        return "unknown"
    text = f"{Decimal(value):.8f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _when(ns: int | None) -> str:
    if ns is None:
        return "—"
    moment = dt.datetime.fromtimestamp(ns / _SECOND, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


class _Renderer:
    def __init__(self) -> None:
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        self._formatter = HtmlFormatter(linenos="inline", cssclass="hl", wrapcode=True)
        self._lexer = PythonLexer()
        self.code_blocks = 0

    def css(self) -> str:
        # Pygments leaves get_style_defs unannotated; it returns the CSS text.
        return str(self._formatter.get_style_defs(".hl"))  # type: ignore[no-untyped-call]

    def code(self, code: str, anchor: str) -> str:
        from pygments import highlight

        self.code_blocks += 1
        html = highlight(code.replace("\r\n", "\n") or "\n", self._lexer, self._formatter)
        return f'<div class="codeblock" id="{_e(anchor)}">{html}</div>'

    # -- pieces --------------------------------------------------------------

    def outputs(self, call: CallView) -> str:
        if call.outputs is None:
            return (
                '<p class="dim">outputs not recorded (the request did not ask for '
                "<code>code_interpreter_call.outputs</code>)</p>"
            )
        if not call.outputs:
            return '<p class="dim">no outputs</p>'
        parts = []
        for n, o in enumerate(call.outputs):
            kind = o.get("type")
            if kind == "logs":
                parts.append(f'<h4>logs</h4><pre class="logs">{_e(o.get("logs"))}</pre>')
            elif kind == "image":
                url = str(o.get("url") or "")
                if url.startswith("data:image/"):
                    parts.append(
                        f'<h4>image</h4><img class="output" src="{_e(url)}" '
                        f'alt="image output {n + 1} of {_e(call.call_id)}">'
                    )
                else:
                    parts.append(
                        f"<h4>image</h4><p>at {_e(url)} <span class='dim'>(not loaded: the "
                        "report makes no network requests)</span></p>"
                    )
            else:
                parts.append(f"<h4>{_e(kind)}</h4><pre>{_e(json.dumps(o, indent=1))}</pre>")
        return "".join(parts)

    def call(self, sid: str, x: ExchangeView, call: CallView) -> str:
        s = call.stage
        timing = ""
        if s is not None and s.timed:
            timing = (
                f"code generation {duration(s.code_generation_ns)}, "
                f"execution {duration(s.execution_ns)}"
            )
        elif s is not None:
            timing = "stage times unknown (the recording holds no arrival times)"
        positions = ""
        if call.first_position is not None:
            vouching = ", ".join(str(p) for p in call.positions)
            positions = (
                f"<p class='dim'>log positions {call.first_position}–{call.last_position} "
                f"(vouching: {_e(vouching)})</p>"
            )
        return (
            f'<div class="call {_e(call.status)}" id="call-{_e(call.call_id)}">'
            f"<h4>code interpreter call <code>{_e(call.call_id)}</code> "
            f'<span class="badge {"ok" if call.status == "completed" else "bad"}">'
            f"{_e(call.status)}</span></h4>"
            f"<p>container <code>{_e(call.container_id or '—')}</code>"
            f"{' · ' + timing if timing else ''}</p>"
            f"{self.code(call.code, f'code-{sid[:8]}-{x.index}-{call.call_id}')}"
            f"{self.outputs(call)}{positions}</div>"
        )

    def text(self, x: ExchangeView) -> str:
        if not x.text:
            return ""
        ranged = sorted(
            (
                (a["start_index"], a["end_index"], n)
                for n, a in enumerate(x.annotations)
                if isinstance(a.get("start_index"), int) and isinstance(a.get("end_index"), int)
            ),
        )
        out, at = [], 0
        for start, end, n in ranged:
            if start < at or end > len(x.text):
                continue
            out.append(_e(x.text[at:start]))
            out.append(
                f'<mark class="cite">{_e(x.text[start:end])}</mark>'
                f'<sup><a href="#cite-{_e(x.id)}-{n + 1}">[{n + 1}]</a></sup>'
            )
            at = end
        out.append(_e(x.text[at:]))
        partial = (
            '<p class="note">partial: the stream ended before the final response; this is the '
            "text that arrived</p>"
            if x.text_partial
            else ""
        )
        cites = ""
        if x.annotations:
            items = []
            for n, a in enumerate(x.annotations):
                kind = a.get("type")
                if kind == "container_file_citation":
                    what = (
                        f'file <a href="#file-{_e(a.get("file_id"))}">{_e(a.get("filename"))}</a> '
                        f"(<code>{_e(a.get('file_id'))}</code> in "
                        f"<code>{_e(a.get('container_id'))}</code>)"
                    )
                elif kind == "url_citation":
                    url = str(a.get("url") or "")
                    title = _e(a.get("title") or url)
                    # Only web links are links: a recorded javascript: URL stays text.
                    what = (
                        f'<a href="{_e(url)}" rel="noreferrer">{title}</a> '
                        if url.startswith(("https://", "http://"))
                        else f"{title} <code>{_e(url)}</code>"
                    )
                else:
                    what = f"<code>{_e(json.dumps(a))}</code>"
                items.append(f'<li id="cite-{_e(x.id)}-{n + 1}">[{n + 1}] {what}</li>')
            cites = f"<h4>citations</h4><ul>{''.join(items)}</ul>"
        return f'<h4>final text</h4>{partial}<div class="text">{"".join(out)}</div>{cites}'

    def usage(self, x: ExchangeView) -> str:
        cost = x.cost
        if cost is None and x.usage is None:
            return ""
        u = x.usage or {}
        figures = (
            f"{_e(u.get('input_tokens'))} input ({_e(u.get('cached_tokens') or 0)} cached), "
            f"{_e(u.get('output_tokens'))} output "
            f"({_e(u.get('reasoning_tokens') or 0)} reasoning) tokens"
        )
        if cost is None:
            return f"<p>{figures}</p>"
        return (
            f"<p>{figures}: <b>{_money(cost['token_cost'])}</b> "
            f'<span class="badge">{_e(cost["token_basis"])}</span><br>'
            f'<span class="dim">rule: {_e(cost["token_rule"])}</span></p>'
        )

    def exchange(self, sid: str, x: ExchangeView) -> str:
        ok = x.outcome in (None, "completed")
        head = (
            f"#{x.index + 1} {_e(x.method)} {_e(x.path)} · HTTP {_e(x.status or '—')} · "
            f'<span class="badge {"ok" if ok else "bad"}">{_e(x.outcome or "open")}</span>'
        )
        facts = []
        if x.model or x.requested_model:
            facts.append(f"model {_e(x.model or x.requested_model)}")
        if x.response_id:
            facts.append(f"response <code>{_e(x.response_id)}</code>")
        facts.append(f"sent {_when(x.started_ns)}")
        if x.timed:
            facts.append(f"last byte after {duration(x.last_offset_ns)}")
        elif x.created_at is not None:
            done = (
                f" → completed {x.completed_at - x.created_at} s later"
                if x.completed_at is not None
                else ", completion time not given"
            )
            facts.append(f"API clock: created {_when(x.created_at * _SECOND)}{done}")
        facts.append(f"log positions {x.first_position}–{x.last_position}")
        timeline = exchange_svg(x) if x.calls else ""
        if x.calls and not timeline:
            timeline = (
                '<p class="note">No arrival times in this recording (imported from another '
                "tool): the stages of its calls cannot be drawn; durations are unknown, not "
                "guessed.</p>"
            )
        error = ""
        if x.error:
            error = f'<p class="note">error: <code>{_e(json.dumps(x.error))}</code></p>'
        file = ""
        if x.file is not None:
            file = _file(x.file, anchor=False)
        calls = "".join(self.call(sid, x, c) for c in x.calls)
        return (
            f'<article class="exchange" id="x-{_e(x.id)}"><h3>{head}</h3>'
            f"<p class='dim'>{' · '.join(facts)}</p>{timeline}{calls}{self.text(x)}"
            f"{error}{file}{self.usage(x)}</article>"
        )

    def costs(self, s: SessionView) -> str:
        rows = []
        tokens = Decimal(0)
        unknown = 0
        for x in s.exchanges:
            if x.cost is None:
                continue
            c = x.cost
            if c["token_cost"] is None:
                unknown += 1
            else:
                tokens += Decimal(c["token_cost"])
            rows.append(
                f"<tr><td>#{x.index + 1}</td><td>{_e(c['model'])}</td>"
                f"<td class='num'>{_e(c['input_tokens'])}</td>"
                f"<td class='num'>{_e(c['output_tokens'])}</td>"
                f"<td class='num'>{_money(c['token_cost'])}</td><td>{_e(c['token_basis'])}</td>"
                f"<td class='dim'>{_e(c['token_rule'])}</td></tr>"
            )
        fees = Decimal(0)
        fee_rows = []
        for c in s.container_fees:
            if c["charged"] and c["fee"] is not None and c["session_id"] == s.info.id:
                fees += Decimal(c["fee"])
            fee_rows.append(
                f"<tr><td><code>{_e(c['container_id'])}</code></td><td>{_e(c['memory'])}</td>"
                f"<td>{_e(c['day'])}</td><td class='num'>{_money(c['fee'])}</td>"
                f"<td>{_e(c['fee_basis'])}</td><td class='dim'>{_e(c['fee_rule'])}</td></tr>"
            )
        out = ["<h3>Costs</h3>"]
        if rows:
            out.append(
                "<table><tr><th>exchange</th><th>model</th><th>input</th><th>output</th>"
                f"<th>tokens</th><th>basis</th><th>rule</th></tr>{''.join(rows)}</table>"
            )
        if fee_rows:
            out.append(
                "<h4>container fees (each container charged once, to the exchange that "
                "created it)</h4><table><tr><th>container</th><th>tier</th><th>created</th>"
                f"<th>fee</th><th>basis</th><th>rule</th></tr>{''.join(fee_rows)}</table>"
            )
        partial = f" ({unknown} token cost(s) unknown, not counted)" if unknown else ""
        out.append(
            f"<p><b>total {_money(tokens + fees)}</b>: tokens {_money(tokens)}, containers "
            f"{_money(fees)}{partial}</p>"
        )
        for u in s.unattributed:
            out.append(
                f'<p class="note">possible unattributed container, not in the total: exchange '
                f"#{_index(s, u['exchange_id'])} ({_e(u['memory'])}), up to "
                f"{_money(u['possible_fee'])}. {_e(u['rule'])}</p>"
            )
        return "".join(out)

    def containers(self, s: SessionView) -> str:
        if not s.containers:
            return "<h3>Containers</h3><p class='dim'>no containers</p>"
        rows = []
        for c in s.containers:
            badge = "ok" if c["reusable"] else ("warn" if c["state"] == "expired" else "bad")
            rows.append(
                f"<tr><td><code>{_e(c['container_id'])}</code></td><td>{_e(c['memory'])}</td>"
                f"<td>{_e(c['created_via'])}</td><td>{_when(c['created_at_ns'])}</td>"
                f"<td>{_when(c['last_activity_ns'])}</td>"
                f"<td class='num'>{_e(c['code_interpreter_calls'])}</td>"
                f'<td><span class="badge {badge}">{_e(c["state"])}</span></td>'
                f"<td>{_when(c['expires_at_ns'])}</td></tr>"
            )
        files = "".join(_file(f) for f in s.files)
        return (
            f"<h3>Containers</h3><p class='dim'>state as of {_when(s.judged_at_ns)} (idle "
            "timeout: the container's own expires_after, else 20 minutes)</p>"
            "<table><tr><th>container</th><th>tier</th><th>created via</th><th>created</th>"
            "<th>last activity</th><th>calls</th><th>state</th><th>expires</th></tr>"
            f"{''.join(rows)}</table>{files}"
        )

    def positions(self, s: SessionView, seal: LogSeal) -> str:
        calls = []
        for x in s.exchanges:
            for c in x.calls:
                calls.append(
                    f"<tr><td><a href='#call-{_e(c.call_id)}'><code>{_e(c.call_id)}</code></a>"
                    f"</td><td>{_e(c.first_position)}–{_e(c.last_position)}</td>"
                    f"<td>{_e(', '.join(map(str, c.positions)))}</td></tr>"
                )
        table = (
            "<table><tr><th>call</th><th>events</th><th>vouching events</th></tr>"
            f"{''.join(calls)}</table>"
            if calls
            else ""
        )
        return (
            "<h3>Log positions</h3>"
            f"<p>This session's {s.events} events are at log positions {s.first_position}–"
            f"{s.last_position}; the log's head was position {seal.head_position} with hash "
            f"<code>{_e(seal.head_hash)}</code>, which chains every row before it.</p>{table}"
        )


def _index(s: SessionView, exchange_id: str) -> str:
    for x in s.exchanges:
        if x.id == exchange_id:
            return str(x.index + 1)
    return "?"


def _file(f: FileView, *, anchor: bool = True) -> str:
    """A file's heading and its image, download link or description (``anchor``: the one
    place citations link to)."""
    name = f.filename or f.file_id
    size = f" · {f.size:,} bytes" if f.size is not None else ""
    where = f' id="file-{_e(f.file_id)}"' if anchor else ""
    head = (
        f"<h4{where}>file {_e(name)} <span class='dim'>"
        f"({_e(f.file_id)} in {_e(f.container_id)}{size})</span></h4>"
    )
    if f.is_image and f.data_uri:
        return f'{head}<img class="output" src="{_e(f.data_uri)}" alt="{_e(name)}">'
    if f.data_uri:
        return f'{head}<p><a download="{_e(name)}" href="{_e(f.data_uri)}">save the file</a></p>'
    if f.size is None:
        return f"{head}<p class='dim'>cited, not downloaded in this recording</p>"
    return f"{head}<p class='dim'>too large to embed</p>"


def _seal_html(seal: LogSeal) -> str:
    if not seal.verified:
        return (
            f'<p><span class="badge warn">not verified</span> log head: position '
            f"{seal.head_position}, hash <code>{_e(seal.head_hash)}</code>. Run "
            "<code>codetape verify</code> and compare its head hash with this one.</p>"
        )
    if seal.ok:
        return (
            f'<p><span class="badge ok">verified</span> <code>codetape verify</code> re-derived '
            f"all {seal.checked:,} hashes of the log when this report was written: the chain is "
            f"intact up to position {seal.head_position}, hash <code>{_e(seal.head_hash)}</code>, "
            "and the projections this report reads match it. "
            "Keep this hash elsewhere to detect later truncation.</p>"
        )
    problems = "".join(f"<li>{_e(p)}</li>" for p in seal.problems)
    return (
        f'<p><span class="badge bad">verify failed</span> head position {seal.head_position}, '
        f"hash <code>{_e(seal.head_hash)}</code>:</p><ul>{problems}</ul>"
    )


def _session(r: _Renderer, s: SessionView, seal: LogSeal) -> str:
    info = s.info
    labels = ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items())) or "—"
    source = info.source or {}
    fidelity = source.get("fidelity") if isinstance(source, dict) else None
    origin = (
        f"imported ({_e(source.get('format'))}, fidelity {_e(fidelity)})"
        if source
        else "recorded live"
    )
    facts = (
        f"<tr><th>session id</th><td><code>{_e(info.id)}</code></td></tr>"
        f"<tr><th>labels</th><td>{_e(labels)}</td></tr>"
        f"<tr><th>origin</th><td>{origin}</td></tr>"
        f"<tr><th>opened</th><td>{_when(info.opened_at_ns)}</td></tr>"
        f"<tr><th>exchanges</th><td>{len(s.exchanges)} "
        f"({'closed' if info.closed else 'still open'})</td></tr>"
    )
    overview = session_svg(s)
    legend = (
        '<p class="legend dim"><span style="background:#54aeff"></span>exchange (request sent → '
        'last byte)<span style="background:#0969da"></span>code generation'
        '<span style="background:#afb8c1"></span>waiting to run'
        '<span style="background:#bf8700"></span>execution · dashed: idle between exchanges</p>'
    )
    untimed = ""
    if not s.timed:
        untimed = (
            '<p class="note">This recording holds no arrival times (it was imported from '
            "another tool): exchanges are placed at the recording's own times, and stage "
            "durations are unknown, not guessed.</p>"
        )
    exchanges = "".join(r.exchange(info.id, x) for x in s.exchanges)
    return (
        f'<section class="session" id="s-{_e(info.id)}"><h2>{_e(info.name or info.id)}</h2>'
        f'<table class="facts">{facts}</table><h3>Timeline</h3>{untimed}{overview}{legend}'
        f"{exchanges}{r.costs(s)}{r.containers(s)}{r.positions(s, seal)}</section>"
    )


def render(sessions: list[SessionView], seal: LogSeal, *, written_at_ns: int) -> str:
    """The whole document."""
    r = _Renderer()
    body = "".join(_session(r, s, seal) for s in sessions)
    names = ", ".join(s.info.name or s.info.id for s in sessions)
    toc = ""
    if len(sessions) > 1:
        links = "".join(
            f'<li><a href="#s-{_e(s.info.id)}">{_e(s.info.name or s.info.id)}</a></li>'
            for s in sessions
        )
        toc = f"<nav><ul>{links}</ul></nav>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>codetape report: {_e(names)}</title>"
        f"<style>{_CSS}{r.css()}</style></head><body>"
        f"<header><h1>codetape session report</h1><p class='dim'>{len(sessions)} session(s), "
        f"written {_when(written_at_ns)} by codetape {_e(version('codetape'))}</p>"
        f"{_seal_html(seal)}{toc}</header>{body}</body></html>\n"
    )
