"""Fuzzed OpenAI response bodies and stream chunks: the instrumented SDK behaves exactly like the bare one.

Each example scripts the same reply twice on the local server: once for the SDK's own method (the
function behind costtrace's wrapper, ``create.__wrapped__``), once for the instrumented call. Both
must return equal objects (``model_dump()``) or raise the same exception, and costtrace must record
non-negative tokens or flag the usage unknown (then the call is unpriced, never $0).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costtrace.testing import capture
from tests.instrumentation.fake_server import FakeLLMServer
from tests.instrumentation.test_openai import MSGS, chat_body, chunk, responses_body, responses_events

openai = pytest.importorskip("openai")

from costtrace.instrumentation.openai import OpenAIInstrumentor  # noqa: E402

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies -----------------------------------------------------------------------------------

count = st.one_of(
    st.none(),
    st.integers(min_value=-1000, max_value=100_000),
    st.integers(min_value=2**40, max_value=2**63 - 1),  # huge
    st.sampled_from(["12", 3.5, -0.0, True, [], {}]),  # wrong types
)
unknown = st.dictionaries(st.sampled_from(["x_new_field", "billing", "tier_info"]), st.integers(), max_size=2)


def maybe(d: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), d)


chat_usage = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": count,
            "completion_tokens": count,
            "total_tokens": count,
            "prompt_tokens_details": maybe(
                st.fixed_dictionaries({}, optional={"cached_tokens": count, "audio_tokens": count})
            ),
            "completion_tokens_details": maybe(st.fixed_dictionaries({}, optional={"reasoning_tokens": count})),
            "x_unknown": st.integers(),
        },
    )
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = chat_body()
    usage = draw(chat_usage)
    if draw(st.booleans()):
        body["usage"] = usage
    else:
        del body["usage"]
    if draw(st.booleans()):
        body["choices"] = []
    body.update(draw(unknown))
    body["service_tier"] = draw(st.sampled_from([None, "default", "priority", "flex", 7]))
    return body


@st.composite
def chat_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool]:
    n = draw(st.integers(min_value=0, max_value=4))
    events: list[dict[str, Any]] = []
    for i in range(n):
        kind = draw(st.sampled_from(["text", "empty_choices", "usage_only", "text_with_usage"]))
        if kind == "text":
            c = chunk(draw(st.text(max_size=8)), "stop" if i == n - 1 and draw(st.booleans()) else None)
        elif kind == "empty_choices":
            c = chunk(choices=[])
        elif kind == "usage_only":
            c = chunk(choices=[], usage=draw(chat_usage))
        else:
            c = chunk(draw(st.text(max_size=8)), usage=draw(chat_usage))
        c.update(draw(unknown))
        events.append(c)
    return events, draw(st.booleans())


responses_usage = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": count,
            "output_tokens": count,
            "total_tokens": count,
            "input_tokens_details": maybe(st.fixed_dictionaries({}, optional={"cached_tokens": count})),
            "output_tokens_details": maybe(st.fixed_dictionaries({}, optional={"reasoning_tokens": count})),
        },
    )
)


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    s = FakeLLMServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server: FakeLLMServer) -> Iterator[Any]:
    inst = OpenAIInstrumentor()
    # The fake server sends the scripted chunks whatever the request asks: streams are compared as
    # sent, without costtrace adding stream_options (test_openai_streams.py covers the default).
    inst.instrument(inject_stream_usage=False)
    with openai.OpenAI(api_key="test-key", base_url=server.url + "/v1", max_retries=0) as c:
        yield c
    inst.uninstrument()


def dump(obj: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic warns when serialising the wrong-typed fields we sent
        return obj.model_dump() if hasattr(obj, "model_dump") else obj


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def valid(v: Any) -> bool:
    return type(v) is int and v >= 0


def check_record(got: Any) -> Any:
    (rec,) = got.calls
    u = rec.usage
    counts = (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_write_input_tokens,
        u.reasoning_output_tokens,
    )
    assert all(type(n) is int and n >= 0 for n in counts)
    assert u.cache_read_input_tokens <= u.input_tokens and u.reasoning_output_tokens <= u.output_tokens
    if u.source == "unknown":
        assert rec.cost_usd is None  # unknown usage is unpriced, never $0
    return rec


# --- properties -----------------------------------------------------------------------------------


@FUZZ
@given(body=chat_bodies())
def test_fuzzed_chat_body_returns_what_the_sdk_returns(
    server: FakeLLMServer, client: Any, body: dict[str, Any]
) -> None:
    create = client.chat.completions.create
    server.json(body)
    bare = outcome(lambda: dump(create.__wrapped__(model="gpt-4o-mini", messages=MSGS)))
    server.json(body)
    with capture() as got:
        seen = outcome(lambda: dump(create(model="gpt-4o-mini", messages=MSGS)))
    assert seen == bare
    rec = check_record(got)
    usage = body.get("usage")
    if isinstance(usage, dict) and valid(usage.get("prompt_tokens")):
        assert rec.usage.source == "provider" and rec.usage.input_tokens == usage["prompt_tokens"]
    if not isinstance(usage, dict):
        assert rec.usage.source == "unknown"


@FUZZ
@given(stream=chat_streams())
def test_fuzzed_chat_stream_yields_what_the_sdk_yields(
    server: FakeLLMServer, client: Any, stream: tuple[list[dict[str, Any]], bool]
) -> None:
    events, done = stream
    create = client.chat.completions.create
    server.sse(events, done=done)
    bare = outcome(lambda: [dump(c) for c in create.__wrapped__(model="gpt-4o-mini", messages=MSGS, stream=True)])
    server.sse(events, done=done)
    with capture() as got:
        seen = outcome(lambda: [dump(c) for c in create(model="gpt-4o-mini", messages=MSGS, stream=True)])
    assert seen == bare
    rec = check_record(got)
    assert rec.usage.source != "unknown"  # a stream without usable usage is estimated
    usages = [e["usage"] for e in events if e.get("usage") is not None]
    if usages and isinstance(usages[-1], dict) and valid(usages[-1].get("prompt_tokens")):
        assert (
            rec.usage.source == "provider" and rec.usage.input_tokens == usages[-1]["prompt_tokens"]
        )  # the last, once


@pytest.mark.skipif(
    importlib.util.find_spec("openai.resources.responses") is None, reason="this openai version has no Responses API"
)
@FUZZ
@given(usage=responses_usage, status=st.sampled_from(["completed", "incomplete", "failed"]), extra=unknown)
def test_fuzzed_responses_body_returns_what_the_sdk_returns(
    server: FakeLLMServer, client: Any, usage: Any, status: str, extra: dict[str, Any]
) -> None:
    body = {**responses_body(usage, status=status), **extra}
    create = client.responses.create
    server.json(body)
    bare = outcome(lambda: dump(create.__wrapped__(model="o4-mini", input="hi")))
    server.json(body)
    with capture() as got:
        seen = outcome(lambda: dump(create(model="o4-mini", input="hi")))
    assert seen == bare
    rec = check_record(got)
    if isinstance(usage, dict) and valid(usage.get("input_tokens")):
        assert rec.usage.input_tokens == usage["input_tokens"]


@pytest.mark.skipif(
    importlib.util.find_spec("openai.resources.responses") is None, reason="this openai version has no Responses API"
)
@FUZZ
@given(
    usage=responses_usage,
    parts=st.lists(st.text(max_size=6), max_size=3),
    keep=st.integers(min_value=0, max_value=12),
    odd_event=st.sampled_from([None, {"type": "response.future_event", "sequence_number": 99, "x": [1]}]),
)
def test_fuzzed_responses_stream_yields_what_the_sdk_yields(
    server: FakeLLMServer, client: Any, usage: Any, parts: list[str], keep: int, odd_event: Any
) -> None:
    events = [payload for _, payload in responses_events(parts, usage)][:keep]  # maybe without the final event
    if odd_event is not None:
        events.insert(min(1, len(events)), odd_event)
    create = client.responses.create
    server.sse(events)
    bare = outcome(lambda: [dump(e) for e in create.__wrapped__(model="o4-mini", input="hi", stream=True)])
    server.sse(events)
    with capture() as got:
        seen = outcome(lambda: [dump(e) for e in create(model="o4-mini", input="hi", stream=True)])
    assert seen == bare
    rec = check_record(got)
    assert rec.usage.source != "unknown"  # a stream without usable usage is estimated
    final = [e for e in events if e.get("type") == "response.completed"]
    if final and isinstance(usage, dict) and valid(usage.get("input_tokens")):
        assert rec.usage.source == "provider" and rec.usage.input_tokens == usage["input_tokens"]
