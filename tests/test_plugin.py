"""The pytest plugin, run in inner pytest sessions (``pytester``).

The plugin is loaded in those sessions the way users get it: through the
``pytest11`` entry point of the installed distribution (no ``-p`` option).
Every fixture tape is replayed through the plugin's clients, sync and async.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from replay.source import load_tape

ROOT = Path(__file__).resolve().parents[1]
TAPES = sorted((ROOT / "fixtures" / "realdata").rglob("*.jsonl"))
STREAM_TAPE = ROOT / "fixtures/realdata/pydantic-ai/test_openai_responses_stream.jsonl"
ERROR_TAPE = ROOT / "fixtures/realdata/pydantic-ai/test_openai_responses_model_http_error.jsonl"


@pytest.fixture(autouse=True)
def _no_env_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # The inner sessions' clients take the SDK's default base URL.
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _copy(pytester: pytest.Pytester, tape: Path, relative: str) -> Path:
    target = pytester.path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tape, target)
    return target


def test_the_plugin_is_registered_through_the_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--codetape-mode=MODE*"])
    pytester.makepyfile(
        """
        def test_plugin(request):
            assert request.config.pluginmanager.has_plugin("codetape")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_every_fixture_tape_replays_through_the_plugin_clients(pytester: pytest.Pytester) -> None:
    ids = []
    for tape in TAPES:
        ident = tape.stem.replace(".", "_")
        ids.append(ident)
        # Default locations: fixtures/<module>/<test name>.jsonl
        _copy(pytester, tape, f"fixtures/test_all/test_sync_{ident}.jsonl")
        _copy(pytester, tape, f"fixtures/test_all/test_async_{ident}.jsonl")
    pytester.makepyfile(
        test_all=f"""
        import asyncio
        import pytest
        from replay.reissue import ApiError, areissue, reissue

        IDS = {ids!r}

        @pytest.mark.parametrize("ident", IDS)
        def test_sync(ident, codetape, openai_client):
            assert codetape.path.name == f"test_sync_{{ident}}.jsonl"
            assert codetape.mode == "none"
            results = [reissue(openai_client, x) for x in codetape.recording.exchanges]
            assert len(results) == len(codetape.recording.exchanges) >= 1

        @pytest.mark.parametrize("ident", IDS)
        def test_async(ident, codetape, async_openai_client):
            async def main():
                return [await areissue(async_openai_client, x)
                        for x in codetape.recording.exchanges]
            results = asyncio.run(main())
            assert len(results) == len(codetape.recording.exchanges) >= 1
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2 * len(TAPES))


def test_marker_overrides_the_tape_path(pytester: pytest.Pytester) -> None:
    _copy(pytester, STREAM_TAPE, "elsewhere/stream.jsonl")
    body = load_tape(STREAM_TAPE).exchanges[0].request_body.decode()
    pytester.makepyfile(
        test_marker=f"""
        import json
        import pytest

        @pytest.mark.codetape(tape="elsewhere/stream.jsonl", allow_unplayed=True)
        def test_one(codetape, openai_client):
            assert codetape.path.parts[-2:] == ("elsewhere", "stream.jsonl")
            with openai_client.responses.create(**json.loads({body!r})) as stream:
                types = [event.type for event in stream]
            assert types[-1] == "response.completed"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_unplayed_exchanges_fail_the_test_unless_allowed(pytester: pytest.Pytester) -> None:
    _copy(pytester, STREAM_TAPE, "fixtures/test_unplayed/test_strict.jsonl")
    _copy(pytester, STREAM_TAPE, "fixtures/test_unplayed/test_relaxed.jsonl")
    _copy(pytester, STREAM_TAPE, "fixtures/test_unplayed/test_failing.jsonl")
    pytester.makepyfile(
        test_unplayed="""
        import pytest

        def test_strict(openai_client):
            pass

        @pytest.mark.codetape(allow_unplayed=True)
        def test_relaxed(openai_client):
            pass

        def test_failing(openai_client):
            assert False, "the test's own failure"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*codetape: 2 of 2 recorded exchanges in *test_strict.jsonl were never requested:",
            "*#1 POST /v1/responses",
            "*#2 POST /v1/responses",
            "*allow_unplayed=True*",
        ]
    )
    # A test that fails on its own reports its own failure, not the unplayed ones.
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    assert "test_failing.jsonl were never requested" not in result.stdout.str()


def test_a_request_the_tape_lacks_fails_with_the_diff(pytester: pytest.Pytester) -> None:
    _copy(pytester, ERROR_TAPE, "fixtures/test_nomatch/test_wrong_request.jsonl")
    pytester.makepyfile(
        test_nomatch="""
        def test_wrong_request(openai_client):
            openai_client.responses.create(
                model="gpt-4o",
                input=[{"role": "user", "content": "What is the capital of Spain?"}],
                instructions="",
                temperature=-1,
                stream=True,
            )
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*NoMatch: no recorded exchange in *test_wrong_request.jsonl matches "
            "POST /v1/responses",
            "*closest is #1 POST /v1/responses, which differs in:",
            '*body.input[[]0[]].content: recorded "What is the capital of France?", '
            'got "What is the capital of Spain?"*',
        ]
    )


def test_a_missing_tape_in_mode_none_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_missing="""
        def test_nothing_recorded(openai_client):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*TapeMissing: tape *fixtures/test_missing/test_nothing_recorded.jsonl does not exist*"]
    )


def test_an_unknown_mode_is_a_usage_error_listing_the_valid_ones(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--codetape-mode=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--codetape-mode: unknown record mode 'sometimes': choose one of none, once, "
            "new_episodes, all*"
        ]
    )


_UPSTREAM_CONFTEST = """
import json
import httpx2
import pytest

CALLS = []

class Wire(httpx2.SyncByteStream):
    def __init__(self, data):
        self.data = data
    def __iter__(self):
        yield self.data

def handler(request):
    body = json.loads(request.content)
    CALLS.append(body)
    data = json.dumps({
        "id": "resp_fake", "object": "response", "created_at": 1, "status": "completed",
        "model": body["model"], "output": [], "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [],
    }).encode()
    return httpx2.Response(200, headers={"content-type": "application/json"}, stream=Wire(data))

@pytest.fixture
def codetape_real_transport():
    return httpx2.MockTransport(handler)

@pytest.fixture
def upstream_calls():
    return CALLS
"""


def test_once_records_through_the_overridden_real_transport_then_replays(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(_UPSTREAM_CONFTEST)
    pytester.makepyfile(
        test_rec="""
        def test_record(openai_client, upstream_calls, codetape):
            response = openai_client.responses.create(model="gpt-test", input="hello")
            assert response.id == "resp_fake"
            assert len(upstream_calls) == codetape.recorded
        """
    )
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    try:
        first = pytester.runpytest("-p", "no:cacheprovider", "--codetape-mode=once")
    finally:
        monkeypatch.undo()
    first.assert_outcomes(passed=1)
    tape = pytester.path / "fixtures/test_rec/test_record.jsonl"
    assert tape.is_file()
    assert "sk-test-secret" not in tape.read_text()
    assert len(load_tape(tape).exchanges) == 1
    # Default mode none: replayed, the upstream is not called, no API key needed.
    second = pytester.runpytest("-p", "no:cacheprovider")
    second.assert_outcomes(passed=1)


def test_ini_options_set_the_directory_and_the_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        codetape_dir = tapes
        codetape_mode = once
        """
    )
    _copy(pytester, STREAM_TAPE, "tapes/test_ini/test_where.jsonl")
    pytester.makepyfile(
        test_ini="""
        import pytest

        @pytest.mark.codetape(allow_unplayed=True)
        def test_where(codetape):
            assert codetape.path.parts[-3:] == ("tapes", "test_ini", "test_where.jsonl")
            assert codetape.mode == "once"
            assert not codetape.records  # the tape exists: `once` replays it
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


_NO_NETWORK_CONFTEST = """
import httpx2
import pytest

def refuse(request):
    raise AssertionError("the real transport was called")

@pytest.fixture
def codetape_real_transport():
    return httpx2.MockTransport(refuse)
"""


@pytest.mark.parametrize(
    ("command_line", "marked", "unmarked"),
    [
        ([], "all", "once"),  # no option: the marker, else the ini option
        (["--codetape-mode=none"], "none", "none"),  # the command line beats both
        (["--codetape-mode", "new_episodes"], "new_episodes", "new_episodes"),
    ],
)
def test_the_command_line_mode_beats_the_marker_and_the_ini_option(
    pytester: pytest.Pytester, command_line: list[str], marked: str, unmarked: str
) -> None:
    pytester.makeini("[pytest]\ncodetape_mode = once\n")
    pytester.makeconftest(_NO_NETWORK_CONFTEST)
    _copy(pytester, STREAM_TAPE, "fixtures/test_modes/test_marked.jsonl")
    _copy(pytester, STREAM_TAPE, "fixtures/test_modes/test_unmarked.jsonl")
    pytester.makepyfile(
        test_modes=f"""
        import pytest

        @pytest.mark.codetape(mode="all", allow_unplayed=True)
        def test_marked(codetape):
            assert codetape.mode == {marked!r}

        @pytest.mark.codetape(allow_unplayed=True)
        def test_unmarked(codetape):
            assert codetape.mode == {unmarked!r}
        """
    )
    pytester.runpytest("-p", "no:cacheprovider", *command_line).assert_outcomes(passed=2)


def test_ci_forces_a_test_marked_for_recording_offline(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(_NO_NETWORK_CONFTEST)
    _copy(pytester, STREAM_TAPE, "fixtures/test_offline/test_rerecord.jsonl")
    body = load_tape(STREAM_TAPE).exchanges[0].request_body.decode()
    pytester.makepyfile(
        test_offline=f"""
        import json
        import pytest

        @pytest.mark.codetape(mode="all", allow_unplayed=True)
        def test_rerecord(openai_client):
            with openai_client.responses.create(**json.loads({body!r})) as stream:
                assert [e.type for e in stream][-1] == "response.completed"
        """
    )
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    try:
        # Forced to `none`, it replays; left marked `all`, it goes to the (refusing)
        # network. A subprocess: a recording in an in-process inner session would
        # import the recorder's SQLAlchemy and Alembic modules a second time.
        forced = pytester.runpytest("-p", "no:cacheprovider", "--codetape-mode=none")
        marked = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    finally:
        monkeypatch.undo()
    forced.assert_outcomes(passed=1)
    marked.assert_outcomes(failed=1)
    marked.stdout.fnmatch_lines(["*the real transport was called*"])


def test_a_marker_redacting_a_field_records_and_replays_the_same_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(_UPSTREAM_CONFTEST)
    pytester.makepyfile(
        test_redacted="""
        import pytest

        @pytest.mark.codetape(redact_json_paths=["metadata.user"])
        def test_call(openai_client):
            response = openai_client.responses.create(
                model="gpt-test", input="hello", metadata={"user": "alice"}
            )
            assert response.id == "resp_fake"
        """
    )
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    try:
        pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--codetape-mode=once"
        ).assert_outcomes(passed=1)
    finally:
        monkeypatch.undo()
    tape = pytester.path / "fixtures/test_redacted/test_call.jsonl"
    assert "alice" not in tape.read_text()
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
