"""LiteLLM (its current release) through costtrace.instrument(), against the local test server.

Every request LiteLLM sends is one call record (requests on the wire == records, plus the OpenAI
SDK's own re-sends counted on their call), tokens equal the server's usage, cost equals
genai-prices, the call spans sit on the task's trace, LiteLLM's retries and fallbacks are attempts of
the task, and the chunks of a stream are the ones the app gets without costtrace.
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else importing litellm reaches the network

from collections.abc import Iterator
from typing import Any

import pytest

from tests.frameworks.conftest import need

need("litellm")

import litellm  # noqa: E402

import costtrace  # noqa: E402
from costtrace import _internal  # noqa: E402
from costtrace import semconv as sc  # noqa: E402
from costtrace.instrumentation import litellm as ct_litellm  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from costtrace.usage import Usage  # noqa: E402
from tests.instrumentation.fake_server import FakeLLMServer  # noqa: E402
from tests.instrumentation.test_anthropic import PROMPT, RESPONSE_MODEL, genai_prices_cost, message_body  # noqa: E402
from tests.instrumentation.test_anthropic import stream_events as anthropic_events  # noqa: E402
from tests.instrumentation.test_anthropic import usage_body as anthropic_usage  # noqa: E402
from tests.instrumentation.test_openai import (  # noqa: E402
    MSGS,
    RESP_MODEL,
    chat_body,
    chat_chunks,
    embeddings_body,
    ref_price,
    responses_body,
    responses_events,
    responses_usage,
    usage_body,
)

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-haiku-4-5"
KEY = "sk-test-litellm"

# LiteLLM's own warnings, not costtrace's: pydantic notes while it builds its types and reads its chunks.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
    # Its background logging worker, bound to the event loop of an earlier asyncio.run().
    pytest.mark.filterwarnings("ignore:coroutine 'LoggingWorker._worker_loop' was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),
]
SERVER_ERROR = {"error": {"message": "overloaded", "type": "server_error"}}


@pytest.fixture(autouse=True)
def _collect_litellm_event_loops() -> Iterator[None]:
    """LiteLLM's sync fallbacks and Router run coroutines on event loops it never closes: collect them
    here, their ResourceWarnings ignored, rather than in whichever later test the GC happens to run."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def instrumented() -> Iterator[None]:
    # The SDK instrumentations are on too: LiteLLM's requests must not be recorded a second time.
    costtrace.instrument("litellm", "openai", "anthropic", "http")
    yield
    costtrace.uninstrument("litellm", "openai", "anthropic", "http")


def route(server: FakeLLMServer, model: str) -> dict[str, Any]:
    base = server.url + "/v1" if model.startswith("openai/") else server.url
    return {"model": model, "api_base": base, "api_key": KEY}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def complete(mode: str, **kwargs: Any) -> Any:
    if mode == "async":
        return run(litellm.acompletion(**kwargs))
    return litellm.completion(**kwargs)


def call_spans(spans: Any) -> list[Any]:
    return [s for s in spans.all() if s.attributes and sc.CALL_ID in s.attributes]


def task_events(spans: Any, name: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes)) for e in spans.one_task(name).events]


def assert_on_task_trace(spans: Any, name: str) -> None:
    task = spans.one_task(name)
    found = call_spans(spans)
    assert found
    for span in found:
        assert span.context.trace_id == task.context.trace_id
        assert span.parent is not None and span.parent.span_id == task.context.span_id


# --- golden accounting: each route, sync and async --------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_route_tokens_cost_and_span_exact(llm_server, instrumented, spans, mode):
    llm_server.json(chat_body(usage_body(1200, 150, cached=1000, reasoning=40)))
    with capture() as got, costtrace.task("litellm-openai"):
        resp = complete(mode, messages=MSGS, max_tokens=256, temperature=0.2, **route(llm_server, GPT))
    assert resp.choices[0].message.content == "Hello, team!"
    assert len(llm_server.requests) == 1
    (rec,) = got.calls
    assert rec.usage == Usage(1200, 150, cache_read_input_tokens=1000, reasoning_output_tokens=40)
    assert rec.cost_usd == ref_price(RESP_MODEL, input_tokens=1200, cache_read_tokens=1000, output_tokens=150)
    assert (rec.provider, rec.request_model, rec.response_model) == ("openai", "gpt-4o-mini", RESP_MODEL)
    (span,) = call_spans(spans)
    a = dict(span.attributes)
    assert a[sc.GEN_AI_PROVIDER_NAME] == "openai" and a[sc.LITELLM_PROVIDER] == "openai"
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 256 and a[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert a[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert_on_task_trace(spans, "litellm-openai")
    assert got.tasks[0].cost_usd == rec.cost_usd and got.tasks[0].llm_calls == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_anthropic_route_cache_reads_and_5m_1h_writes_priced_exactly(llm_server, instrumented, spans, mode):
    llm_server.json(message_body(anthropic_usage(100, 20, cache_read=1000, cache_write_5m=200, cache_write_1h=300)))
    with capture() as got, costtrace.task("litellm-anthropic"):
        resp = complete(mode, messages=PROMPT, **route(llm_server, CLAUDE))
    assert resp.choices[0].message.content == "Customer wants a refund."
    assert [r.path for r in llm_server.requests] == ["/v1/messages"]
    (rec,) = got.calls
    # costtrace's input tokens include cache reads and writes (100 + 1000 + 500)
    assert rec.usage == Usage(
        1600, 20, cache_read_input_tokens=1000, cache_write_input_tokens=500, cache_write_1h_input_tokens=300
    )
    assert rec.cost_usd == genai_prices_cost(rec.usage)
    assert (rec.provider, rec.request_model, rec.response_model) == ("anthropic", "claude-haiku-4-5", RESPONSE_MODEL)
    assert_on_task_trace(spans, "litellm-anthropic")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_embedding(llm_server, instrumented, mode):
    llm_server.json(embeddings_body(8))
    kwargs = {"input": ["Say hello"], **route(llm_server, "openai/text-embedding-3-small")}
    with capture() as got:
        if mode == "async":
            run(litellm.aembedding(**kwargs))
        else:
            litellm.embedding(**kwargs)
    (rec,) = got.calls
    assert rec.operation == "embeddings" and rec.usage == Usage(8, 0)
    assert rec.cost_usd == ref_price("text-embedding-3-small", input_tokens=8)
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_responses_api(llm_server, instrumented, mode):
    llm_server.json(responses_body(responses_usage(1000, 300, cached=600, reasoning=200)))
    kwargs = {"input": "Say hi", **route(llm_server, "openai/o4-mini")}
    with capture() as got:
        resp = run(litellm.aresponses(**kwargs)) if mode == "async" else litellm.responses(**kwargs)
    assert resp.output[0].content[0].text == "Hi team."
    (rec,) = got.calls
    assert rec.usage == Usage(1000, 300, cache_read_input_tokens=600, reasoning_output_tokens=200)
    assert rec.cost_usd == ref_price("o4-mini-2025-04-16", input_tokens=1000, cache_read_tokens=600, output_tokens=300)
    assert [r.path for r in llm_server.requests] == ["/v1/responses"]


def test_responses_bridged_to_anthropic_is_one_call(llm_server, instrumented):
    """LiteLLM serves responses() for Anthropic through its own completion(): still one call."""
    llm_server.json(message_body(anthropic_usage(100, 20, cache_read=1000)))
    with capture() as got:
        litellm.responses(input="Summarise ticket T-1", **route(llm_server, CLAUDE))
    (rec,) = got.calls
    assert rec.provider == "anthropic" and rec.usage == Usage(1100, 20, cache_read_input_tokens=1000)
    assert rec.cost_usd == genai_prices_cost(rec.usage)
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_responses_stream_usage_from_the_completed_event(llm_server, instrumented, mode):
    llm_server.sse(responses_events(["Hi ", "team."], responses_usage(900, 40, cached=100)), named=True)
    kwargs = {"input": "Say hi", "stream": True, **route(llm_server, "openai/o4-mini")}

    async def consume() -> list[Any]:
        return [e async for e in await litellm.aresponses(**kwargs)]

    with capture() as got:
        events = run(consume()) if mode == "async" else list(litellm.responses(**kwargs))
    assert any(getattr(e, "type", None) == "response.completed" for e in events)
    (rec,) = got.calls
    assert rec.usage == Usage(900, 40, cache_read_input_tokens=100)
    assert rec.cost_usd == ref_price("o4-mini-2025-04-16", input_tokens=900, cache_read_tokens=100, output_tokens=40)


# --- streams: exact usage, and the app sees exactly its chunks ----------------------------------------


def _script_stream(server: FakeLLMServer, model: str) -> Usage:
    if model == GPT:
        server.sse(chat_chunks(["Hel", "lo"], usage=usage_body(310, 25, cached=256)), done=True)
        return Usage(310, 25, cache_read_input_tokens=256)
    message = message_body(anthropic_usage(100, 20, cache_read=1000, cache_write_5m=200))
    server.sse(anthropic_events(message), named=True)
    return Usage(1300, 20, cache_read_input_tokens=1000, cache_write_input_tokens=200)


def _stream(server: FakeLLMServer, model: str, mode: str, **extra: Any) -> list[dict[str, Any]]:
    kwargs = {"messages": MSGS, "stream": True, **route(server, model), **extra}

    async def consume() -> list[Any]:
        return [c async for c in await litellm.acompletion(**kwargs)]

    chunks = run(consume()) if mode == "async" else list(litellm.completion(**kwargs))
    # LiteLLM stamps each stream with its own id (Anthropic route) and creation time: not costtrace's doing.
    return [c.model_dump(exclude={"id", "created"}) for c in chunks]


@pytest.mark.parametrize("model", [GPT, CLAUDE])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_usage_exact_and_chunks_identical_to_uninstrumented(llm_server, spans, model, mode):
    expected = _script_stream(llm_server, model)
    bare = _stream(llm_server, model, mode)
    costtrace.instrument("litellm", "openai", "anthropic", "http")
    try:
        expected = _script_stream(llm_server, model)
        with capture() as got, costtrace.task("stream"):
            seen = _stream(llm_server, model, mode)
    finally:
        costtrace.uninstrument("litellm", "openai", "anthropic", "http")
    assert seen == bare
    assert all(not c.get("usage") for c in seen)  # the usage-only chunk costtrace asked for is hidden
    (rec,) = got.calls
    assert rec.usage == expected
    assert rec.cost_usd == (
        ref_price("gpt-4o-mini", input_tokens=310, cache_read_tokens=256, output_tokens=25)
        if model == GPT
        else genai_prices_cost(expected, "claude-haiku-4-5")
    )
    assert llm_server.requests[-1].body.get("stream_options") in (None, {"include_usage": True})
    assert_on_task_trace(spans, "stream")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_usage_the_app_asked_for_stays_visible_and_counts_once(llm_server, instrumented, mode):
    llm_server.sse(chat_chunks(["Hel", "lo"], usage=usage_body(50, 7)), done=True)
    with capture() as got:
        chunks = _stream(llm_server, GPT, mode, stream_options={"include_usage": True})
    assert [c["usage"]["prompt_tokens"] for c in chunks if c.get("usage")] == [50]
    (rec,) = got.calls
    assert rec.usage == Usage(50, 7)


# --- LiteLLM's retries and fallbacks are attempts of the task -------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_num_retries_after_a_500_is_a_failed_attempt_then_a_retry(llm_server, instrumented, spans, mode):
    llm_server.json(SERVER_ERROR, 500)
    llm_server.json(message_body())
    with capture() as got, costtrace.task("retrying"):
        complete(mode, messages=PROMPT, num_retries=1, **route(llm_server, CLAUDE))
    assert len(llm_server.requests) == 2
    failed, ok = got.calls
    assert failed.error_type is not None and failed.cost_usd is None and failed.attempt == 1
    assert ok.error_type is None and ok.attempt == 2 and ok.cost_usd == genai_prices_cost(ok.usage)
    (t,) = got.tasks
    assert (t.llm_calls, t.attempts, t.retries, t.escalations, t.first_pass) == (2, 2, 1, 0, False)
    events = task_events(spans, "retrying")
    assert [n for n, _ in events] == [sc.EVENT_ATTEMPT_FAILED, sc.EVENT_RETRY]
    retry = events[1][1]
    assert retry[sc.EVENT_ATTR_REASON] == "server_error" and retry[sc.EVENT_ATTR_MODEL] == "claude-haiku-4-5"


def test_num_retries_on_the_openai_route_are_sdk_resends_of_one_call(llm_server, instrumented, spans):
    """LiteLLM hands num_retries to the OpenAI SDK's max_retries: re-sends inside one call."""
    llm_server.json(SERVER_ERROR, 500, {"retry-after-ms": "1"})
    llm_server.json(chat_body(usage_body(100, 20)))
    with capture() as got, costtrace.task("resend"):
        litellm.completion(messages=MSGS, num_retries=1, **route(llm_server, GPT))
    assert len(llm_server.requests) == 2
    (rec,) = got.calls
    assert rec.usage == Usage(100, 20) and rec.error_type is None
    (span,) = call_spans(spans)
    assert span.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 1
    assert [n for n, _ in task_events(spans, "resend")] == [sc.EVENT_SDK_RETRY]
    assert got.tasks[0].attempts == 1 and got.tasks[0].retries == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fallback_to_another_model_is_an_escalation(llm_server, instrumented, spans, mode):
    llm_server.json(SERVER_ERROR, 500)
    llm_server.json(message_body())
    fallback = {"model": CLAUDE, "api_base": llm_server.url, "api_key": KEY}
    with capture() as got, costtrace.task("falling-back"):
        resp = complete(mode, messages=MSGS, num_retries=0, fallbacks=[fallback], **route(llm_server, GPT))
    assert resp.model == RESPONSE_MODEL
    assert [r.path for r in llm_server.requests] == ["/v1/chat/completions", "/v1/messages"]
    failed, ok = got.calls
    assert (failed.request_model, failed.error_type is not None) == ("gpt-4o-mini", True)
    assert (ok.request_model, ok.provider, ok.attempt) == ("claude-haiku-4-5", "anthropic", 2)
    (t,) = got.tasks
    assert (t.attempts, t.retries, t.escalations) == (2, 0, 1)
    name, esc = task_events(spans, "falling-back")[-1]
    assert name == sc.EVENT_ESCALATION
    assert (esc[sc.EVENT_ATTR_FROM_MODEL], esc[sc.EVENT_ATTR_TO_MODEL]) == ("gpt-4o-mini", "claude-haiku-4-5")
    assert esc[sc.EVENT_ATTR_REASON] == "fallback"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_router_retry_then_fallback_between_deployments(llm_server, instrumented, spans, mode):
    llm_server.json(SERVER_ERROR, 500)
    llm_server.json(SERVER_ERROR, 500)
    llm_server.json(message_body())
    router = litellm.Router(
        model_list=[
            {"model_name": "gpt", "litellm_params": route(llm_server, GPT)},
            {"model_name": "claude", "litellm_params": route(llm_server, CLAUDE)},
        ],
        fallbacks=[{"gpt": ["claude"]}],
        num_retries=1,
        retry_after=0,
    )
    with capture() as got, costtrace.task("routed"):
        if mode == "async":
            run(router.acompletion(model="gpt", messages=MSGS))
        else:
            router.completion(model="gpt", messages=MSGS)
    assert len(llm_server.requests) == 3 == len(got.calls)
    assert [c.request_model for c in got.calls] == ["gpt-4o-mini", "gpt-4o-mini", "claude-haiku-4-5"]
    assert [c.attempt for c in got.calls] == [1, 2, 3]
    (t,) = got.tasks
    assert (t.attempts, t.retries, t.escalations, t.failed_calls) == (3, 1, 1, 2)
    kinds = [n for n, _ in task_events(spans, "routed")]
    assert kinds == [
        sc.EVENT_ATTEMPT_FAILED,
        sc.EVENT_RETRY,
        sc.EVENT_ATTEMPT_FAILED,
        sc.EVENT_ESCALATION,
    ]


def test_provider_error_is_a_failed_call_and_passes_through_unchanged(llm_server, instrumented, spans):
    llm_server.json({"error": {"message": "bad temperature", "type": "invalid_request_error"}}, 400)
    with capture() as got, pytest.raises(litellm.BadRequestError), costtrace.task("t"):
        litellm.completion(messages=MSGS, num_retries=0, **route(llm_server, GPT))
    (rec,) = got.calls
    assert rec.error_type is not None and rec.cost_usd is None and rec.usage.source == "unknown"
    assert got.tasks[0].failed_calls == 1


# --- exactly once ------------------------------------------------------------------------------------


def test_manual_llm_call_around_litellm_is_filled_not_doubled(llm_server, instrumented):
    llm_server.json(chat_body(usage_body(40, 9)))
    with capture() as got, costtrace.llm_call(provider="openai", model="gpt-4o-mini"):
        litellm.completion(messages=MSGS, **route(llm_server, GPT))
    (rec,) = got.calls
    assert rec.usage == Usage(40, 9)


def test_mock_response_sends_nothing_and_records_nothing(instrumented):
    with capture() as got:
        litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="hi")
    assert got.calls == []


def test_from_litellm_import_completion_before_instrument_is_seen(llm_server):
    from litellm import completion  # bound before instrument(): the dispatcher's own reference is patched

    costtrace.instrument("litellm")
    try:
        llm_server.json(chat_body(usage_body(12, 3)))
        with capture() as got:
            completion(messages=MSGS, **route(llm_server, GPT))
    finally:
        costtrace.uninstrument("litellm")
    (rec,) = got.calls
    assert rec.usage == Usage(12, 3)


def test_uninstrument_restores_litellm(llm_server):
    originals = (litellm.completion, litellm.main.completion, litellm.embedding, litellm.responses)
    costtrace.instrument("litellm")
    assert litellm.completion is not originals[0]
    costtrace.uninstrument("litellm")
    assert (litellm.completion, litellm.main.completion, litellm.embedding, litellm.responses) == originals
    llm_server.json(chat_body())
    with capture() as got:
        litellm.completion(messages=MSGS, **route(llm_server, GPT))
    assert got.calls == []


# --- costtrace's own errors never reach the app -----------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("costtrace bug")


@pytest.mark.parametrize("where", ["_prepare", "_record", "on_item"])
def test_costtrace_failure_leaves_the_litellm_call_untouched(llm_server, instrumented, monkeypatch, where):
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    if where == "on_item":
        monkeypatch.setattr(ct_litellm._ChatStream, "on_item", _boom)
    else:
        monkeypatch.setattr(ct_litellm, where, _boom)
    llm_server.json(chat_body())
    llm_server.sse(chat_chunks(["Hel", "lo"], usage=usage_body(10, 2)), done=True)
    resp = litellm.completion(messages=MSGS, **route(llm_server, GPT))
    chunks = list(litellm.completion(messages=MSGS, stream=True, **route(llm_server, GPT)))
    assert resp.choices[0].message.content == "Hello, team!"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert sum(_internal.internal_error_counts().values()) >= 1


def test_manual_llm_call_around_a_litellm_stream_is_filled_not_doubled(llm_server, instrumented):
    llm_server.sse(chat_chunks(["Hel", "lo"], usage=usage_body(33, 4)), done=True)
    with capture() as got, costtrace.llm_call(provider="openai", model="gpt-4o-mini"):
        chunks = list(litellm.completion(messages=MSGS, stream=True, **route(llm_server, GPT)))
    assert all(not getattr(c, "usage", None) for c in chunks)
    (rec,) = got.calls
    assert rec.usage == Usage(33, 4)


def test_a_call_litellm_refuses_before_sending_is_no_call(llm_server, instrumented, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with capture() as got, costtrace.task("refused"), pytest.raises(Exception) as info:
        litellm.completion(model=CLAUDE, messages=PROMPT, api_base=llm_server.url, num_retries=0)
    assert llm_server.requests == []
    assert got.calls == [], f"{type(info.value).__name__} raised before sending is not a call"
    (t,) = got.tasks
    assert (t.llm_calls, t.failed_calls, t.attempts) == (0, 0, 0)
