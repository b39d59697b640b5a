"""Counted once: an instrumented SDK request inside a manual ``llm_call`` fills that call; a request the
SDK refuses before sending is not a call; usage subsets a provider reported as 0 are exported as 0.

Real SDKs (openai, anthropic, google-genai) against the local fake server; the HTTP layer on (as
``costtrace.instrument()`` leaves it) so requests on the wire are counted on the current call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from google.genai import types as genai_types

import costtrace
from costtrace import calls
from costtrace import semconv as sc
from costtrace.testing import capture
from costtrace.usage import Usage
from tests.instrumentation import test_anthropic as ta
from tests.instrumentation import test_google_genai as tg
from tests.instrumentation import test_openai as to
from tests.instrumentation.fake_server import FakeLLMServer

ALL = ("openai", "anthropic", "google_genai", "http")

# Anthropic SDKs from about 0.4x refuse a non-streamed request that may run past 10 minutes, before
# sending it; the lowest supported one (0.40) sends it.
SDK_REFUSES_LONG_REQUESTS = hasattr(anthropic._base_client.SyncAPIClient, "_calculate_nonstreaming_timeout")
needs_refusal = pytest.mark.skipif(
    not SDK_REFUSES_LONG_REQUESTS, reason="this anthropic version sends long non-streamed requests (no refusal)"
)


@pytest.fixture
def instrumented() -> Iterator[None]:
    costtrace.instrument(*ALL)
    yield
    costtrace.uninstrument(*ALL)


def cost_spans(spans: Any) -> list[Any]:
    """costtrace's call spans (the SDKs' own spans, if any, carry no costtrace.call.id)."""
    return [s for s in spans.all() if s.attributes and sc.CALL_ID in s.attributes]


def one_span(spans: Any) -> dict[str, Any]:
    found = cost_spans(spans)
    assert len(found) == 1, [s.name for s in found]
    return dict(found[0].attributes or {})


def openai_client(server: FakeLLMServer, *, is_async: bool = False, retries: int = 0) -> Any:
    return to.make_client(server, is_async=is_async, retries=retries)


# --- 5a: a manual llm_call around an instrumented SDK call is one call ------------------------------------


def test_openai_create_inside_llm_call_fills_it(llm_server: FakeLLMServer, instrumented: None, spans: Any) -> None:
    llm_server.json(to.chat_body(to.usage_body(1200, 150, cached=1000)))
    with capture() as got, costtrace.task("manual") as t:
        with costtrace.llm_call(provider="openai", model=to.MODEL) as call, openai_client(llm_server) as client:
            resp = client.chat.completions.create(model=to.MODEL, messages=to.MSGS, max_tokens=256)
            call.record_response(resp)  # the README's pattern: the same numbers again, not added
    (rec,) = got.calls
    assert rec.usage == Usage(1200, 150, cache_read_input_tokens=1000)
    assert rec.response_model == to.RESP_MODEL
    assert rec.cost_usd == to.ref_price(to.RESP_MODEL, input_tokens=1200, output_tokens=150, cache_read_tokens=1000)
    summary = got.task("manual")
    assert summary.llm_calls == 1 and summary.own_known_cost_usd == rec.cost_usd
    assert t.summary.attempts == 1
    a = one_span(spans)
    assert a[sc.CALL_ID] == call.id
    assert a[sc.GEN_AI_RESPONSE_ID] == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 256  # request details the block did not give
    assert a[sc.OPENAI_API_TYPE] == "chat_completions"
    assert call.requests_sent == len(llm_server.requests) == 1


def test_openai_create_inside_llm_call_without_record_response(
    llm_server: FakeLLMServer, instrumented: None, spans: Any
) -> None:
    llm_server.json(to.chat_body(to.usage_body(700, 20), service_tier="flex"))
    with capture() as got, costtrace.task("manual"):
        with costtrace.llm_call(provider="openai", model=to.MODEL), openai_client(llm_server) as client:
            client.chat.completions.create(model=to.MODEL, messages=to.MSGS)
    (rec,) = got.calls
    assert rec.usage == Usage(700, 20)
    priced = costtrace.price.catalog.default_catalog().cost(
        Usage(700, 20), provider="openai", model=to.RESP_MODEL, service_tier="flex"
    )
    assert rec.cost_usd == priced.total_usd  # the tier that served it prices the manual call
    assert one_span(spans)[sc.OPENAI_RESPONSE_SERVICE_TIER] == "flex"


def test_async_openai_create_inside_async_llm_call(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.json(to.chat_body(to.usage_body(300, 40)))

    async def main() -> None:
        async with openai_client(llm_server, is_async=True) as client, costtrace.task("manual"):
            async with costtrace.llm_call(provider="openai", model=to.MODEL):
                await client.chat.completions.create(model=to.MODEL, messages=to.MSGS)

    with capture() as got:
        asyncio.run(main())
    (rec,) = got.calls
    assert rec.usage == Usage(300, 40)
    assert rec.cost_usd == to.ref_price(to.RESP_MODEL, input_tokens=300, output_tokens=40)
    assert got.task("manual").llm_calls == 1


def test_openai_stream_inside_llm_call_usage_from_the_stream(
    llm_server: FakeLLMServer, instrumented: None, spans: Any
) -> None:
    llm_server.sse(to.chat_chunks(["Hel", "lo"], usage=to.usage_body(90, 12)), done=True)
    with capture() as got, costtrace.task("manual"):
        with costtrace.llm_call(provider="openai", model=to.MODEL), openai_client(llm_server) as client:
            stream = client.chat.completions.create(
                model=to.MODEL, messages=to.MSGS, stream=True, stream_options={"include_usage": True}
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello"
    (rec,) = got.calls
    assert rec.usage == Usage(90, 12)
    assert rec.cost_usd == to.ref_price(to.RESP_MODEL, input_tokens=90, output_tokens=12)
    assert one_span(spans)[sc.GEN_AI_REQUEST_STREAM] is True


@to.needs_responses
def test_openai_responses_inside_llm_call(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.json(to.responses_body(to.responses_usage(500, 80, reasoning=64)))
    with capture() as got, costtrace.task("manual"):
        with costtrace.llm_call(provider="openai", model="o4-mini"), openai_client(llm_server) as client:
            client.responses.create(model="o4-mini", input="hi")
    (rec,) = got.calls
    assert rec.usage == Usage(500, 80, reasoning_output_tokens=64)
    assert rec.cost_usd == to.ref_price("o4-mini-2025-04-16", input_tokens=500, output_tokens=80)
    assert got.task("manual").llm_calls == 1


def test_sdk_resend_inside_llm_call_is_counted_on_it(llm_server: FakeLLMServer, instrumented: None, spans: Any) -> None:
    llm_server.json(to.ERROR_400 | {"error": {"message": "slow down"}}, status=429, headers={"retry-after-ms": "1"})
    llm_server.json(to.chat_body(to.usage_body(50, 5)))
    with capture() as got, costtrace.task("manual"):
        with costtrace.llm_call(provider="openai", model=to.MODEL) as call, openai_client(llm_server, retries=1) as c:
            c.chat.completions.create(model=to.MODEL, messages=to.MSGS)
    (rec,) = got.calls
    assert rec.usage == Usage(50, 5) and rec.error_type is None
    assert one_span(spans)[sc.HTTP_REQUEST_RESEND_COUNT] == 1
    assert call.requests_sent == len(llm_server.requests) == 2
    task_span = spans.one_task("manual")
    reasons = [e.attributes[sc.EVENT_ATTR_REASON] for e in task_span.events if e.name == sc.EVENT_SDK_RETRY]
    assert reasons in (["rate_limit"], ["http_error"])  # older SDKs' retry hook sees only the headers


def test_a_second_request_in_one_llm_call_is_a_call_of_its_own(llm_server: FakeLLMServer, instrumented: None) -> None:
    """A manual call is one call: the first request fills it; a second one is recorded too, never lost."""
    llm_server.json(to.chat_body(to.usage_body(100, 10)))
    llm_server.json(to.chat_body(to.usage_body(200, 20)))
    with capture() as got, costtrace.task("manual"):
        with costtrace.llm_call(provider="openai", model=to.MODEL), openai_client(llm_server) as client:
            client.chat.completions.create(model=to.MODEL, messages=to.MSGS)
            client.chat.completions.create(model=to.MODEL, messages=to.MSGS)
    assert sorted(r.usage.input_tokens for r in got.calls) == [100, 200]
    assert got.task("manual").llm_calls == 2 == len(llm_server.requests)


def test_another_instrumentations_call_passes_through(llm_server: FakeLLMServer, instrumented: None) -> None:
    """A current call that is not manual (LiteLLM's, over the OpenAI SDK) records the request itself."""
    llm_server.json(to.chat_body(to.usage_body(100, 10)))
    with capture() as got, costtrace.task("gateway"):
        outer = calls.LLMCall("openai", to.MODEL)
        outer.start()
        token = calls.activate(outer)
        try:
            with openai_client(llm_server) as client:
                resp = client.chat.completions.create(model=to.MODEL, messages=to.MSGS)
        finally:
            calls.deactivate(token)
        outer.record_response(resp)
        outer.end()
    (rec,) = got.calls
    assert rec.call_id == outer.id and rec.usage == Usage(100, 10)
    assert outer.requests_sent == 1


def test_anthropic_create_and_stream_inside_llm_call(llm_server: FakeLLMServer, instrumented: None) -> None:
    body = ta.message_body(ta.usage_body(25, 12, cache_read=100))
    llm_server.json(body)
    llm_server.sse(ta.stream_events(body), named=True)
    with capture() as got, costtrace.task("manual"), ta.sync_client(llm_server) as client:
        with costtrace.llm_call(provider="anthropic", model=ta.MODEL) as first:
            message = client.messages.create(**ta.create_kwargs())
            first.record_response(message)
        with costtrace.llm_call(provider="anthropic", model=ta.MODEL):
            with client.messages.stream(**ta.create_kwargs()) as stream:
                stream.get_final_message()
    assert [r.usage for r in got.calls] == [Usage(125, 12, cache_read_input_tokens=100)] * 2
    for rec in got.calls:
        ta.assert_priced_like_genai_prices(rec)
        assert rec.response_model == ta.RESPONSE_MODEL
    assert got.task("manual").llm_calls == 2 == len(llm_server.requests)


def test_async_anthropic_create_inside_llm_call(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.json(ta.message_body(ta.usage_body(30, 7)))

    async def main() -> None:
        async with ta.async_client(llm_server) as client:
            async with costtrace.llm_call(provider="anthropic", model=ta.MODEL):
                await client.messages.create(**ta.create_kwargs())

    with capture() as got, costtrace.task("manual"):
        asyncio.run(main())
    (rec,) = got.calls
    assert rec.usage == Usage(30, 7)
    ta.assert_priced_like_genai_prices(rec)


def test_google_generate_and_stream_inside_llm_call(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.json(tg.response_body(usage_metadata=tg.usage(25, 12, cached=0)))
    llm_server.sse(tg.stream_chunks(["Custo", "mer"], tg.usage(40, 2)))
    client = tg.make_client(llm_server.url)
    with capture() as got, costtrace.task("manual"):
        with costtrace.llm_call(provider="gcp.gemini", model=tg.MODEL, operation="generate_content"):
            client.models.generate_content(model=tg.MODEL, contents=tg.PROMPT)
        with costtrace.llm_call(provider="gcp.gemini", model=tg.MODEL, operation="generate_content"):
            for _ in client.models.generate_content_stream(model=tg.MODEL, contents=tg.PROMPT):
                pass
    assert [r.usage for r in got.calls] == [Usage(25, 12), Usage(40, 2)]
    assert [r.cost_usd for r in got.calls] == [
        tg.ref_price(input_tokens=25, output_tokens=12),
        tg.ref_price(input_tokens=40, output_tokens=2),
    ]
    assert got.task("manual").llm_calls == 2 == len(llm_server.requests)


# --- 5b: a request the SDK refuses before sending is not a call ------------------------------------------

HUGE_MAX_TOKENS = 64000  # the Anthropic SDK wants a stream above ~21k tokens without an explicit timeout


def _refused_then_streamed(client: anthropic.Anthropic) -> ValueError:
    """What pydantic-ai's AnthropicModel does: create(), refused with ValueError, then the same as a stream."""
    with pytest.raises(ValueError, match="Streaming is") as refused:
        client.messages.create(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS))
    with client.messages.stream(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS)) as stream:
        stream.get_final_message()
    return refused.value


@needs_refusal
def test_refused_anthropic_request_is_not_a_call(
    llm_server: FakeLLMServer, instrumented: None, spans: Any, metric_points: Any
) -> None:
    body = ta.message_body(ta.usage_body(25, 12))
    llm_server.sse(ta.stream_events(body), named=True)
    bare = anthropic.Anthropic(base_url=llm_server.url, api_key="k", max_retries=0)
    with pytest.raises(ValueError) as bare_error:  # what the app gets without costtrace
        costtrace.uninstrument("anthropic")
        try:
            bare.messages.create(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS))
        finally:
            costtrace.instrument("anthropic")
    with capture() as got, costtrace.task("pydantic-ai-like"), ta.sync_client(llm_server) as client:
        refused = _refused_then_streamed(client)
    assert type(refused) is type(bare_error.value) and str(refused) == str(bare_error.value)
    assert len(llm_server.requests) == 1  # one request on the wire ...
    (rec,) = got.calls  # ... one call
    assert rec.error_type is None and rec.usage == Usage(25, 12)
    ta.assert_priced_like_genai_prices(rec)
    s = got.task("pydantic-ai-like")
    assert (s.llm_calls, s.failed_calls, s.attempts, s.retries, s.first_pass) == (1, 0, 1, 0, True)
    assert s.cost_complete and s.unpriced_calls == 0 and s.wasted_cost_usd == 0
    task_span = spans.one_task("pydantic-ai-like")
    (event,) = [e for e in task_span.events if e.name == sc.EVENT_REQUEST_REFUSED]
    assert event.attributes[sc.ERROR_TYPE] == "ValueError"
    assert event.attributes[sc.EVENT_ATTR_DETAILS].startswith("Streaming is")
    assert len(event.attributes[sc.EVENT_ATTR_DETAILS]) <= 256
    assert not [e for e in task_span.events if e.name in (sc.EVENT_ATTEMPT_FAILED, sc.EVENT_RETRY)]
    # The refused request's span: ended at once, marked not sent, no usage or cost on it.
    (unsent,) = [s for s in cost_spans(spans) if s.attributes.get(sc.CALL_SENT) is False]
    assert unsent.attributes[sc.ERROR_TYPE] == "ValueError"
    assert not any(k.startswith(("gen_ai.usage.", "costtrace.call.cost", "costtrace.price")) for k in unsent.attributes)
    assert sc.CALL_PRICED not in unsent.attributes
    # Metrics count one call (every finished call, priced or not, has one duration point).
    points = metric_points.collect()
    assert sum(p.count for p in points[sc.METRIC_OPERATION_DURATION]) == 1


@needs_refusal
def test_refused_async_anthropic_request_is_not_a_call(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.sse(ta.stream_events(ta.message_body(ta.usage_body(25, 12))), named=True)

    async def main() -> None:
        async with ta.async_client(llm_server) as client:
            with pytest.raises(ValueError, match="Streaming is"):
                await client.messages.create(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS))
            async with client.messages.stream(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS)) as stream:
                await stream.get_final_message()

    with capture() as got, costtrace.task("async"):
        asyncio.run(main())
    s = got.task("async")
    assert (s.llm_calls, s.failed_calls, s.attempts, s.retries, s.first_pass, s.cost_complete) == (
        1,
        0,
        1,
        0,
        True,
        True,
    )
    assert len(got.calls) == 1 == len(llm_server.requests)


@needs_refusal
def test_refused_request_does_not_use_up_a_task_call_cap(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.sse(ta.stream_events(ta.message_body()), named=True)
    with capture() as got, costtrace.task("capped", max_llm_calls=1), ta.sync_client(llm_server) as client:
        _refused_then_streamed(client)  # the stream is the one call the cap allows
    assert got.task("capped").llm_calls == 1


@needs_refusal
def test_refused_request_inside_llm_call_leaves_it_to_the_stream(llm_server: FakeLLMServer, instrumented: None) -> None:
    llm_server.sse(ta.stream_events(ta.message_body(ta.usage_body(25, 12))), named=True)
    with capture() as got, costtrace.task("manual"), ta.sync_client(llm_server) as client:
        with costtrace.llm_call(provider="anthropic", model=ta.MODEL):
            _refused_then_streamed(client)
    (rec,) = got.calls
    assert rec.usage == Usage(25, 12) and rec.error_type is None
    s = got.task("manual")
    assert (s.llm_calls, s.attempts, s.retries, s.first_pass) == (1, 1, 0, True)


def test_api_errors_stay_failed_calls(llm_server: FakeLLMServer, instrumented: None) -> None:
    """A 400 reply is an API error: a failed call (guard of existing behaviour)."""
    llm_server.json(ta.error_body("invalid_request_error", "bad"), status=400)
    with capture() as got, costtrace.task("t"), ta.sync_client(llm_server) as client:
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(**ta.create_kwargs())
    (rec,) = got.calls
    assert rec.error_type == "BadRequestError"
    assert got.task("t").failed_calls == 1


class Ticket(pydantic.BaseModel):
    priority: int


def test_openai_parse_failing_the_users_model_is_still_a_billed_call(
    llm_server: FakeLLMServer, instrumented: None
) -> None:
    """A ValidationError raised by ``parse`` after the reply arrived: the request was sent and billed."""
    llm_server.json(to.chat_body(to.usage_body(400, 9), content='{"priority": "urgent"}'))
    with capture() as got, costtrace.task("parse"), openai_client(llm_server) as client:
        with pytest.raises(pydantic.ValidationError):
            to.chat_parse_api(client).parse(model=to.MODEL, messages=to.MSGS, response_format=Ticket)
    (rec,) = got.calls
    assert rec.error_type == "ValidationError"
    # The SDK raised before handing back the reply: its usage is not read, so the call is flagged
    # unpriced (cost missing, never $0), not dropped as a request that was never sent.
    assert rec.usage.source == "unknown" and not rec.cost.priced
    s = got.task("parse")
    assert (s.llm_calls, s.failed_calls, s.unpriced_calls, s.cost_complete) == (1, 1, 1, False)
    assert len(llm_server.requests) == 1


@needs_refusal
def test_without_the_http_layer_a_refusal_is_not_guessed(llm_server: FakeLLMServer) -> None:
    """No HTTP layer: nothing says the request was not sent, so the error stays a failed call (as before)."""
    costtrace.instrument("anthropic")
    try:
        with capture() as got, costtrace.task("t"), ta.sync_client(llm_server) as client:
            with pytest.raises(ValueError):
                client.messages.create(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS))
    finally:
        costtrace.uninstrument("anthropic")
    (rec,) = got.calls
    assert rec.error_type == "ValueError"


# --- 6: usage subsets reported as 0 are exported as 0, absent ones stay absent --------------------------


def test_openai_chat_zero_cached_and_reasoning_are_exported(
    llm_server: FakeLLMServer, instrumented: None, spans: Any
) -> None:
    llm_server.json(to.chat_body(to.usage_body(100, 10, cached=0, reasoning=0)))
    with openai_client(llm_server) as client:
        client.chat.completions.create(model=to.MODEL, messages=to.MSGS)
    a = one_span(spans)
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 0
    assert sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in a  # OpenAI reports no cache writes


def test_openai_chat_absent_details_stay_absent(llm_server: FakeLLMServer, instrumented: None, spans: Any) -> None:
    llm_server.json(to.chat_body({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}))
    with openai_client(llm_server) as client:
        client.chat.completions.create(model=to.MODEL, messages=to.MSGS)
    a = one_span(spans)
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in a
    assert sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS not in a


def test_openai_chat_stream_zero_cached_is_exported(llm_server: FakeLLMServer, instrumented: None, spans: Any) -> None:
    llm_server.sse(to.chat_chunks(["Hi"], usage=to.usage_body(100, 10, cached=0)), done=True)
    with openai_client(llm_server) as client:
        for _ in client.chat.completions.create(
            model=to.MODEL, messages=to.MSGS, stream=True, stream_options={"include_usage": True}
        ):
            pass
    assert one_span(spans)[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0


@to.needs_responses
def test_openai_responses_zero_cached_is_exported(llm_server: FakeLLMServer, instrumented: None, spans: Any) -> None:
    llm_server.json(to.responses_body(to.responses_usage(100, 10, cached=0, reasoning=0)))
    llm_server.json(to.responses_body({"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}))
    with openai_client(llm_server) as client:
        client.responses.create(model="o4-mini", input="hi")
        client.responses.create(model="o4-mini", input="hi")
    reported, absent = (dict(s.attributes) for s in cost_spans(spans))
    assert reported[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0
    assert reported[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 0
    assert sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in absent
    assert sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS not in absent


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_anthropic_zero_cache_fields_are_exported(
    llm_server: FakeLLMServer, instrumented: None, spans: Any, stream: bool
) -> None:
    body = ta.message_body(ta.usage_body(25, 12, cache_read=0, cache_write_5m=0, cache_write_1h=0))
    if stream:
        llm_server.sse(ta.stream_events(body), named=True)
    else:
        llm_server.json(body)
    with ta.sync_client(llm_server) as client:
        if stream:
            with client.messages.stream(**ta.create_kwargs()) as s:
                s.get_final_message()
        else:
            client.messages.create(**ta.create_kwargs())
    a = one_span(spans)
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 25
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0
    assert a[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 0
    assert a[sc.CACHE_WRITE_1H_INPUT_TOKENS] == 0


def test_anthropic_absent_cache_fields_stay_absent(llm_server: FakeLLMServer, instrumented: None, spans: Any) -> None:
    llm_server.json(ta.message_body(ta.usage_body(25, 12)))  # no cache fields at all
    with ta.sync_client(llm_server) as client:
        client.messages.create(**ta.create_kwargs())
    a = one_span(spans)
    for key in (sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS):
        assert key not in a


def test_gemini_zero_cached_and_thoughts_are_exported_absent_stay_absent(
    llm_server: FakeLLMServer, instrumented: None, spans: Any
) -> None:
    llm_server.json(tg.response_body(usage_metadata=tg.usage(25, 12, cached=0, thoughts=0)))
    llm_server.json(tg.response_body(usage_metadata=tg.usage(25, 12)))
    client = tg.make_client(llm_server.url)
    client.models.generate_content(model=tg.MODEL, contents=tg.PROMPT)
    client.models.generate_content(
        model=tg.MODEL, contents=tg.PROMPT, config=genai_types.GenerateContentConfig(max_output_tokens=64)
    )
    reported, absent = (dict(s.attributes) for s in cost_spans(spans))
    assert reported[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0
    assert reported[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 0
    assert sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in absent
    assert sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS not in absent


def test_manual_usage_zero_given_is_exported_left_out_is_absent(spans: Any) -> None:
    costtrace.record_llm_call("openai", "gpt-4o-mini", 100, 10, cache_read_input_tokens=0)
    with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
        call.set_usage(100, 10)
    given, left_out = (dict(s.attributes) for s in spans.calls())
    assert given[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 0
    assert sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS not in left_out
    assert sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS not in given


_ = openai  # imported for the SDK's presence (the helpers come from test_openai)
