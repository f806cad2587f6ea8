"""The codetape pytest plugin (entry point ``pytest11: codetape``).

What it gives a test:

* ``codetape`` fixture: a :class:`replay.modes.Tape` bound to this test's tape;
  ``openai_client`` / ``async_openai_client`` fixtures: an ``OpenAI`` /
  ``AsyncOpenAI`` client on that tape. Clients are closed after the test.
* The tape path is ``<rootdir>/<codetape_dir>/<test module path relative to
  rootdir, without .py>/<test name>.jsonl`` (``codetape_dir`` is an ini
  option, default ``fixtures``; characters other than letters, digits, ``.``,
  ``-`` and ``_`` in the test name become ``_``). ``@pytest.mark.codetape(tape=...)``
  overrides it; a relative path is taken from the rootdir. Where the
  ``.jsonl`` tape does not exist but ``<test name>.jsonl.zst`` does, that
  compressed tape is the test's (and a re-recording stays compressed).
* The record mode, as pytest-recording decides it: ``--codetape-mode`` given
  on the command line (or in ``addopts``) wins over everything, so CI can
  force every test, marked or not, offline with ``--codetape-mode=none``;
  else the marker's ``mode=``; else the ``codetape_mode`` ini option; else
  ``none`` (replay only, no network).
* A test that passes but leaves recorded exchanges unplayed fails, naming
  them; ``@pytest.mark.codetape(allow_unplayed=True)`` opts out.
* Recording modes send requests through the ``codetape_real_transport`` /
  ``codetape_async_real_transport`` fixtures (default ``None``: the network);
  override them in a ``conftest.py`` to record from a fake upstream.
* Other marker keywords: ``ignore_body_fields``, ``match_headers``,
  ``ignore_headers``, ``allow_repeats`` (see :class:`replay.matching.MatchOptions`),
  ``pace`` and ``speed``; ``redact_headers`` and ``redact_json_paths`` add to
  what a recording redacts (replay leaves it out of matching by itself).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The SDK and the replay machinery load only when a test asks for a fixture:
# every pytest run in an environment with codetape installed loads this module.
if TYPE_CHECKING:
    import httpx2
    from openai import AsyncOpenAI, OpenAI

    from replay.modes import RecordMode, Tape

__all__ = [
    "async_openai_client",
    "codetape",
    "codetape_async_real_transport",
    "codetape_real_transport",
    "openai_client",
    "tape_path",
]

_TAPE = pytest.StashKey["Tape"]()
_MARKER_KEYS = {
    "tape",
    "mode",
    "allow_unplayed",
    "ignore_body_fields",
    "match_headers",
    "ignore_headers",
    "allow_repeats",
    "pace",
    "speed",
    "redact_headers",
    "redact_json_paths",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("codetape", "replay recorded OpenAI sessions")
    group.addoption(
        "--codetape-mode",
        dest="codetape_mode",
        default=None,
        metavar="MODE",
        help="Record mode for codetape fixtures: none (default: replay only), once, "
        "new_episodes or all.",
    )
    parser.addini("codetape_mode", "Default record mode for codetape fixtures.", default="none")
    parser.addini(
        "codetape_dir", "Directory of tapes, relative to the rootdir.", default="fixtures"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "codetape(tape=None, mode=None, allow_unplayed=False, ignore_body_fields=(), "
        "match_headers=False, ignore_headers=None, allow_repeats=False, pace='instant', "
        "speed=1.0, redact_headers=(), redact_json_paths=()): configure the test's "
        "codetape tape.",
    )
    mode = config.getoption("codetape_mode")
    if mode is not None:
        from replay.modes import RecordMode

        try:
            RecordMode(mode)
        except ValueError as exc:
            raise pytest.UsageError(f"--codetape-mode: {exc}") from None


def _options(item: pytest.Item) -> dict[str, Any]:
    marker = item.get_closest_marker("codetape")
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(
            f"{item.nodeid}: codetape marker takes keywords only (tape=..., mode=...)"
        )
    unknown = set(marker.kwargs) - _MARKER_KEYS
    if unknown:
        raise pytest.UsageError(
            f"{item.nodeid}: unknown codetape marker keyword(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(_MARKER_KEYS))}"
        )
    return dict(marker.kwargs)


def tape_path(item: pytest.Item, tape: str | Path | None = None) -> Path:
    """Where ``item``'s tape lives (see the module docstring)."""
    root = Path(item.config.rootpath)
    if tape is not None:
        path = Path(tape)
        return path if path.is_absolute() else root / path
    module = Path(item.path)
    try:
        relative = module.relative_to(root)
    except ValueError:
        relative = Path(module.name)
    name = re.sub(r"[^\w.-]+", "_", item.name).strip("_")
    base = root / str(item.config.getini("codetape_dir"))
    plain = base / relative.with_suffix("") / f"{name}.jsonl"
    compressed = plain.with_name(plain.name + ".zst")
    return compressed if not plain.exists() and compressed.exists() else plain


def _mode(item: pytest.Item, options: dict[str, Any]) -> RecordMode:
    from replay.modes import RecordMode

    value = item.config.getoption("codetape_mode")  # given on the command line: it wins
    if value is None:
        value = options.get("mode")
    if value is None:
        value = item.config.getini("codetape_mode") or "none"
    try:
        return RecordMode(value)
    except ValueError as exc:
        raise pytest.UsageError(f"{item.nodeid}: {exc}") from None


@pytest.fixture
def codetape_real_transport() -> httpx2.BaseTransport | None:
    """The transport recording modes send requests through (``None``: the network).

    Override it in a ``conftest.py`` to record from a local fake upstream.
    """
    return None


@pytest.fixture
def codetape_async_real_transport() -> httpx2.AsyncBaseTransport | None:
    """Async twin of ``codetape_real_transport``."""
    return None


@pytest.fixture
def codetape(
    request: pytest.FixtureRequest,
    codetape_real_transport: httpx2.BaseTransport | None,
    codetape_async_real_transport: httpx2.AsyncBaseTransport | None,
) -> Iterator[Tape]:
    """The :class:`~replay.modes.Tape` of this test."""
    from replay.matching import MatchOptions
    from replay.modes import Tape

    item = request.node
    options = _options(item)
    match = MatchOptions.build(
        options.get("ignore_body_fields", ()),
        match_headers=bool(options.get("match_headers", False)),
        ignore_headers=options.get("ignore_headers"),
        allow_repeats=bool(options.get("allow_repeats", False)),
    )
    tape = Tape(
        tape_path(item, options.get("tape")),
        _mode(item, options),
        match=match,
        pace=options.get("pace", "instant"),
        speed=float(options.get("speed", 1.0)),
        name=item.nodeid,
        real=codetape_real_transport,
        async_real=codetape_async_real_transport,
        redact_headers=options.get("redact_headers", ()),
        redact_json_paths=options.get("redact_json_paths", ()),
    )
    item.stash[_TAPE] = tape
    try:
        yield tape
    finally:
        tape.close()


@pytest.fixture
def openai_client(codetape: Tape) -> OpenAI:
    """An ``OpenAI`` client bound to this test's tape."""
    return codetape.client()


@pytest.fixture
def async_openai_client(codetape: Tape) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` client bound to this test's tape.

    Replaying holds no connection, so nothing needs closing; a test that
    records through it should ``await client.close()`` itself, on its loop.
    """
    return codetape.async_client()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Checked in the call phase, so that unplayed exchanges fail the test
    # itself (not its teardown), and only when the test body passed.
    yield
    tape = item.stash.get(_TAPE, None)
    if tape is None or _options(item).get("allow_unplayed"):
        return
    left = tape.unplayed()
    if left:
        listed = "\n".join(f"  {x.describe()}" for x in left)
        pytest.fail(
            f"codetape: {len(left)} of {len(tape.recording)} recorded exchanges in {tape.path} "
            f"were never requested:\n{listed}\n"
            "(mark the test @pytest.mark.codetape(allow_unplayed=True) if that is expected)",
            pytrace=False,
        )
