"""Cost report against numbers worked out by hand, on SQLite and PostgreSQL.

Prices used by hand (genai-prices' bundled list prices, USD per million tokens):
gpt-5-nano input 0.05, cached input 0.005, output 0.40; gpt-4o-mini input 0.15,
output 0.60; gpt-5.5 input 5, output 30. Container fees from the shipped table.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from recorder import projections as P
from recorder.events import Event, EventKind
from recorder.ingest import import_file
from recorder.projections.fees import FeeTableError, load_fee_table
from recorder.store import EventStore

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "realdata"
SECOND = 10**9


def session_report(report: dict[str, Any], session_id: str) -> dict[str, Any]:
    [group] = [g for g in report["groups"] if g["key"].endswith(f"({session_id[:8]})")]
    return group


def imported(store: EventStore, relative: str) -> str:
    result = import_file(store, FIXTURES / relative)
    return result.sessions[0][0]


def test_vercel_code_interpreter_session_by_hand(store: EventStore) -> None:
    sid = imported(store, "vercel-ai/openai-code-interpreter-tool.1.jsonl")
    report = P.costs(store).to_json()
    group = session_report(report, sid)
    # usage: input 6047 (2944 cached), output 1623 (1408 of it reasoning)
    # (6047-2944)*0.05e-6 + 2944*0.005e-6 + 1623*0.40e-6
    #   = 0.00015515 + 0.00001472 + 0.0006492 = 0.00081907
    assert Decimal(group["token_cost"]) == Decimal("0.00081907")
    assert (group["input_tokens"], group["cached_tokens"], group["output_tokens"]) == (
        6047,
        2944,
        1623,
    )
    assert group["reasoning_tokens"] == 1408
    # One 1g container (3 calls share it), created 2025-09-11: flat $0.03.
    assert group["containers"] == 1
    assert Decimal(group["container_fees"]) == Decimal("0.03")
    assert Decimal(group["total"]) == Decimal("0.03081907")
    assert group["basis"] == "exact"
    [item] = report["exchanges"]
    assert item["token_basis"] == "exact"
    assert "gpt-5-nano" in item["token_rule"]
    [container] = report["containers"]
    assert container["fee_basis"] == "exact"
    assert container["fee_rule"].startswith("per_container")


def test_dotnet_streaming_with_files_by_hand(store: EventStore) -> None:
    sid = imported(
        store, "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreamingWithFiles.jsonl"
    )
    group = session_report(P.costs(store).to_json(), sid)
    # gpt-4o-mini-2024-07-18 (a snapshot name): 38152*0.15e-6 + 312*0.60e-6
    #   = 0.0057228 + 0.0001872 = 0.00591
    assert Decimal(group["token_cost"]) == Decimal("0.00591")
    # The file upload is not a responses exchange; two calls share one container: $0.03 once.
    assert group["exchanges"] == 1
    assert group["containers"] == 1
    assert Decimal(group["total"]) == Decimal("0.03591")


def test_per_minute_era_container_is_estimated_by_hand(store: EventStore) -> None:
    sid = imported(
        store, "pydantic-ai/test_openai_responses_code_execution_download_file_stream.jsonl"
    )
    report = P.costs(store).to_json()
    group = session_report(report, sid)
    # gpt-5.5: 1361*5e-6 + 134*30e-6 = 0.006805 + 0.00402 = 0.010825
    assert Decimal(group["token_cost"]) == Decimal("0.010825")
    # Created 2026-07-09 (per-minute era). Lifetime: created_at 1783641994 →
    # last activity 1783642003 (+9 s) + 20 idle minutes = 20 min 9 s → 21 min
    # × $0.0015 = $0.0315, an estimate.
    [container] = report["containers"]
    assert Decimal(container["fee"]) == Decimal("0.0315")
    assert container["fee_basis"] == "estimated"
    assert container["fee_rule"].startswith("per_minute")
    assert group["basis"] == "estimated"
    # A 60-minute idle rule: 60 min 9 s alive → 61 min × $0.0015.
    longer = P.costs(store, idle_minutes=60).to_json()
    assert Decimal(longer["containers"][0]["fee"]) == Decimal("0.0015") * 61


def test_container_created_by_the_containers_api_is_charged_once(store: EventStore) -> None:
    sid = imported(
        store,
        "openai-dotnet/ResponsesToolTests/CodeInterpreterToolWithContainerIdFromContainerApi.jsonl",
    )
    report = P.costs(store).to_json()
    [container] = report["containers"]
    assert container["created_via"] == "api"
    assert container["charged"]
    assert Decimal(container["fee"]) == Decimal("0.03")
    group = session_report(report, sid)
    assert group["containers"] == 1
    assert Decimal(group["container_fees"]) == Decimal("0.03")
    # The responses request reused it by id: no possible unattributed container.
    assert report["possible_unattributed_containers"] == []


def test_auto_container_request_without_a_call_is_listed_not_dropped(store: EventStore) -> None:
    imported(store, "pydantic-ai/test_openai_responses_thinking_with_code_execution_tool.jsonl")
    report = P.costs(store).to_json()
    [possible] = report["possible_unattributed_containers"]
    assert possible["response_id"] == "resp_68cdba6a610481a3b4533f345bea8a7b09b7445677780c8f"
    assert Decimal(possible["possible_fee"]) == Decimal("0.03")
    assert report["possible_unattributed_fees"] == "0.03"
    # ... and kept out of the totals: one container charged, not two.
    assert Decimal(report["total"]["container_fees"]) == Decimal("0.03")


def test_failed_stream_has_unknown_token_cost(store: EventStore) -> None:
    imported(store, "vercel-ai/openai-error.1.jsonl")
    report = P.costs(store).to_json()
    [item] = report["exchanges"]
    assert item["token_cost"] is None
    assert item["token_basis"] == "unknown"
    assert report["total"]["basis"].startswith("partial")


def _reuse_exchange(sid: str, xid: str, container: str, at_ns: int) -> list[Event]:
    """SYNTHETIC non-streamed exchange reusing ``container`` by id."""
    body = {
        "id": f"resp_{xid}",
        "object": "response",
        "created_at": at_ns // SECOND,
        "status": "completed",
        "model": "gpt-4o-mini-2024-07-18",
        "output": [
            {
                "id": f"ci_{xid}",
                "type": "code_interpreter_call",
                "status": "completed",
                "code": "1+1",
                "container_id": container,
                "outputs": None,
            }
        ],
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    request = {
        "model": "gpt-4o-mini",
        "tools": [{"type": "code_interpreter", "container": container}],
    }
    return [
        Event(
            sid,
            EventKind.REQUEST,
            0,
            xid,
            at_ns,
            payload=json.dumps(request).encode(),
            meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
        ),
        Event(sid, EventKind.RESPONSE_HEAD, 1, xid, at_ns, meta={"status": 200}),
        Event(sid, EventKind.BODY, 2, xid, at_ns, payload=json.dumps(body).encode()),
        Event(sid, EventKind.EXCHANGE_END, 3, xid, at_ns, meta={"outcome": "completed"}),
    ]


def _auto_session(sid: str, at_ns: int, memory: str | None = None) -> list[Event]:
    """SYNTHETIC session: one auto-container exchange, then a reuse 25 minutes later."""
    tool: dict[str, Any] = {"type": "code_interpreter", "container": {"type": "auto"}}
    if memory:
        tool["container"]["memory_limit"] = memory
    container = f"cntr_{sid}"
    first = _reuse_exchange(sid, f"{sid}-x1", container, at_ns)
    first[0] = Event(
        sid,
        EventKind.REQUEST,
        0,
        f"{sid}-x1",
        at_ns,
        payload=json.dumps({"model": "gpt-4o-mini", "tools": [tool]}).encode(),
        meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
    )
    return [
        Event(
            sid,
            EventKind.SESSION_OPEN,
            0,
            recorded_at_ns=at_ns,
            meta={"name": sid, "labels": {"team": "t1", "env": "ci"}},
        ),
        *first,
        *_reuse_exchange(sid, f"{sid}-x2", container, at_ns + 25 * 60 * SECOND),
        Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=at_ns + 25 * 60 * SECOND),
    ]


def test_per_session_era_counts_started_sessions_and_reuse_is_free(store: EventStore) -> None:
    # 2026-04-15 12:00 UTC: per-session era. Activity spans 25 min → 2 started sessions.
    at = 1776254400 * SECOND
    store.append(_auto_session("synthetic-4g", at, memory="4g"))
    report = P.costs(store).to_json()
    [container] = report["containers"]
    assert container["memory"] == "4g"
    assert container["charged_to_exchange"] == "synthetic-4g-x1"
    assert Decimal(container["fee"]) == Decimal("0.24")  # 2 × $0.12
    assert container["fee_basis"] == "estimated"
    # Tokens: 2 × (10*0.15e-6 + 5*0.6e-6) = 2 × 0.0000045 = 0.000009
    [group] = report["groups"]
    assert Decimal(group["token_cost"]) == Decimal("0.000009")
    assert group["exchanges"] == 2


def test_grouping_filters_and_user_fee_table(store: EventStore, tmp_path: Path) -> None:
    store.append(_auto_session("syn-a", 1757000000 * SECOND))  # 2025-09-04
    store.append(_auto_session("syn-b", 1757100000 * SECOND))  # 2025-09-05
    by_day = P.costs(store, by="day").to_json()
    assert [g["key"] for g in by_day["groups"]] == ["2025-09-04", "2025-09-05"]
    by_model = P.costs(store, by="model").to_json()
    [model] = by_model["groups"]
    assert model["key"] == "gpt-4o-mini-2024-07-18"
    assert model["containers"] == 2
    by_label = P.costs(store, by="label").to_json()
    assert [g["key"] for g in by_label["groups"]] == ["env=ci", "team=t1"]
    # A session in two label groups is counted once in the total.
    assert Decimal(by_label["total"]["container_fees"]) == Decimal("0.06")
    since = P.costs(store, since_ns=1757050000 * SECOND).to_json()
    assert since["total"]["exchanges"] == 2
    assert Decimal(since["total"]["container_fees"]) == Decimal("0.03")
    fees = tmp_path / "fees.json"
    fees.write_text(
        json.dumps(
            {
                "source": "my contract",
                "periods": [
                    {"from": None, "until": None, "rule": "per_container", "prices": {"1g": "0.01"}}
                ],
            }
        )
    )
    custom = P.costs(store, fees=fees).to_json()
    assert Decimal(custom["total"]["container_fees"]) == Decimal("0.02")
    assert custom["fee_table"]["source"] == "my contract"


def test_bad_fee_table_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"periods": [{"rule": "per_hour", "prices": {"1g": 1}}]}')
    with pytest.raises(FeeTableError, match=r"bad.json:1: field 'periods\[0\].rule': Input"):
        load_fee_table(bad)
    with pytest.raises(FeeTableError, match="cannot read fee table"):
        load_fee_table(tmp_path / "missing.json")


def test_shipped_fee_table_dates() -> None:
    table = load_fee_table()
    start = 1774915200 * SECOND  # 2026-03-31 00:00 UTC
    day_before = start - 1
    assert table.fee("16g", day_before, day_before, day_before).amount == Decimal("0.48")
    assert table.fee("16g", start, start, start).rule.startswith("per_session")
    june2 = 1780358400 * SECOND  # 2026-06-02 00:00 UTC
    june1 = june2 - 1
    assert table.fee("1g", june1, june1, june1).rule.startswith("per_session")
    # 5-minute minimum: 1 minute alive → 5 × $0.0015.
    fee = table.fee("1g", june2, june2, june2 + 60 * SECOND)
    assert fee.amount == Decimal("0.0075")
    assert not fee.exact
    assert table.fee("64g", june2, june2, june2 + 600 * SECOND).amount == Decimal("0.96")
