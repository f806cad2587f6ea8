"""Container reuse advisor against figures worked out by hand, on SQLite and PostgreSQL.

The recordings are built from fixture exchanges: the responses exchange of
openai-dotnet's CodeInterpreterToolWithoutFileIds (one code interpreter call,
gpt-4o-mini) and the containers.create exchange of
CodeInterpreterToolWithContainerIdFromContainerApi, copied into new sessions
at chosen times, with container ids, tiers and ``expires_after`` set per call.

Fee rules (the shipped table): until 2026-03-30 a flat fee per container
(1g $0.03, 4g $0.12); 2026-03-31..06-01 per started 20-minute session
(4g $0.12); from 2026-06-02 per minute of lifetime, 5-minute minimum
(1g $0.0015). Idle timeout: the container's own ``expires_after``, else 20 min.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recorder.cli import main
from recorder.events import Event, EventKind
from recorder.insight import BadGrouping, advise
from recorder.store import EventStore
from recorder.tape import read_tape

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata" / "openai-dotnet"
RESPONSES = FIXTURES / "ResponsesToolTests" / "CodeInterpreterToolWithoutFileIds.jsonl"
CONTAINERS = (
    FIXTURES / "ResponsesToolTests" / "CodeInterpreterToolWithContainerIdFromContainerApi.jsonl"
)
SECOND = 10**9
MINUTE = 60 * SECOND

T0 = 1759276800 * SECOND  # 2025-10-01 00:00 UTC: flat fee per container
T3 = 1759363200 * SECOND  # 2025-10-02 00:00 UTC: flat fee per container
T1 = 1776254400 * SECOND  # 2026-04-15 12:00 UTC: per started 20-minute session
T2 = 1782864000 * SECOND  # 2026-07-01 00:00 UTC: per minute, 5-minute minimum


def _fixture_exchange(path: Path, url_suffix: str) -> tuple[dict[str, Any], Any, list[Event]]:
    """The first exchange of ``path`` whose URL ends with ``url_suffix``: request, body, events."""
    tape = read_tape(path)
    xid = next(
        e.exchange_id
        for e in tape
        if e.kind is EventKind.REQUEST and str(e.meta["url"]).endswith(url_suffix)
    )
    evs = [e for e in tape if e.exchange_id == xid]
    request = json.loads(next(e.payload for e in evs if e.kind is EventKind.REQUEST))
    body = json.loads(next(e.payload for e in evs if e.kind is EventKind.BODY))
    return request, body, evs


def _copy(evs: list[Event], sid: str, xid: str, at_ns: int, request: Any, body: Any) -> list[Event]:
    out = []
    for e in evs:
        payload = e.payload
        if e.kind is EventKind.REQUEST:
            payload = json.dumps(request).encode()
        elif e.kind is EventKind.BODY:
            payload = json.dumps(body).encode()
        out.append(
            Event(
                sid,
                e.kind,
                e.seq,
                xid,
                at_ns,
                payload=payload,
                meta=e.meta,
            )
        )
    return out


def responses_call(
    sid: str, xid: str, at_ns: int, container: str, *, memory: str | None = None, reuse: bool
) -> list[Event]:
    """The fixture's code interpreter exchange at ``at_ns``, creating or naming ``container``."""
    request, body, evs = _fixture_exchange(RESPONSES, "/responses")
    tool: dict[str, Any] = {"type": "code_interpreter", "container": {"type": "auto"}}
    if memory:
        tool["container"]["memory_limit"] = memory
    request["tools"] = [{"type": "code_interpreter", "container": container} if reuse else tool]
    body["id"] = f"resp_{xid}"
    body["output"][0]["id"] = f"ci_{xid}"
    body["output"][0]["container_id"] = container
    return _copy(evs, sid, xid, at_ns, request, body)


def responses_without_call(sid: str, xid: str, at_ns: int) -> list[Event]:
    """The fixture exchange with container auto, answered by text only: no call."""
    request, body, evs = _fixture_exchange(RESPONSES, "/responses")
    body["id"] = f"resp_{xid}"
    body["output"] = body["output"][1:]
    return _copy(evs, sid, xid, at_ns, request, body)


def containers_create(sid: str, xid: str, at_ns: int, container: str, minutes: int) -> list[Event]:
    """The fixture's POST /v1/containers at ``at_ns``, with ``expires_after`` of ``minutes``."""
    request, body, evs = _fixture_exchange(CONTAINERS, "/containers")
    body.update(
        {
            "id": container,
            "created_at": at_ns // SECOND,
            "last_active_at": at_ns // SECOND,
            "expires_after": {"anchor": "last_active_at", "minutes": minutes},
        }
    )
    return _copy(evs, sid, xid, at_ns, request, body)


def session(sid: str, labels: dict[str, str], at_ns: int, *exchanges: list[Event]) -> list[Event]:
    opened = Event(
        sid, EventKind.SESSION_OPEN, 0, recorded_at_ns=at_ns, meta={"name": sid, "labels": labels}
    )
    closed = Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=at_ns + 2 * 60 * MINUTE)
    return [opened, *(e for x in exchanges for e in x), closed]


def build(store: EventStore) -> None:
    # A: 2025-10-01, flat fees. a1 (1g) reused by id at +5; a2 (1g) at +10 while a1 is alive
    # (last activity +5, so until +25): avoidable. a3 is 4g: another tier. a4 (1g) at +60:
    # a1 expired at +25, a2 at +30. At +70 a request with container auto makes no call.
    store.append(
        session(
            "adv-a",
            {"team": "data"},
            T0,
            responses_call("adv-a", "a-x1", T0, "cntr_a1", reuse=False),
            responses_call("adv-a", "a-x2", T0 + 5 * MINUTE, "cntr_a1", reuse=True),
            responses_call("adv-a", "a-x3", T0 + 10 * MINUTE, "cntr_a2", reuse=False),
            responses_call("adv-a", "a-x4", T0 + 12 * MINUTE, "cntr_a3", memory="4g", reuse=False),
            responses_call("adv-a", "a-x5", T0 + 60 * MINUTE, "cntr_a4", reuse=False),
            responses_without_call("adv-a", "a-x6", T0 + 70 * MINUTE),
        )
    )
    # B: 2026-04-15, per started 20-minute session, 4g $0.12. b1 created at 0, reused at +30
    # (2 sessions: $0.24); b2 at +35 (b1 alive until +50), reused at +38 (1 session: $0.12).
    store.append(
        session(
            "adv-b",
            {"team": "data"},
            T1,
            responses_call("adv-b", "b-x1", T1, "cntr_b1", memory="4g", reuse=False),
            responses_call("adv-b", "b-x2", T1 + 30 * MINUTE, "cntr_b1", reuse=True),
            responses_call("adv-b", "b-x3", T1 + 35 * MINUTE, "cntr_b2", memory="4g", reuse=False),
            responses_call("adv-b", "b-x4", T1 + 38 * MINUTE, "cntr_b2", reuse=True),
        )
    )
    # C: 2026-07-01, per minute. Two sessions of team=ml: c1 at 0 (alive until +20), c2 in the
    # other session at +10, reused at +15 (alive until +35).
    store.append(
        session(
            "adv-c1",
            {"team": "ml"},
            T2,
            responses_call("adv-c1", "c-x1", T2, "cntr_c1", reuse=False),
        )
    )
    store.append(
        session(
            "adv-c2",
            {"team": "ml"},
            T2 + 10 * MINUTE,
            responses_call("adv-c2", "c-x2", T2 + 10 * MINUTE, "cntr_c2", reuse=False),
            responses_call("adv-c2", "c-x3", T2 + 15 * MINUTE, "cntr_c2", reuse=True),
        )
    )
    # D: 2025-10-02, flat fees. d1 made by the Containers API expiring 5 idle minutes after
    # its last activity, used at +1 (so until +6); d2 auto at +8; d3 by the API at +9.
    store.append(
        session(
            "adv-d",
            {},
            T3,
            containers_create("adv-d", "d-x1", T3, "cntr_d1", 5),
            responses_call("adv-d", "d-x2", T3 + 1 * MINUTE, "cntr_d1", reuse=True),
            responses_call("adv-d", "d-x3", T3 + 8 * MINUTE, "cntr_d2", reuse=False),
            containers_create("adv-d", "d-x4", T3 + 9 * MINUTE, "cntr_d3", 5),
        )
    )


def by_id(advice: Any) -> dict[str, Any]:
    return {a.container_id: a for a in advice.avoidable}


def test_avoidable_containers_by_session(store: EventStore) -> None:
    build(store)
    advice = advise(store)
    found = by_id(advice)
    # a2 (a1 alive), b2 (b1 alive), d3 (d2 alive; d1 expired by its own 5 minutes at +6).
    assert list(found) == ["cntr_a2", "cntr_d3", "cntr_b2"]

    a2 = found["cntr_a2"]
    assert (a2.reusable_id, a2.memory, a2.group, a2.day) == (
        "cntr_a1",
        "1g",
        "adv-a (adv-a)",
        "2025-10-01",
    )
    # Flat era: reusing a1 adds nothing, so the whole $0.03 was avoidable.
    assert (a2.fee, a2.avoidable, a2.basis) == (Decimal("0.03"), Decimal("0.03"), "exact")
    assert a2.exchange_id == "a-x3" and a2.response_id == "resp_a-x3"
    assert a2.call_ids == ("ci_a-x3",)
    assert a2.reusable_response_id == "resp_a-x1"
    # a1's last activity was +5 min: it would have expired at +25.
    assert a2.reusable_expires_at_ns == T0 + 25 * MINUTE
    assert a2.suggestion == (
        'tools=[{"type": "code_interpreter", "container": "cntr_a1"}]'
        '  # instead of {"type": "auto"}'
    )
    with store.engine.connect() as conn:
        position = conn.exec_driver_sql(
            "SELECT position FROM event_rows WHERE exchange_id = 'a-x3' AND seq = 0"
        ).scalar()
    assert a2.request_position == position

    b2 = found["cntr_b2"]
    # Per-session era: b2 alone is 1 started session ($0.12). b1 carrying b2's work would have
    # its activity span 0..+38 min: 1 + 38 // 20 = 2 sessions, as it has anyway (0..+30):
    # $0.24 → $0.24, nothing added, so $0.12 avoidable.
    assert (b2.fee, b2.avoidable, b2.basis) == (Decimal("0.12"), Decimal("0.12"), "estimated")
    assert b2.suggestion.endswith('# instead of {"type": "auto", "memory_limit": "4g"}')
    assert "per_session" in b2.rule and "would have added $0" in b2.rule

    d3 = found["cntr_d3"]
    assert (d3.reusable_id, d3.created_via) == ("cntr_d2", "api")
    assert d3.suggestion == 'container_id = "cntr_d2"  # instead of client.containers.create(...)'
    assert (d3.fee, d3.avoidable) == (Decimal("0.03"), Decimal("0.03"))
    assert d3.response_id is None and d3.call_ids == ()

    groups = {g.key: g.to_json() for g in advice.groups}
    # A: a1 0.03 + a2 0.03 + a3 (4g) 0.12 + a4 0.03 = 0.21.
    assert groups["adv-a (adv-a)"] == {
        "key": "adv-a (adv-a)",
        "containers": 4,
        "fees": "0.21",
        "avoidable_containers": 1,
        "avoidable_fees": "0.03",
        "unknown_fees": 0,
        "basis": "exact",
    }
    # B: b1 0.24 + b2 0.12.
    assert (groups["adv-b (adv-b)"]["fees"], groups["adv-b (adv-b)"]["avoidable_fees"]) == (
        "0.36",
        "0.12",
    )
    assert groups["adv-b (adv-b)"]["basis"] == "estimated"
    # C by session: different sessions never share. c1: 0 → +20 = 20 min; c2: +10 → +35 = 25
    # min; × $0.0015.
    for key, fee in (("adv-c1 (adv-c1)", "0.0300"), ("adv-c2 (adv-c2)", "0.0375")):
        assert (groups[key]["fees"], groups[key]["avoidable_containers"]) == (fee, 0)
    assert (groups["adv-d (adv-d)"]["fees"], groups["adv-d (adv-d)"]["avoidable_fees"]) == (
        "0.09",
        "0.03",
    )

    days = {
        d.key: (d.containers, str(d.fees), d.avoidable_containers, str(d.avoidable))
        for d in advice.days
    }
    assert days == {
        "2025-10-01": (4, "0.21", 1, "0.03"),
        "2025-10-02": (3, "0.09", 1, "0.03"),
        "2026-04-15": (2, "0.36", 1, "0.12"),
        "2026-07-01": (2, "0.0675", 0, "0"),
    }
    total = advice.total
    # 0.21 + 0.09 + 0.36 + 0.0675 = 0.7275; avoidable 0.03 + 0.03 + 0.12 = 0.18.
    assert (total.containers, total.fees, total.avoidable_containers, total.avoidable) == (
        11,
        Decimal("0.7275"),
        3,
        Decimal("0.18"),
    )
    assert total.basis == "estimated"

    # The request with container auto and no call: listed, with the container it could have
    # named (a4, alive until +80), and kept out of every total.
    (possible,) = advice.unattributed
    assert (possible.exchange_id, possible.response_id, possible.reusable_id) == (
        "a-x6",
        "resp_a-x6",
        "cntr_a4",
    )
    assert possible.possible_fee == Decimal("0.03")
    assert advice.to_json()["possible_unattributed_fees"] == "0.03"


def test_grouping_by_label_shares_containers_across_sessions(store: EventStore) -> None:
    build(store)
    advice = advise(store, by="label=team")
    found = by_id(advice)
    assert list(found) == ["cntr_a2", "cntr_d3", "cntr_b2", "cntr_c2"]
    c2 = found["cntr_c2"]
    assert (c2.group, c2.reusable_id, c2.session_id) == ("team=ml", "cntr_c1", "adv-c2")
    # c2 alone: 25 min × $0.0015 = $0.0375. c1 carrying its work lives 0 → +35 = 35 min
    # ($0.0525) instead of 20 ($0.03): $0.0225 more. Avoidable: 0.0375 − 0.0225 = $0.0150.
    assert (c2.fee, c2.avoidable) == (Decimal("0.0375"), Decimal("0.0150"))
    groups = {g.key: g for g in advice.groups}
    # A session without the label is its own group.
    assert set(groups) == {"team=data", "team=ml", "adv-d (adv-d)"}
    assert (groups["team=data"].containers, groups["team=data"].avoidable) == (6, Decimal("0.15"))
    assert advice.total.avoidable == Decimal("0.1950")


def test_an_idle_rule_overrides_the_containers_own_expiry(store: EventStore) -> None:
    build(store)
    # With 20 idle minutes for every container, d1 (last active +1) lives until +21: d2 at +8
    # and d3 at +9 could both have used it.
    advice = advise(store, idle_minutes=20)
    d = [a for a in advice.avoidable if a.session_id == "adv-d"]
    assert [(a.container_id, a.reusable_id) for a in d] == [
        ("cntr_d2", "cntr_d1"),
        ("cntr_d3", "cntr_d1"),
    ]
    assert sum(a.avoidable or 0 for a in d) == Decimal("0.06")


def test_the_demo_line(store: EventStore) -> None:
    build(store)
    advice = advise(store)
    assert advice.line("adv-a") == (
        "container advice: 1 of 4 container(s) were created while a reusable one of the same "
        'tier existed: $0.03 avoidable; e.g. tools=[{"type": "code_interpreter", "container": '
        '"cntr_a1"}]  # instead of {"type": "auto"}'
    )
    assert advice.line("adv-c1").startswith("container advice: 1 container(s) created, none")


def test_bad_grouping_is_refused(store: EventStore) -> None:
    with pytest.raises(BadGrouping, match="use session or label=KEY"):
        advise(store, by="model")


def test_cli_advise_text_json_and_csv(db_url: str) -> None:
    with EventStore.open(db_url, upgrade=True) as store:
        build(store)
    runner = CliRunner()
    as_json = runner.invoke(main, ["containers", "--advise", "--db", db_url, "--json"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert doc["total"]["avoidable_fees"] == "0.18"
    assert [a["container_id"] for a in doc["avoidable_containers"]] == [
        "cntr_a2",
        "cntr_d3",
        "cntr_b2",
    ]
    assert doc["possible_unattributed_containers"][0]["could_reuse"] == "cntr_a4"

    as_csv = runner.invoke(
        main, ["containers", "--advise", "--by", "label=team", "--db", db_url, "--csv"]
    )
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["kind"], r["container_id"], r["avoidable_fee"]) for r in rows] == [
        ("avoidable", "cntr_a2", "0.03"),
        ("avoidable", "cntr_d3", "0.03"),
        ("avoidable", "cntr_b2", "0.12"),
        ("avoidable", "cntr_c2", "0.0150"),
        ("possible_unattributed", "", ""),
    ]

    text = runner.invoke(main, ["containers", "--advise", "--db", db_url], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "3 of 11 containers avoidable" in text.output
    assert "$0.18" in text.output
    assert 'tools=[{"type": "code_interpreter", "container": "cntr_a1"}]' in text.output
    assert "possible unattributed" in text.output

    bad = runner.invoke(main, ["containers", "--advise", "--by", "day", "--db", db_url])
    assert bad.exit_code == 2
    assert "Error: Invalid value for '--by': cannot group the advice by 'day'" in bad.output
    both = runner.invoke(main, ["containers", "--advise", "--json", "--csv", "--db", db_url])
    # Under --json an error is a JSON object on stderr.
    assert both.exit_code == 2 and "Traceback" not in both.output
    assert json.loads(both.stderr) == {
        "error": "choose one of --json and --csv (see `codetape containers --help`)"
    }
    alone = runner.invoke(main, ["containers", "--csv", "--db", db_url])
    assert alone.exit_code == 2 and "Error: --by, --fees and --csv go with --advise" in alone.output
    at = runner.invoke(main, ["containers", "--advise", "--at", "now", "--db", db_url])
    assert at.exit_code == 2 and "drop --at" in at.output
