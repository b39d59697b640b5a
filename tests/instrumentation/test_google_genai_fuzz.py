"""Hypothesis fuzzing of Gemini response bodies and stream chunks through the real ``google-genai`` SDK.

For each generated body (None / missing / negative / huge / wrong-typed usage fields, no candidates,
unknown fields, blocked prompts) the same bytes are served to the bare SDK and to the instrumented one:
the instrumented call returns what the bare call returns (``model_dump()``) or raises what it raises,
and costtrace records non-negative tokens or flags the usage unknown. Internal errors re-raise under
the test suite, so a costtrace bug shows up as a difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import costtrace
from costtrace.records import CallRecord
from costtrace.testing import capture
from tests.instrumentation.fake_server import FakeLLMServer

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

if tuple(int(p) for p in genai.__version__.split(".")[:2]) < (1, 8):
    pytest.skip(
        f"google-genai {genai.__version__} is below the supported 1.8: not instrumented", allow_module_level=True
    )

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

count = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=5000),
    st.integers(min_value=2**31, max_value=2**70),  # huge
    st.sampled_from(["12", "abc", 1.5, 2.0, True, [], {}]),  # wrong types: the SDK decides
)
usage_metadata = st.fixed_dictionaries(
    {},
    optional={
        "promptTokenCount": count,
        "candidatesTokenCount": count,
        "thoughtsTokenCount": count,
        "cachedContentTokenCount": count,
        "toolUsePromptTokenCount": count,
        "totalTokenCount": count,
        "trafficType": st.sampled_from(["ON_DEMAND", "PROVISIONED_THROUGHPUT"]),
    },
)
part = st.fixed_dictionaries({}, optional={"text": st.text(max_size=12), "thought": st.booleans()})
candidate = st.fixed_dictionaries(
    {},
    optional={
        "content": st.fixed_dictionaries({"role": st.just("model")}, optional={"parts": st.lists(part, max_size=3)}),
        "finishReason": st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "OTHER"]),
        "index": st.integers(min_value=0, max_value=2),
    },
)
body = st.fixed_dictionaries(
    {},
    optional={
        "candidates": st.lists(candidate, max_size=2),  # includes candidates=[]
        "usageMetadata": st.one_of(st.none(), usage_metadata),
        "modelVersion": st.sampled_from(["gemini-2.5-flash", "models/gemini-2.5-flash", "", "no-such-model"]),
        "responseId": st.text(max_size=8),
        "promptFeedback": st.just({"blockReason": "SAFETY"}),
    },
)
chunks = st.lists(body, max_size=4)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    s = FakeLLMServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server: FakeLLMServer) -> Iterator[Any]:
    c = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=server.url))
    yield c
    close = getattr(c, "close", None)
    if close is not None:
        close()


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def _dump(obj: Any) -> Any:
    data = obj.model_dump()
    data.pop("sdk_http_response", None)  # the server's Date header
    return data


def _check_records(calls: list[CallRecord]) -> None:
    for rec in calls:
        u = rec.usage
        if u.source == "unknown":
            assert rec.cost_usd is None
            continue
        for n in (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.reasoning_output_tokens):
            assert isinstance(n, int) and n >= 0
        assert u.cache_read_input_tokens <= u.input_tokens
        assert u.reasoning_output_tokens <= u.output_tokens


def _compare(script: Callable[[], None], call: Callable[[], Any]) -> None:
    script()
    bare = _outcome(call)
    costtrace.instrument("google_genai")
    try:
        script()
        with capture() as got:
            ours = _outcome(call)
    finally:
        costtrace.uninstrument("google_genai")
    assert ours == bare
    assert len(got.calls) <= 1
    _check_records(got.calls)


@FUZZ
@given(response=body)
def test_generate_content_fuzzed_bodies(server: FakeLLMServer, client: Any, response: dict[str, Any]) -> None:
    _compare(
        lambda: server.json(response),
        lambda: _dump(client.models.generate_content(model="gemini-2.5-flash", contents="hi")),
    )


@FUZZ
@given(events=chunks)
def test_generate_content_stream_fuzzed_chunks(server: FakeLLMServer, client: Any, events: list[Any]) -> None:
    _compare(
        lambda: server.sse(events),
        lambda: [_dump(c) for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")],
    )


@settings(FUZZ, max_examples=30)
@given(events=chunks)
def test_async_stream_fuzzed_chunks(server: FakeLLMServer, events: list[Any]) -> None:
    async def consume() -> list[Any]:
        c = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=server.url))
        try:
            stream = await c.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
            return [_dump(x) async for x in stream]
        finally:
            aclose = getattr(c.aio, "aclose", None)
            if aclose is not None:
                await aclose()

    _compare(lambda: server.sse(events), lambda: asyncio.run(consume()))
