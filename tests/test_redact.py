"""The redactor alone: which names are secrets, URLs, JSON paths in requests and their echoes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.redact import REDACTED, Redactor, looks_like_credential, query_pairs
from recorder.sse import parse_frame, split_sse

# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "X-Goog-Api-Key",
        "api-key",
        "Ocp-Apim-Subscription-Key",
        "X-Auth-Token",
        "X-Amz-Security-Token",
        "X-Client-Secret",
        "X-Signature",
        "X-Password",
        "X-Session-Id",
        "Set-Cookie",
        "X-Credential",
        "OpenAI-Organization",
        "OpenAI-Project",
        "X-Client-Cert",
        "X-Forwarded-Client-Cert",
        "SSL-Client-Cert",
        "X-Bearer",
        " Set-Cookie ",
    ],
)
def test_a_header_whose_name_says_secret_is_redacted(name: str) -> None:
    [[stored, value]] = Redactor().header_pairs([(name, "s3cr3t")])
    assert (stored, value) == (name, REDACTED)


@pytest.mark.parametrize(
    "name",
    [
        "content-type",
        "openai-beta",
        "user-agent",
        "x-request-id",
        "openai-processing-ms",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-reset-tokens",
        "idempotency-key",
        "x-stainless-retry-count",
    ],
)
def test_headers_that_are_not_secrets_are_kept(name: str) -> None:
    assert Redactor().header_pairs([(name, "v")]) == [[name, "v"]]


def test_the_user_keeps_a_name_but_never_one_always_redacted() -> None:
    redactor = Redactor.with_extra(keep=["X-Session-Id", "Authorization"], headers=["x-team"])
    stored = redactor.header_pairs(
        [("x-session-id", "abc"), ("authorization", "Bearer k"), ("X-Team", "t")]
    )
    assert stored == [["x-session-id", "abc"], ["authorization", REDACTED], ["X-Team", REDACTED]]
    assert Redactor.from_config(redactor.to_config()) == redactor


# Spelled in pieces so that secret scanners do not flag this file.
PROJECT_KEY = "sk-" + "proj-" + "A1b2C3d4E5f6G7h8_-J9"
SERVICE_KEY = "sk-" + "svcacct-" + "Z9y8X7w6V5u4"
LEGACY_KEY = "sk-" + "0123456789abcdefABCDEF"


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {PROJECT_KEY}",
        "bearer opaque-token",
        "BEARER\tx",
        "  Basic YWxpY2U6cGFzc3dvcmQ=",
        "basic x",
        PROJECT_KEY,
        SERVICE_KEY,
        LEGACY_KEY,
        f"key={LEGACY_KEY}; Path=/",
        f"upstream:{SERVICE_KEY}",
    ],
)
def test_a_credential_value_is_redacted_whatever_the_header_name(value: str) -> None:
    assert looks_like_credential(value)
    redactor = Redactor.with_extra(keep=["x-relay"])
    for name in ("X-Relay", "x-upstream-thing", "idempotency-key", "content-type"):
        assert redactor.headers_redacted([(name, value)]) == ([[name, REDACTED]], [name.lower()])


@pytest.mark.parametrize(
    "value",
    [
        "application/json",
        "Bearer",  # the scheme alone carries nothing
        "Basically fine",
        "task-0123456789abcdef",  # "sk-" inside a word
        "risk-0123456789abcdef",
        "sk-short",  # a placeholder, not a key
        "req_0123456789abcdef",
        "gzip, deflate",
    ],
)
def test_ordinary_values_are_kept(value: str) -> None:
    assert not looks_like_credential(value)
    assert Redactor().header_pairs([("x-thing", value)]) == [["x-thing", value]]


# -- URLs ------------------------------------------------------------------------------


def test_a_semicolon_separates_query_parameters_and_key_values_are_redacted() -> None:
    url = f"https://h/v1/files?a=1;key=S3CRET&after=file-1;x=sk%2D{PROJECT_KEY[3:]}&b=2#f"
    stored, replaced, userinfo = Redactor().url_redacted(url)
    assert stored == (
        "https://h/v1/files?a=1;key=%3Credacted%3E&after=file-1;x=%3Credacted%3E&b=2#f"
    )
    assert replaced == ["key", "x"] and not userinfo
    # A key given as a parameter's name goes whole.
    assert Redactor().url_redacted(f"https://h/v1?{LEGACY_KEY}&limit=2") == (
        "https://h/v1?%3Credacted%3E&limit=2",
        [REDACTED],
        False,
    )
    # Nothing secret: every byte kept, separators included.
    plain = "https://h/v1/files?include=a;b&limit=2;order=desc"
    assert Redactor().url_redacted(plain) == (plain, [], False)
    assert query_pairs("a=1;key=%3Credacted%3E&b&&c=x+y") == [
        ("a", "1"),
        ("key", REDACTED),
        ("b", ""),
        ("c", "x y"),
    ]


def test_settings_bound_for_metadata_are_redacted_like_requests() -> None:
    redactor = Redactor()
    metadata = {
        "rerun": {
            "upstream": "http://user:PASSW0RD@127.0.0.1:9/v1?api-key=QS3CRET;a=1",
            "model": "gpt-5-mini",
            "overrides": {"note": f"Bearer {PROJECT_KEY}", "n": 2, "list": [LEGACY_KEY, True]},
        }
    }
    assert redactor.settings(metadata) == {
        "rerun": {
            "upstream": "http://127.0.0.1:9/v1?api-key=%3Credacted%3E;a=1",
            "model": "gpt-5-mini",
            "overrides": {"note": REDACTED, "n": 2, "list": [REDACTED, True]},
        }
    }
    clean = {"upstream": "https://api.openai.com/v1", "labels": ["a"], "n": None}
    assert redactor.settings(clean) is clean
    assert redactor.setting("default") == "default"


def test_url_loses_userinfo_and_secret_query_values_and_keeps_every_other_byte() -> None:
    url = (
        "https://user:pa55word@api.example.com:8443/v1/files?token=t0k&limit=2"
        "&sig=abc%2Fdef&include%5B%5D=x&X-Amz-Signature=ff&api_key=k&after=file-1#frag"
    )
    stored, replaced, userinfo = Redactor().url_redacted(url)
    assert stored == (
        "https://api.example.com:8443/v1/files?token=%3Credacted%3E&limit=2"
        "&sig=%3Credacted%3E&include%5B%5D=x&X-Amz-Signature=%3Credacted%3E"
        "&api_key=%3Credacted%3E&after=file-1#frag"
    )
    assert replaced == ["token", "sig", "X-Amz-Signature", "api_key"] and userinfo
    plain = "https://api.openai.com/v1/responses?include[]=a&stream=true"
    assert Redactor().url_redacted(plain) == (plain, [], False)
    assert Redactor().url("https://sk-abc@host/v1") == "https://host/v1"


# -- JSON paths ------------------------------------------------------------------------


def test_request_paths_replace_only_their_values() -> None:
    redactor = Redactor.with_extra(json_paths=["metadata.user_key", "tools.*.authorization"])
    body = (
        b'{"model": "m",\n "metadata": {"user_key": {"nested": ["x"]}, "run": 1},\n'
        b' "tools": [{"type": "mcp", "authorization": "Bearer T"}, {"type": "x"}]}'
    )
    stored, hits = redactor.body(body)
    assert stored == (
        b'{"model": "m",\n "metadata": {"user_key": "<redacted>", "run": 1},\n'
        b' "tools": [{"type": "mcp", "authorization": "<redacted>"}, {"type": "x"}]}'
    )
    assert hits == ["metadata.user_key", "tools.*.authorization"]
    assert redactor.body(b'{"model": "m"}') == (b'{"model": "m"}', [])
    assert redactor.body(b"not json") == (b"not json", [])


def test_an_echo_frame_changes_only_at_the_value_and_keeps_its_framing() -> None:
    redactor = Redactor.with_extra(json_paths=["metadata.user_key"])
    data = '{"type":"response.created","response":{"id":"resp_1","metadata":{"user_key":"S"}}}'
    redacted_data = data.replace('"S"', '"<redacted>"')
    for wire in (
        f"event: response.created\ndata: {data}\n\n",
        f"event: response.created\r\ndata: {data}\r\n\r\n",
        f"\n\nevent: response.created\rdata:{data}\r\r",
        f"\ufeffevent: response.created\ndata: {data}\n\n",
        f": comment\nid: 7\nevent: response.created\ndata: {data}\nretry: 5\n\n",
    ):
        raw = wire.encode()
        result = redactor.frame(raw)
        assert result is not None
        stored, hits = result
        assert hits == ["metadata.user_key"]
        assert stored == raw.replace(b'"S"', b'"<redacted>"')
        before, after = parse_frame(raw), parse_frame(stored)
        assert (after.event, after.id, after.retry) == (before.event, before.id, before.retry)
        assert after.data == redacted_data and split_sse(stored)[0].terminated


def test_a_json_split_over_data_lines_stays_split() -> None:
    redactor = Redactor.with_extra(json_paths=["metadata"])
    raw = (
        b'data: {"type":"response.completed",\ndata: "response":{"metadata":\n'
        b'data: {"k":\ndata: "S"}}}\n\n'
    )
    result = redactor.frame(raw)
    assert result is not None
    stored = result[0]
    assert stored == (
        b'data: {"type":"response.completed",\ndata: "response":{"metadata":\n'
        b'data: "<redacted>"}}\n\n'
    )
    assert json.loads(parse_frame(stored).data or "")["response"]["metadata"] == REDACTED


def test_a_frame_cut_off_inside_the_secret_is_redacted_to_its_end() -> None:
    redactor = Redactor.with_extra(json_paths=["metadata.user_key"])
    raw = (
        b"event: response.completed\n"
        b'data: {"type":"response.completed","response":{"metadata":{"user_key":"SEC'
    )
    result = redactor.frame(raw)
    assert result is not None
    assert result[0].endswith(b'{"user_key":"<redacted>"') and b"SEC" not in result[0]


def test_frames_without_the_path_and_configs_without_paths_do_nothing() -> None:
    raw = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
    assert Redactor.with_extra(json_paths=["metadata.user_key"]).frame(raw) is None
    assert Redactor().frame(raw) is None
    # The request's own field at the top level of an event is not an echo.
    assert Redactor.with_extra(json_paths=["type"]).frame(raw) is None


def test_plain_json_bodies_and_lists_of_them() -> None:
    redactor = Redactor.with_extra(json_paths=["metadata.user_key"])
    body = (
        b'{\n  "object": "list",\n  "data": [\n    {"metadata": {"user_key": "A"}},\n'
        b'    {"metadata": {}}\n  ]\n}'
    )
    stored, hits = redactor.response_body(body)
    assert stored == body.replace(b'"A"', b'"<redacted>"') and hits == ["metadata.user_key"]
    single = b'{"object": "response", "metadata": {"user_key": "B"}}'
    assert redactor.response_body(single)[0] == single.replace(b'"B"', b'"<redacted>"')
    assert redactor.holds_body(bytearray(b'  {"object"')) and not redactor.holds_body(b"\x89PNG")
    assert not Redactor().holds_body(b'{"a": 1}')


_json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "k", "metadata"]), inner, max_size=4)
    ),
    max_leaves=20,
)


def _expected(value: Any, path: tuple[str, ...]) -> Any:
    if not path:
        return REDACTED
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _expected(v, rest) if head in ("*", k) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_expected(v, rest) if head in ("*", str(i)) else v for i, v in enumerate(value)]
    return value


@settings(max_examples=300, deadline=None)
@given(
    document=st.dictionaries(st.sampled_from(["a", "k", "metadata"]), _json, max_size=4),
    path=st.lists(st.sampled_from(["a", "k", "metadata", "*", "0", "1"]), min_size=1, max_size=3),
    indent=st.sampled_from([None, 2]),
    ascii_only=st.booleans(),
)
def test_redacting_a_path_equals_replacing_it_in_the_parsed_document(
    document: dict[str, Any], path: list[str], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(document, indent=indent, ensure_ascii=ascii_only).encode()
    stored, hits = Redactor.with_extra(json_paths=[".".join(path)]).body(text)
    expected = _expected(document, tuple(path))
    assert json.loads(stored) == expected
    assert bool(hits) == _holds(document, tuple(path))
    if not hits:
        assert stored == text


def _holds(value: Any, path: tuple[str, ...]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return any(_holds(v, rest) for k, v in value.items() if head in ("*", k))
    if isinstance(value, list):
        return any(_holds(v, rest) for i, v in enumerate(value) if head in ("*", str(i)))
    return False
