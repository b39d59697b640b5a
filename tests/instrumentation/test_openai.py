"""The OpenAI instrumentation, with the real ``openai`` SDK talking HTTP to the local fake server.

Golden accounting (tokens exact, cost equal to genai-prices), streams and their usage, SDK retries,
errors, Azure, raw responses, the transparency matrix, early exits, and coexistence with the official
``opentelemetry-instrumentation-openai-v2``.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import importlib.util
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

import costtrace
from costtrace import _internal
from costtrace import semconv as sc
from costtrace.errors import ConfigError
from costtrace.price.tokens import count_tokens
from costtrace.testing import capture
from costtrace.usage import Usage

openai = pytest.importorskip("openai")

from costtrace.instrumentation import openai as ct_openai  # noqa: E402
from costtrace.instrumentation.openai import OpenAIInstrumentor  # noqa: E402

HAS_RESPONSES = importlib.util.find_spec("openai.resources.responses") is not None
needs_responses = pytest.mark.skipif(not HAS_RESPONSES, reason="this openai version has no Responses API")

MODEL = "gpt-4o-mini"
RESP_MODEL = "gpt-4o-mini-2024-07-18"
MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the team."}]
SECRET = "sk-test-secret-key-123"


# --- response bodies, shaped like the API reference's -------------------------------------------


def usage_body(
    prompt: int, completion: int, *, cached: int | None = 0, reasoning: int | None = 0, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    body.update(extra)
    return body


def chat_body(
    usage: Any = None,
    *,
    model: str = RESP_MODEL,
    content: str | None = "Hello, team!",
    finish: str = "stop",
    tool_calls: list[dict[str, Any]] | None = None,
    service_tier: str | None = "default",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage if usage is not None else usage_body(19, 10),
        "service_tier": service_tier,
        "system_fingerprint": "fp_44709d6fcb",
    }


_NO_USAGE = object()


def chunk(
    content: str | None = None,
    finish: str | None = None,
    *,
    usage: Any = _NO_USAGE,
    choices: list[dict[str, Any]] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    role: str | None = None,
    model: str = RESP_MODEL,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": model,
        "system_fingerprint": "fp_44709d6fcb",
        "service_tier": "default",
        "choices": choices
        if choices is not None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not _NO_USAGE:
        body["usage"] = usage
    return body


def chat_chunks(text_parts: list[str], *, usage: Any = None, with_usage_field: bool = False) -> list[dict[str, Any]]:
    """A stream: role chunk, content chunks, finish chunk, then (if ``usage``) the usage-only chunk."""
    field = {"usage": None} if (with_usage_field or usage is not None) else {}
    out = [chunk("", role="assistant", **field)]
    out += [chunk(p, **field) for p in text_parts]
    out.append(chunk(finish="stop", **field))
    if usage is not None:
        out.append(chunk(choices=[], usage=usage))
    return out


def responses_usage(inp: int, out: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


def responses_body(
    usage: Any = None, *, model: str = "o4-mini-2025-04-16", text: str = "Hi team.", status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if status == "completed"
        else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
        "service_tier": "default",
    }


def responses_events(parts: list[str], usage: Any, *, model: str = "o4-mini-2025-04-16") -> list[tuple[str, Any]]:
    """A Responses API event stream for one message, as the API sends it (named events)."""
    text = "".join(parts)
    created = responses_body(None, model=model, status="in_progress")
    msg_id = "msg_1"
    item = {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    done_part = {"type": "output_text", "text": text, "annotations": []}
    done_item = {**item, "status": "completed", "content": [done_part]}
    seq = iter(range(1000))
    events: list[tuple[str, Any]] = [
        ("response.created", {"type": "response.created", "sequence_number": next(seq), "response": created}),
        ("response.in_progress", {"type": "response.in_progress", "sequence_number": next(seq), "response": created}),
        (
            "response.output_item.added",
            {"type": "response.output_item.added", "sequence_number": next(seq), "output_index": 0, "item": item},
        ),
        (
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "sequence_number": next(seq),
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ),
    ]
    for p in parts:
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": next(seq),
                    "item_id": msg_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": p,
                    "logprobs": [],
                },
            )
        )
    events += [
        (
            "response.output_text.done",
            {
                "type": "response.output_text.done",
                "sequence_number": next(seq),
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
        ),
        (
            "response.content_part.done",
            {
                "type": "response.content_part.done",
                "sequence_number": next(seq),
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "part": done_part,
            },
        ),
        (
            "response.output_item.done",
            {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0, "item": done_item},
        ),
    ]
    final = responses_body(usage, model=model, text=text)
    events.append(
        ("response.completed", {"type": "response.completed", "sequence_number": next(seq), "response": final})
    )
    return events


def embeddings_body(prompt_tokens: int = 8) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.015797347]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


ERROR_400 = {
    "error": {
        "message": "Invalid value for 'temperature'.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": None,
    }
}


# --- fixtures and helpers -------------------------------------------------------------------------


def ref_price(model: str, provider: str = "openai", **usage: int) -> Decimal:
    return calc_price(GPUsage(**usage), model, provider_id=provider).total_price


def make_client(server: Any, *, retries: int = 0, is_async: bool = False) -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(api_key=SECRET, base_url=server.url + "/v1", max_retries=retries)


@pytest.fixture
def instrumented() -> Iterator[OpenAIInstrumentor]:
    inst = OpenAIInstrumentor()
    inst.instrument()
    yield inst
    inst.uninstrument()


@pytest.fixture
def injecting() -> Iterator[OpenAIInstrumentor]:
    inst = OpenAIInstrumentor()
    inst.instrument(inject_stream_usage=True)
    yield inst
    inst.uninstrument()


@pytest.fixture
def not_injecting() -> Iterator[OpenAIInstrumentor]:
    inst = OpenAIInstrumentor()
    inst.instrument(inject_stream_usage=False)
    yield inst
    inst.uninstrument()


@pytest.fixture
def client(llm_server: Any) -> Iterator[Any]:
    with make_client(llm_server) as c:
        yield c


class OpenSpans(SpanProcessor):
    """Counts costtrace call spans started and not yet ended: a leaked span stays counted."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self._lock = threading.Lock()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.instrumentation_scope.name == "costtrace" and span.kind is SpanKind.CLIENT:
            with self._lock:
                self.open.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.open.discard(span.context.span_id)


_open_spans = OpenSpans()
trace.get_tracer_provider().add_span_processor(_open_spans)  # type: ignore[attr-defined]


@pytest.fixture
def open_spans() -> Iterator[OpenSpans]:
    _open_spans.open.clear()
    yield _open_spans


def call_attrs(spans: Any) -> dict[str, Any]:
    (span,) = spans.calls()
    return dict(span.attributes)


def chat_parse_api(c: Any) -> Any:
    """``chat.completions.parse`` (openai >= 1.9x) or ``beta.chat.completions.parse`` (older)."""
    return c.chat.completions if hasattr(c.chat.completions, "parse") else c.beta.chat.completions


def assert_no_secret(spans: Any) -> None:
    for span in spans.all():
        for value in (span.attributes or {}).values():
            assert SECRET not in str(value)
        for event in span.events:
            assert SECRET not in str(event.attributes)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- instrumenting --------------------------------------------------------------------------------


def test_instrument_twice_is_a_noop_and_uninstrument_restores_originals() -> None:
    from openai.resources.chat.completions import AsyncCompletions, Completions

    originals = (Completions.__dict__["create"], AsyncCompletions.__dict__["create"])
    inst = OpenAIInstrumentor()
    inst.instrument()
    inst.instrument()
    try:
        wrapper = Completions.__dict__["create"]
        assert wrapper is not originals[0]
        assert wrapper.__wrapped__ is originals[0]  # one layer, not two
    finally:
        inst.uninstrument()
    assert (Completions.__dict__["create"], AsyncCompletions.__dict__["create"]) == originals


def test_costtrace_instrument_passes_options(llm_server: Any) -> None:
    try:
        assert costtrace.instrument("openai", inject_stream_usage=True) == ["openai"]
        assert ct_openai._settings.inject_stream_usage is True
    finally:
        costtrace.uninstrument("openai")


def test_bad_option_raises_config_error_and_patches_nothing() -> None:
    from openai.resources.chat.completions import Completions

    original = Completions.__dict__["create"]
    with pytest.raises(ConfigError, match="inject_stream_usage"):
        OpenAIInstrumentor().instrument(inject_stream_usage="yes")
    assert Completions.__dict__["create"] is original
    assert not OpenAIInstrumentor().is_instrumented_by_opentelemetry


def test_inject_option_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in (("true", True), ("0", False), ("off", False), ("", True)):
        monkeypatch.setenv(ct_openai.INJECT_STREAM_USAGE_ENV_VAR, raw)
        inst = OpenAIInstrumentor()
        inst.instrument()
        try:
            assert ct_openai._settings.inject_stream_usage is expected, raw
        finally:
            inst.uninstrument()


def test_inject_stream_usage_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ct_openai.INJECT_STREAM_USAGE_ENV_VAR, raising=False)
    inst = OpenAIInstrumentor()
    inst.instrument()
    try:
        assert ct_openai._settings.inject_stream_usage is True
    finally:
        inst.uninstrument()
    monkeypatch.setenv(ct_openai.INJECT_STREAM_USAGE_ENV_VAR, "maybe")
    with pytest.raises(ConfigError, match=ct_openai.INJECT_STREAM_USAGE_ENV_VAR):
        OpenAIInstrumentor().instrument()


# --- golden accounting: chat completions ----------------------------------------------------------


def test_chat_plain_tokens_cost_and_span_exact(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(1200, 150)))
    with capture() as got, costtrace.task("greet"):
        resp = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=256, temperature=0.2)
    assert resp.choices[0].message.content == "Hello, team!"
    (rec,) = got.calls
    assert rec.usage == Usage(1200, 150, source="provider")
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=1200, output_tokens=150)
    a = call_attrs(spans)
    assert a[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert a[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert a[sc.GEN_AI_RESPONSE_MODEL] == RESP_MODEL
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert a["gen_ai.request.temperature"] == 0.2
    assert a[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert a[sc.SERVER_PORT] == int(llm_server.url.rsplit(":", 1)[1])
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[sc.GEN_AI_RESPONSE_ID] == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert a["openai.api.type"] == "chat_completions"
    assert a[sc.USAGE_SOURCE] == "provider"
    assert sc.GEN_AI_REQUEST_STREAM not in a
    assert a[sc.TASK_NAME] == "greet"
    assert spans.one_task("greet").attributes[sc.TASK_COST_USD] == float(rec.cost_usd)
    assert_no_secret(spans)


def test_chat_cached_prompt_tokens_priced_as_cache_reads(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    llm_server.json(chat_body(usage_body(2048, 100, cached=1536)))
    with capture() as got:
        client.chat.completions.create(model=MODEL, messages=MSGS)
    (rec,) = got.calls
    assert rec.usage == Usage(2048, 100, cache_read_input_tokens=1536)
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=2048, cache_read_tokens=1536, output_tokens=100)
    assert call_attrs(spans)[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1536


def test_chat_reasoning_tokens_are_output_tokens(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(300, 900, reasoning=704), model="o4-mini-2025-04-16"))
    with capture() as got:
        # max_completion_tokens (openai >= 1.45) is the o-series' limit; older SDKs only have max_tokens
        import inspect

        params = inspect.signature(client.chat.completions.create).parameters
        key = "max_completion_tokens" if "max_completion_tokens" in params else "max_tokens"
        client.chat.completions.create(model="o4-mini", messages=MSGS, **{key: 2000})
    (rec,) = got.calls
    assert rec.usage == Usage(300, 900, reasoning_output_tokens=704)
    assert rec.cost_usd == ref_price("o4-mini-2025-04-16", input_tokens=300, output_tokens=900)
    a = call_attrs(spans)
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 704
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 2000


TOOL_CALL = {
    "id": "call_abc123",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
}


def test_chat_tool_calls(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(82, 17), content=None, finish="tool_calls", tool_calls=[TOOL_CALL]))
    with capture() as got:
        resp = client.chat.completions.create(
            model=MODEL,
            messages=MSGS,
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        )
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    (rec,) = got.calls
    assert rec.usage == Usage(82, 17)
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=82, output_tokens=17)
    assert call_attrs(spans)[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)


def test_chat_stream_without_usage_is_estimated_from_request_and_text(
    llm_server: Any, not_injecting: Any, client: Any, spans: Any
) -> None:
    llm_server.sse(chat_chunks(["Hello", ", team", "!"]), done=True)
    with capture() as got:
        stream = client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "Hello, team!"
    (rec,) = got.calls
    n_in, n_out = count_tokens(MSGS, RESP_MODEL), count_tokens(text, RESP_MODEL)
    assert rec.usage == Usage(int(n_in), int(n_out), source=n_in.source)
    assert rec.usage.source == "estimated"
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=int(n_in), output_tokens=int(n_out))
    a = call_attrs(spans)
    assert a[sc.USAGE_SOURCE] == "estimated"
    assert a[sc.GEN_AI_REQUEST_STREAM] is True
    assert sc.CALL_INCOMPLETE not in a
    assert "stream_options" not in llm_server.requests[0].body  # not injected when turned off


def test_chat_stream_with_user_include_usage_counted_once_and_visible(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    llm_server.sse(chat_chunks(["Hello", "!"], usage=usage_body(40, 3, cached=0)), done=True)
    with capture() as got:
        stream = client.chat.completions.create(
            model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 40  # the user asked: they see it
    (rec,) = got.calls
    assert rec.usage == Usage(40, 3)
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=40, output_tokens=3)


def test_inject_stream_usage_adds_option_and_hides_the_usage_chunk(
    llm_server: Any, injecting: Any, client: Any, spans: Any
) -> None:
    llm_server.sse(chat_chunks(["Hello", "!"], usage=usage_body(40, 3)), done=True)
    user_options: dict[str, Any] = {}
    with capture() as got:
        chunks = list(
            client.chat.completions.create(model=MODEL, messages=MSGS, stream=True, stream_options=user_options)
        )
    assert llm_server.requests[0].body["stream_options"] == {"include_usage": True}
    assert user_options == {}  # the caller's dict is not modified
    assert all(c.choices for c in chunks)  # code reading chunk.choices[0] keeps working
    assert len(chunks) == 4
    (rec,) = got.calls
    assert rec.usage == Usage(40, 3, source="provider")


def test_inject_stream_usage_keeps_a_usage_chunk_the_user_asked_for(
    llm_server: Any, injecting: Any, client: Any
) -> None:
    llm_server.sse(chat_chunks(["Hi"], usage=usage_body(40, 1)), done=True)
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_inject_stream_usage_respects_an_explicit_false(llm_server: Any, injecting: Any, client: Any) -> None:
    llm_server.sse(chat_chunks(["Hi"]), done=True)
    list(
        client.chat.completions.create(model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": False})
    )
    assert llm_server.requests[0].body["stream_options"] == {"include_usage": False}


def test_streamed_and_non_streamed_calls_with_equal_usage_cost_the_same(
    llm_server: Any, instrumented: Any, client: Any
) -> None:
    usage = usage_body(5000, 700, cached=4096, reasoning=0)
    llm_server.json(chat_body(usage))
    llm_server.sse(chat_chunks(["a", "b"], usage=usage), done=True)
    with capture() as got:
        client.chat.completions.create(model=MODEL, messages=MSGS)
        list(
            client.chat.completions.create(
                model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True}
            )
        )
    plain, streamed = got.calls
    assert plain.usage == streamed.usage
    assert (
        plain.cost_usd
        == streamed.cost_usd
        == ref_price(RESP_MODEL, input_tokens=5000, cache_read_tokens=4096, output_tokens=700)
    )


def test_stream_tool_call_deltas_feed_the_estimate(llm_server: Any, instrumented: Any, client: Any) -> None:
    tc = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]
    args = [
        {"index": 0, "function": {"arguments": '{"location": '}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
    llm_server.sse(
        [
            chunk(role="assistant", tool_calls=tc),
            chunk(tool_calls=[args[0]]),
            chunk(tool_calls=[args[1]]),
            chunk(finish="tool_calls"),
        ],
        done=True,
    )
    with capture() as got:
        list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True))
    (rec,) = got.calls
    assert rec.usage.output_tokens == count_tokens('get_weather{"location": "Paris"}', RESP_MODEL)


def test_service_tier_served_prices_the_call(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(1000, 200), service_tier="priority"))
    with capture() as got:
        client.chat.completions.create(model=MODEL, messages=MSGS, service_tier="auto")
    (rec,) = got.calls
    expected = costtrace.record_llm_call("openai", RESP_MODEL, 1000, 200, service_tier="priority")
    default = costtrace.record_llm_call("openai", RESP_MODEL, 1000, 200)
    assert expected is not None and default is not None
    assert rec.cost_usd == expected.cost_usd != default.cost_usd
    a = dict(spans.calls()[0].attributes)
    assert a["openai.request.service_tier"] == "auto"
    assert a["openai.response.service_tier"] == "priority"


def test_chat_parse_structured_output(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: str

    llm_server.json(chat_body(usage_body(60, 8), content='{"answer": "42"}'))
    with capture() as got:
        resp = chat_parse_api(client).parse(model=MODEL, messages=MSGS, response_format=Answer)
    assert resp.choices[0].message.parsed == Answer(answer="42")
    (rec,) = got.calls  # parse calling create (older SDKs) is still one call
    assert rec.usage == Usage(60, 8)
    assert len(spans.calls()) == 1


def test_chat_stream_helper_final_completion_and_early_exit(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans
) -> None:
    api = chat_parse_api(client)
    llm_server.sse(chat_chunks(["Hel", "lo"], usage=usage_body(30, 2)), done=True)
    with capture() as got:
        with api.stream(model=MODEL, messages=MSGS, stream_options={"include_usage": True}) as s:
            for _ in s:
                pass
            final = s.get_final_completion()
    assert final.choices[0].message.content == "Hello"
    assert got.calls[0].usage == Usage(30, 2)
    llm_server.sse(chat_chunks(["Hel", "lo", "!"]), done=True)
    with api.stream(model=MODEL, messages=MSGS) as s:
        for _ in s:
            break
    # ended by leaving the with block, not by the garbage collector
    assert len(spans.calls()) == 2 and not open_spans.open
    assert spans.calls()[1].attributes[sc.CALL_INCOMPLETE] is True


# --- retries and errors -----------------------------------------------------------------------------


def test_sdk_retry_then_success_is_one_call_with_resend_count(llm_server: Any, instrumented: Any, spans: Any) -> None:
    rate_limited = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    llm_server.json(rate_limited, 429, {"retry-after-ms": "1"})
    llm_server.json({"error": {"message": "overloaded", "type": "server_error"}}, 503, {"retry-after-ms": "1"})
    llm_server.json(chat_body(usage_body(100, 20)))
    with capture() as got, make_client(llm_server, retries=2) as c, costtrace.task("retrying"):
        c.chat.completions.create(model=MODEL, messages=MSGS)
    assert len(llm_server.requests) == 3
    (rec,) = got.calls
    assert rec.error_type is None and rec.usage == Usage(100, 20)
    assert call_attrs(spans)[sc.HTTP_REQUEST_RESEND_COUNT] == 2
    events = [e for e in spans.one_task("retrying").events if e.name == sc.EVENT_SDK_RETRY]
    assert [e.attributes[sc.EVENT_ATTR_REASON] for e in events] in (
        ["rate_limit", "server_error"],  # openai >= 1.6x (_sleep_for_retry sees the response)
        ["http_error", "http_error"],  # older (_retry_request sees only the headers)
    )
    assert got.tasks[0].attempts == 1  # SDK re-sends are not task retries


def test_async_sdk_retry_is_counted(llm_server: Any, instrumented: Any, spans: Any) -> None:
    llm_server.json({"error": {"message": "Rate limit reached"}}, 429, {"retry-after-ms": "1"})
    llm_server.json(chat_body())

    async def main() -> None:
        async with make_client(llm_server, retries=1, is_async=True) as c:
            await c.chat.completions.create(model=MODEL, messages=MSGS)

    run(main())
    assert call_attrs(spans)[sc.HTTP_REQUEST_RESEND_COUNT] == 1


def test_error_reply_is_a_failed_call_with_unknown_usage(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    llm_server.json(ERROR_400, 400)
    with capture() as got, pytest.raises(openai.BadRequestError), costtrace.task("t"):
        client.chat.completions.create(model=MODEL, messages=MSGS, temperature=9)
    (span,) = spans.calls()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == "BadRequestError"
    assert span.attributes[sc.USAGE_SOURCE] == "unknown"
    assert span.attributes[sc.CALL_PRICED] is False
    (rec,) = got.calls
    assert rec.error_type == "BadRequestError" and rec.cost_usd is None
    assert got.tasks[0].failed_calls == 1


def test_sdk_retries_exhausted_is_one_failed_call(llm_server: Any, instrumented: Any, spans: Any) -> None:
    for _ in range(2):
        llm_server.json({"error": {"message": "overloaded"}}, 500, {"retry-after-ms": "1"})
    with make_client(llm_server, retries=1) as c, pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model=MODEL, messages=MSGS)
    (span,) = spans.calls()
    assert span.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 1
    assert span.attributes[sc.ERROR_TYPE] == "InternalServerError"


# --- Responses API and embeddings -----------------------------------------------------------------


@needs_responses
def test_responses_create_exact(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.json(responses_body(responses_usage(1000, 300, cached=600, reasoning=200)))
    with capture() as got:
        resp = client.responses.create(model="o4-mini", input="Say hi", max_output_tokens=500)
    assert resp.output_text == "Hi team."
    (rec,) = got.calls
    assert rec.usage == Usage(1000, 300, cache_read_input_tokens=600, reasoning_output_tokens=200)
    assert rec.cost_usd == ref_price("o4-mini-2025-04-16", input_tokens=1000, cache_read_tokens=600, output_tokens=300)
    a = call_attrs(spans)
    assert a["openai.api.type"] == "responses"
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 500
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("completed",)


@needs_responses
def test_responses_stream_usage_from_completed_event(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    usage = responses_usage(1000, 300, cached=600, reasoning=200)
    llm_server.json(responses_body(usage))
    llm_server.sse(responses_events(["Hi", " team."], usage), named=True)
    with capture() as got:
        client.responses.create(model="o4-mini", input="Say hi")
        events = list(client.responses.create(model="o4-mini", input="Say hi", stream=True))
    assert events[-1].type == "response.completed"
    plain, streamed = got.calls
    assert streamed.usage == plain.usage
    assert streamed.cost_usd == plain.cost_usd


@needs_responses
def test_responses_stream_helper(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans
) -> None:
    usage = responses_usage(50, 4)
    llm_server.sse(responses_events(["Hi", " team."], usage), named=True)
    with capture() as got:
        with client.responses.stream(model="o4-mini", input="Say hi") as s:
            deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
            final = s.get_final_response()
    assert deltas == ["Hi", " team."] and final.output_text == "Hi team."
    (rec,) = got.calls
    assert rec.usage == Usage(50, 4)
    llm_server.sse(responses_events(["Hi", " team."], usage), named=True)
    with client.responses.stream(model="o4-mini", input="Say hi") as s:
        for _ in s:
            break
    assert len(spans.calls()) == 2 and not open_spans.open
    assert spans.calls()[1].attributes[sc.CALL_INCOMPLETE] is True


@needs_responses
def test_async_responses_stream_helper(llm_server: Any, instrumented: Any, spans: Any) -> None:
    llm_server.sse(responses_events(["Hi"], responses_usage(50, 4)), named=True)

    async def main() -> Any:
        async with make_client(llm_server, is_async=True) as c:
            async with c.responses.stream(model="o4-mini", input="Say hi") as s:
                async for _ in s:
                    pass
                return await s.get_final_response()

    with capture() as got:
        final = run(main())
    assert final.output_text == "Hi"
    assert got.calls[0].usage == Usage(50, 4)


@needs_responses
def test_responses_parse(llm_server: Any, instrumented: Any, client: Any) -> None:
    from pydantic import BaseModel

    if not hasattr(client.responses, "parse"):
        pytest.skip("this openai version has no responses.parse")

    class Answer(BaseModel):
        answer: str

    llm_server.json(responses_body(responses_usage(70, 9), text='{"answer": "42"}'))
    with capture() as got:
        resp = client.responses.parse(model="o4-mini", input="?", text_format=Answer)
    assert resp.output_parsed == Answer(answer="42")
    assert got.calls[0].usage == Usage(70, 9)


def test_embeddings(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.json(embeddings_body(8))
    with capture() as got:
        client.embeddings.create(model="text-embedding-3-small", input="The food was delicious")
    (rec,) = got.calls
    assert rec.operation == "embeddings"
    assert rec.usage == Usage(8, 0)
    assert rec.cost_usd == ref_price("text-embedding-3-small", input_tokens=8)
    assert spans.calls()[0].name == "embeddings text-embedding-3-small"


def test_async_embeddings(llm_server: Any, instrumented: Any) -> None:
    llm_server.json(embeddings_body(12))

    async def main() -> None:
        async with make_client(llm_server, is_async=True) as c:
            await c.embeddings.create(model="text-embedding-3-small", input=["a", "b"])

    with capture() as got:
        run(main())
    assert got.calls[0].usage == Usage(12, 0)


# --- Azure ------------------------------------------------------------------------------------------


def test_azure_client_provider_deployment_and_price(llm_server: Any, instrumented: Any, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(500, 50), model=RESP_MODEL))
    with (
        capture() as got,
        openai.AzureOpenAI(api_key=SECRET, api_version="2024-10-21", azure_endpoint=llm_server.url, max_retries=0) as c,
    ):
        c.chat.completions.create(model="my-mini-deployment", messages=MSGS)
    assert "/openai/deployments/my-mini-deployment/" in llm_server.requests[0].path
    (rec,) = got.calls
    assert rec.provider == "azure.ai.openai"
    assert rec.request_model == "my-mini-deployment" and rec.response_model == RESP_MODEL
    assert rec.cost_usd == ref_price(RESP_MODEL, "azure", input_tokens=500, output_tokens=50)
    a = call_attrs(spans)
    assert a[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert a[sc.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert_no_secret(spans)


def test_azure_reply_without_usage_is_unknown_not_zero(llm_server: Any, instrumented: Any, spans: Any) -> None:
    body = chat_body()
    body["usage"] = None
    llm_server.json(body)
    with (
        capture() as got,
        openai.AzureOpenAI(api_key=SECRET, api_version="2024-10-21", azure_endpoint=llm_server.url, max_retries=0) as c,
    ):
        c.chat.completions.create(model="dep", messages=MSGS)
    (rec,) = got.calls
    assert rec.usage.source == "unknown" and rec.cost_usd is None


def test_provider_from_base_url_host() -> None:
    from types import SimpleNamespace
    from urllib.parse import urlsplit

    for url, provider in (
        ("https://api.openai.com/v1", "openai"),
        ("https://my-res.openai.azure.com/openai", "azure.ai.openai"),
        ("https://api.deepseek.com", "deepseek"),
        ("https://api.groq.com/openai/v1", "groq"),
    ):
        parts = urlsplit(url)  # the shape of the SDK's httpx URL: host, port (None if default), scheme
        client = SimpleNamespace(base_url=SimpleNamespace(host=parts.hostname, port=parts.port, scheme=parts.scheme))
        got = ct_openai._endpoint(client)
        assert got[0] == provider
        assert got[2] == 443


# --- raw responses ----------------------------------------------------------------------------------


def test_with_raw_response_usage_read_once_and_parse_unchanged(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    llm_server.json(chat_body(usage_body(77, 7)), headers={"x-request-id": "req_123"})
    with capture() as got:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS)
    assert type(raw) is openai._legacy_response.LegacyAPIResponse
    assert raw.headers["x-request-id"] == "req_123"
    first = raw.parse()
    assert raw.parse() is first  # the SDK's cache: parsed once, by whoever came first
    assert first.usage.prompt_tokens == 77
    assert got.calls[0].usage == Usage(77, 7)


def test_with_raw_response_stream(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    llm_server.sse(chat_chunks(["a", "b"], usage=usage_body(20, 2)), done=True)
    with capture() as got:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
        assert raw.headers["content-type"] == "text/event-stream"
        stream = raw.parse()
        assert isinstance(stream, openai.Stream)
        chunks = list(stream)
        assert len(chunks) == 5 and chunks[-1].usage.prompt_tokens == 20
    assert got.calls[0].usage == Usage(20, 2)


def test_with_streaming_response_json_body_is_read_for_usage(llm_server: Any, instrumented: Any, client: Any) -> None:
    llm_server.json(chat_body())
    with capture() as got:
        with client.chat.completions.with_streaming_response.create(model=MODEL, messages=MSGS) as resp:
            assert resp.parse().choices[0].message.content == "Hello, team!"
    (rec,) = got.calls
    assert rec.usage == Usage(19, 10)
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=19, output_tokens=10)


def test_with_streaming_response_never_read_is_unpriced_with_a_reason(
    llm_server: Any, instrumented: Any, client: Any
) -> None:
    llm_server.json(chat_body())
    with capture() as got:
        with client.chat.completions.with_streaming_response.create(model=MODEL, messages=MSGS):
            pass
    (rec,) = got.calls
    assert rec.usage.source == "unknown" and rec.cost_usd is None
    assert "never read" in str(rec.cost.unpriced_reason)


# --- transparency matrix --------------------------------------------------------------------------


def _script(server: Any, stream: bool) -> None:
    if stream:
        server.sse(chat_chunks(["Hel", "lo"], usage=usage_body(10, 2)), done=True)
    else:
        server.json(chat_body(usage_body(10, 2)), headers={"x-request-id": "req_1"})


def _observe_sync(server: Any, *, stream: bool, raw: bool, ctx: bool) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with make_client(server) as c:
        api = c.chat.completions.with_raw_response if raw else c.chat.completions
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        out = api.create(model=MODEL, messages=MSGS, stream=stream, **kwargs)
        seen["type"] = type(out)
        if raw:
            seen["headers"] = {k: v for k, v in out.headers.items() if k != "date"}
            seen["status"] = out.status_code
            out = out.parse()
        if stream:
            seen["is_stream"] = isinstance(out, openai.Stream)
            seen["response_status"] = out.response.status_code
            if ctx:
                with out as s:
                    seen["items"] = [x.model_dump() for x in s]
            else:
                seen["items"] = [x.model_dump() for x in out]
                out.close()
        else:
            seen["body_type"] = type(out)
            seen["body"] = out.model_dump()
    return seen


async def _observe_async(server: Any, *, stream: bool, raw: bool, ctx: bool) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with make_client(server, is_async=True) as c:
        api = c.chat.completions.with_raw_response if raw else c.chat.completions
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        out = await api.create(model=MODEL, messages=MSGS, stream=stream, **kwargs)
        seen["type"] = type(out)
        if raw:
            seen["headers"] = {k: v for k, v in out.headers.items() if k != "date"}
            seen["status"] = out.status_code
            out = out.parse()
        if stream:
            seen["is_stream"] = isinstance(out, openai.AsyncStream)
            seen["response_status"] = out.response.status_code
            if ctx:
                async with out as s:
                    seen["items"] = [x.model_dump() async for x in s]
            else:
                seen["items"] = [x.model_dump() async for x in out]
                await out.close()
        else:
            seen["body_type"] = type(out)
            seen["body"] = out.model_dump()
    return seen


def _observe(server: Any, *, is_async: bool, stream: bool, raw: bool, ctx: bool) -> dict[str, Any]:
    if is_async:
        return run(_observe_async(server, stream=stream, raw=raw, ctx=ctx))
    return _observe_sync(server, stream=stream, raw=raw, ctx=ctx)


MATRIX = [
    (is_async, stream, raw, ctx)
    for is_async in (False, True)
    for stream in (False, True)
    for raw in (False, True)
    for ctx in ((False, True) if stream else (False,))
]


@pytest.mark.parametrize(("is_async", "stream", "raw", "ctx"), MATRIX)
def test_transparency_matrix(
    llm_server: Any, spans: Any, open_spans: OpenSpans, is_async: bool, stream: bool, raw: bool, ctx: bool
) -> None:
    _script(llm_server, stream)
    bare = _observe(llm_server, is_async=is_async, stream=stream, raw=raw, ctx=ctx)
    inst = OpenAIInstrumentor()
    inst.instrument()
    try:
        _script(llm_server, stream)
        with capture() as got:
            seen = _observe(llm_server, is_async=is_async, stream=stream, raw=raw, ctx=ctx)
    finally:
        inst.uninstrument()
    if stream and not raw:
        # a stream comes back behind a transparent proxy: isinstance holds, type() is the proxy's
        assert isinstance(seen.pop("type"), type) and bare.pop("type") in (openai.Stream, openai.AsyncStream)
    assert seen == bare
    (rec,) = got.calls
    assert rec.usage == Usage(10, 2)
    assert len(spans.calls()) == 1 and not open_spans.open


def _raise_sync(server: Any, exc_holder: list[BaseException], base_url: str | None = None) -> None:
    with openai.OpenAI(api_key=SECRET, base_url=base_url or server.url + "/v1", max_retries=0) as c:
        try:
            c.chat.completions.create(model=MODEL, messages=MSGS)
        except Exception as exc:
            exc_holder.append(exc)


def _describe(exc: BaseException) -> tuple[Any, ...]:
    cause = exc.__cause__
    return (type(exc), str(exc), type(cause), str(cause) if cause is not None else None, exc.__suppress_context__)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, ERROR_400),
        (401, {"error": {"message": "Incorrect API key provided"}}),
        (404, {"error": {"message": "no"}}),
        (500, {"error": {"message": "boom"}}),
    ],
)
def test_exceptions_are_the_sdks_own(llm_server: Any, spans: Any, status: int, body: Any) -> None:
    bare: list[BaseException] = []
    got: list[BaseException] = []
    llm_server.json(body, status)
    _raise_sync(llm_server, bare)
    inst = OpenAIInstrumentor()
    inst.instrument()
    try:
        llm_server.json(body, status)
        _raise_sync(llm_server, got)
    finally:
        inst.uninstrument()
    assert _describe(got[0]) == _describe(bare[0])
    assert got[0].body == bare[0].body  # type: ignore[attr-defined]
    assert spans.calls()[0].attributes[sc.ERROR_TYPE] == type(bare[0]).__qualname__


def test_connection_error_is_the_sdks_own(spans: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"http://127.0.0.1:{port}/v1"
    bare: list[BaseException] = []
    got: list[BaseException] = []
    _raise_sync(None, bare, url)
    inst = OpenAIInstrumentor()
    inst.instrument()
    try:
        _raise_sync(None, got, url)
    finally:
        inst.uninstrument()
    assert _describe(got[0]) == _describe(bare[0])
    assert spans.calls()[0].attributes[sc.ERROR_TYPE] == "APIConnectionError"


def test_error_event_mid_stream_raises_the_sdk_error(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    llm_server.sse([chunk("", role="assistant"), chunk("Hel"), {"error": {"message": "The server had an error"}}])
    stream = client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    with pytest.raises(openai.APIError, match="The server had an error"):
        for _ in stream:
            pass
    a = call_attrs(spans)
    assert a[sc.ERROR_TYPE] == "APIError"
    assert a[sc.CALL_INCOMPLETE] is True
    assert a[sc.USAGE_SOURCE] == "estimated"


# --- costtrace's own errors never reach the app -----------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("costtrace bug")


def test_user_exception_in_with_stream_wins_over_costtrace_error(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(ct_openai._ChatStream, "finish", _boom)
    llm_server.sse(chat_chunks(["Hel", "lo"]), done=True)
    with pytest.raises(ValueError, match="user's own") as info:
        with client.chat.completions.create(model=MODEL, messages=MSGS, stream=True) as s:
            next(iter(s))
            raise ValueError("user's own")
    assert info.value.__cause__ is None
    assert len(spans.calls()) == 1  # the call still ended
    assert _internal.internal_error_counts()["instrumentation.stream.finish"] == 1


@pytest.mark.parametrize("where", ["_begin", "_on_result", "on_item"])
def test_costtrace_failure_leaves_the_call_untouched(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    if where == "on_item":
        monkeypatch.setattr(ct_openai._ChatStream, "on_item", _boom)
    else:
        monkeypatch.setattr(ct_openai, where, _boom)
    llm_server.json(chat_body())
    llm_server.sse(chat_chunks(["Hel", "lo"]), done=True)
    resp = client.chat.completions.create(model=MODEL, messages=MSGS)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, stream=True))
    assert resp.choices[0].message.content == "Hello, team!"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"
    assert sum(_internal.internal_error_counts().values()) >= 1
    if where != "_begin":
        assert len(spans.calls()) == 2  # every started call ended


# --- early exits --------------------------------------------------------------------------------------


def _assert_one_incomplete_call(spans: Any, open_spans: OpenSpans, *, error: str | None = None) -> dict[str, Any]:
    gc.collect()
    a = call_attrs(spans)
    assert a[sc.CALL_INCOMPLETE] is True
    assert a[sc.USAGE_SOURCE] == "estimated"
    assert a.get(sc.ERROR_TYPE) == error
    assert not open_spans.open
    return a


def test_break_after_first_chunk_then_drop(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans
) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo", "!"]), done=True)
    stream = client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    for first in stream:
        break
    assert first.choices[0].delta.role == "assistant"
    del stream, first
    _assert_one_incomplete_call(spans, open_spans)


def test_drop_unread_stream(llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo"]), done=True)
    client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    a = _assert_one_incomplete_call(spans, open_spans)
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 0  # nothing was read; input is still estimated
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == count_tokens(MSGS, MODEL)


def test_break_inside_with_ends_at_exit(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans
) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo"]), done=True)
    with client.chat.completions.create(model=MODEL, messages=MSGS, stream=True) as s:
        for _ in s:
            break
        assert spans.calls() == []
    assert len(spans.calls()) == 1
    _assert_one_incomplete_call(spans, open_spans)


def test_close_mid_stream(llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo"]), done=True)
    s = client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    next(s)
    next(s)
    s.close()
    a = _assert_one_incomplete_call(spans, open_spans)
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == count_tokens("Hel", RESP_MODEL)


def test_async_break_and_drop(llm_server: Any, instrumented: Any, spans: Any, open_spans: OpenSpans) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo"]), done=True)

    async def main() -> None:
        async with make_client(llm_server, is_async=True) as c:
            stream = await c.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
            async for _ in stream:
                break
            await stream.close()

    run(main())
    _assert_one_incomplete_call(spans, open_spans)


def test_cancelled_task_mid_stream(llm_server: Any, instrumented: Any, spans: Any, open_spans: OpenSpans) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo", "!"]), done=True, stall_after=2)

    async def main() -> None:
        async with make_client(llm_server, is_async=True) as c:
            got_first = asyncio.Event()

            async def consume() -> None:
                stream = await c.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
                async for _ in stream:
                    got_first.set()

            task = asyncio.create_task(consume())
            await got_first.wait()
            await asyncio.sleep(0)  # let it block in the stalled stream
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            llm_server.release()

    run(main())
    _assert_one_incomplete_call(spans, open_spans, error="CancelledError")


def test_server_cuts_the_stream(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans
) -> None:
    llm_server.sse(chat_chunks(["Hel", "lo", "!"], usage=usage_body(10, 3)), done=True, cut_after=3)
    text = ""
    try:
        for c in client.chat.completions.create(
            model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True}
        ):
            text += c.choices[0].delta.content or ""
    except openai.APIConnectionError:
        pass  # depending on the SDK version a cut shows as an error or as an early end
    a = _assert_one_incomplete_call(spans, open_spans, error=spans.calls()[0].attributes.get(sc.ERROR_TYPE))
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == count_tokens(text, RESP_MODEL)


@needs_responses
def test_responses_stream_cut(
    llm_server: Any, instrumented: Any, client: Any, spans: Any, open_spans: OpenSpans
) -> None:
    llm_server.sse(responses_events(["Hi", " there"], responses_usage(10, 2)), named=True, cut_after=5)
    try:
        list(client.responses.create(model="o4-mini", input="Say hi", stream=True))
    except openai.APIConnectionError:
        pass
    a = _assert_one_incomplete_call(spans, open_spans, error=spans.calls()[0].attributes.get(sc.ERROR_TYPE))
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == count_tokens("Hi", "o4-mini-2025-04-16")


# --- another GenAI instrumentation on the same calls ----------------------------------------------


def _v2() -> Any:
    """The official instrumentation, or a skip saying why it cannot run in this environment."""
    mod = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    probe = mod.OpenAIInstrumentor()
    try:
        probe.instrument()
    except Exception as exc:  # e.g. openai-v2 2.3b0 calls wrapt 1.x's wrap_function_wrapper(module=...)
        pytest.skip(f"opentelemetry-instrumentation-openai-v2 cannot instrument here: {type(exc).__name__}: {exc}")
    probe.uninstrument()
    return probe


@pytest.mark.parametrize("order", ["costtrace_first", "v2_first"])
@pytest.mark.parametrize("stream", [False, True])
def test_with_official_openai_v2_the_call_counts_once(
    llm_server: Any, client: Any, spans: Any, open_spans: OpenSpans, order: str, stream: bool
) -> None:
    from openai.resources.chat.completions import Completions

    original = Completions.__dict__["create"]
    ours, v2 = OpenAIInstrumentor(), _v2()
    first, second = (ours, v2) if order == "costtrace_first" else (v2, ours)
    first.instrument()
    second.instrument()
    try:
        _script(llm_server, stream)
        kwargs: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        with capture() as got, costtrace.task("both"):
            out = client.chat.completions.create(model=MODEL, messages=MSGS, **kwargs)
            if stream:
                list(out)
    finally:
        first.uninstrument()  # either order restores the SDK's own function
        second.uninstrument()
    assert Completions.__dict__["create"] is original
    (rec,) = got.calls
    assert rec.usage == Usage(10, 2)
    assert got.task("both").llm_calls == 1
    assert got.task("both").cost_usd == rec.cost_usd
    theirs = [s for s in spans.calls() if s.instrumentation_scope.name != "costtrace"]
    mine = [s for s in spans.calls() if s.instrumentation_scope.name == "costtrace"]
    assert len(theirs) == 1
    # one CLIENT span for one call: costtrace's attributes are on the other instrumentation's span
    assert mine == []
    assert theirs[0].attributes[sc.CALL_COST_USD] == float(rec.cost_usd)
    assert theirs[0].attributes[sc.TASK_NAME] == "both"
    assert not open_spans.open


def test_other_instrumentation_unwrapping_first_keeps_ours(llm_server: Any, client: Any) -> None:
    from openai.resources.chat.completions import Completions

    original = Completions.__dict__["create"]
    ours, v2 = OpenAIInstrumentor(), _v2()
    v2.instrument()
    ours.instrument()
    v2.uninstrument()
    try:
        llm_server.json(chat_body())
        with capture() as got:
            client.chat.completions.create(model=MODEL, messages=MSGS)
        assert len(got.calls) == 1
    finally:
        ours.uninstrument()
    assert Completions.__dict__["create"] is original


def test_no_content_recorded_by_default(llm_server: Any, instrumented: Any, client: Any, spans: Any) -> None:
    canary_in, canary_out = "CANARY-PROMPT-7f3a", "CANARY-COMPLETION-91bc"
    llm_server.json(chat_body(content=canary_out))
    llm_server.sse(chat_chunks([canary_out]), done=True)
    msgs = [{"role": "user", "content": canary_in}]
    client.chat.completions.create(model=MODEL, messages=msgs)
    list(client.chat.completions.create(model=MODEL, messages=msgs, stream=True))
    for span in spans.all():
        blob = str(dict(span.attributes or {})) + str([e.attributes for e in span.events])
        assert canary_in not in blob and canary_out not in blob


def test_deep_copy_of_messages_not_needed_for_estimate(llm_server: Any, instrumented: Any, client: Any) -> None:
    """Pydantic message objects (a previous reply appended to the history) are estimated from their data."""
    llm_server.json(chat_body())
    reply = client.chat.completions.create(model=MODEL, messages=MSGS).choices[0].message
    history = [*copy.deepcopy(MSGS), reply, {"role": "user", "content": "And again."}]
    llm_server.sse(chat_chunks(["ok"]), done=True)
    with capture() as got:
        list(client.chat.completions.create(model=MODEL, messages=history, stream=True))
    dumped = [*MSGS, reply.model_dump(exclude_none=True), {"role": "user", "content": "And again."}]
    assert got.calls[0].usage.input_tokens == count_tokens(dumped, RESP_MODEL)


def test_opt_in_content_capture_is_limited_and_redacted(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    from costtrace import content

    llm_server.json(chat_body(content="Hello, card 4111111111111111!"))
    llm_server.sse(chat_chunks(["Hello, card ", "4111111111111111"]), done=True)
    msgs = [{"role": "user", "content": "my card is 4111111111111111"}]
    costtrace.capture_content(True, max_chars=400, redact=lambda s: s.replace("4111111111111111", "[card]"))
    try:
        client.chat.completions.create(model=MODEL, messages=msgs)
        list(client.chat.completions.create(model=MODEL, messages=msgs, stream=True))
    finally:
        content._reset_for_tests()
    for span in spans.calls():
        a = span.attributes
        assert "[card]" in a[sc.GEN_AI_INPUT_MESSAGES] and "[card]" in a[sc.GEN_AI_OUTPUT_MESSAGES]
        assert "4111" not in a[sc.GEN_AI_INPUT_MESSAGES] + a[sc.GEN_AI_OUTPUT_MESSAGES]


def test_content_dropped_when_the_redaction_hook_fails(
    llm_server: Any, instrumented: Any, client: Any, spans: Any
) -> None:
    from costtrace import content

    def broken(text: str) -> str:
        raise ValueError("redactor bug")

    llm_server.json(chat_body(content="secret answer"))
    costtrace.capture_content(True, redact=broken)
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "secret question"}])
    finally:
        content._reset_for_tests()
    a = call_attrs(spans)
    assert a[sc.GEN_AI_INPUT_MESSAGES] == a[sc.GEN_AI_OUTPUT_MESSAGES] == content.REDACTION_FAILED


def test_bound_methods_kept_from_before_uninstrument_pass_through(llm_server: Any, client: Any) -> None:
    inst = OpenAIInstrumentor()
    inst.instrument()
    raw_api = client.chat.completions.with_raw_response  # cached by the SDK, holding the patched create
    inst.uninstrument()
    llm_server.json(chat_body())
    with capture() as got:
        raw_api.create(model=MODEL, messages=MSGS).parse()
    assert got.calls == []


def test_call_span_is_current_while_the_sdk_sends(llm_server: Any, instrumented: Any, spans: Any) -> None:
    seen: list[Any] = []

    def on_request(request: Any) -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    llm_server.json(chat_body())
    http_client = openai.DefaultHttpxClient(event_hooks={"request": [on_request]})
    with openai.OpenAI(api_key=SECRET, base_url=llm_server.url + "/v1", http_client=http_client) as c:
        c.chat.completions.create(model=MODEL, messages=MSGS)
    assert seen == [spans.calls()[0].context.span_id]
