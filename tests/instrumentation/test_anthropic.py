"""Anthropic instrumentation: the real ``anthropic`` SDK against a local server speaking its wire format.

Golden accounting (tokens exact, cost equal to genai-prices' to the last Decimal digit), the
transparency matrix (sync/async x create/create(stream=True)/messages.stream x with_raw_response),
early exits, SDK retries and errors. Response bodies follow Anthropic's documented Messages API shapes.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import genai_prices
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

import costtrace
from costtrace import _internal, content
from costtrace.instrumentation import anthropic as anthropic_instr
from costtrace.records import CallRecord
from costtrace.testing import capture
from costtrace.usage import Usage
from tests.instrumentation.fake_server import FakeLLMServer

MODEL = "claude-haiku-4-5"
RESPONSE_MODEL = "claude-haiku-4-5-20251001"
PROMPT = [{"role": "user", "content": "Summarise ticket T-1 in one line."}]
SDK_VERSION = tuple(int(p) for p in anthropic.__version__.split(".")[:2])


# --- bodies shaped like the Messages API's ---------------------------------------------------------------


def usage_body(
    input_tokens: int = 25,
    output_tokens: int = 12,
    *,
    cache_read: int | None = None,
    cache_write_5m: int | None = None,
    cache_write_1h: int | None = None,
) -> dict[str, Any]:
    u: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_read is not None or cache_write_5m is not None or cache_write_1h is not None:
        w5, w1 = cache_write_5m or 0, cache_write_1h or 0
        u["cache_read_input_tokens"] = cache_read or 0
        u["cache_creation_input_tokens"] = w5 + w1
        u["cache_creation"] = {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1}
    return u


def message_body(
    usage: dict[str, Any] | None = None,
    *,
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
    msg_id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": RESPONSE_MODEL,
        "content": content if content is not None else [{"type": "text", "text": "Customer wants a refund."}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage if usage is not None else usage_body(),
    }


def stream_events(
    message: dict[str, Any],
    *,
    start_usage: dict[str, Any] | None = None,
    delta_usage: dict[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events the API sends for ``message``: message_start (input usage, provisional output),
    content blocks, ping, message_delta (cumulative usage), message_stop."""
    u = message["usage"]
    start = dict(start_usage) if start_usage is not None else {**u, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start},
            },
        ),
    ]
    for i, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            first = {"type": "text", "text": ""}
            half = len(block["text"]) // 2
            deltas = [
                {"type": "text_delta", "text": block["text"][:half]},
                {"type": "text_delta", "text": block["text"][half:]},
            ]
        elif kind == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:  # tool_use
            first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": raw[:5]},
                {"type": "input_json_delta", "partial_json": raw[5:]},
            ]
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": first}))
        if i == 0:
            events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": delta_usage if delta_usage is not None else {"output_tokens": u["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


# --- fixtures and helpers ---------------------------------------------------------------------------------


class _OpenCallSpans(SpanProcessor):
    """Call spans started and not yet ended: a leaked span stays here after gc.collect()."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.attributes and "costtrace.call.id" in span.attributes:
            self.open.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        self.open.discard(span.context.span_id)


_open_spans = _OpenCallSpans()
trace.get_tracer_provider().add_span_processor(_open_spans)  # type: ignore[attr-defined]


@pytest.fixture
def no_leaked_spans() -> Iterator[None]:
    before = set(_open_spans.open)
    yield
    gc.collect()
    assert _open_spans.open - before == set(), "a call span was started and never ended"


@pytest.fixture
def instrumented() -> Iterator[None]:
    costtrace.instrument("anthropic")
    yield
    costtrace.uninstrument("anthropic")


@pytest.fixture
def records() -> Iterator[list[CallRecord]]:
    with capture() as got:
        yield got.calls


def sync_client(server: FakeLLMServer, max_retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=max_retries)


def async_client(server: FakeLLMServer, max_retries: int = 0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="test-key", max_retries=max_retries)


def call_spans(spans: Any) -> list[ReadableSpan]:
    """costtrace's call spans (anthropic >= 2.0 also emits its own span per API call)."""
    return [s for s in spans.all() if s.attributes and "costtrace.call.id" in s.attributes]


def one_call(spans: Any) -> dict[str, Any]:
    found = call_spans(spans)
    assert len(found) == 1, f"expected one call span, got {len(found)}"
    return dict(found[0].attributes or {})


def genai_prices_cost(u: Usage, model: str = RESPONSE_MODEL) -> Decimal:
    kw: dict[str, int] = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
    if u.cache_read_input_tokens:
        kw["cache_read_tokens"] = u.cache_read_input_tokens
    if u.cache_write_input_tokens:
        kw["cache_write_tokens"] = u.cache_write_input_tokens
    if u.cache_write_1h_input_tokens:
        kw["cache_write_1h_tokens"] = u.cache_write_1h_input_tokens
    price = genai_prices.calc_price(genai_prices.Usage(**kw), model, provider_id="anthropic")
    return price.total_price


def assert_priced_like_genai_prices(record: CallRecord) -> None:
    assert record.cost.priced, record.cost.unpriced_reason
    assert record.cost_usd == genai_prices_cost(record.usage)


def create_kwargs(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 1024, "messages": PROMPT, **extra}


# --- golden accounting ------------------------------------------------------------------------------------


def test_plain_message_tokens_cost_and_span(instrumented, llm_server, spans, records):
    llm_server.json(message_body(usage_body(25, 12)))
    with sync_client(llm_server) as client:
        client.messages.create(**create_kwargs())
    attrs = one_call(spans)
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.response.model"] == RESPONSE_MODEL
    assert attrs["gen_ai.response.id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.request.max_tokens"] == 1024
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == int(llm_server.url.rsplit(":", 1)[1])
    assert "gen_ai.request.stream" not in attrs
    assert attrs["gen_ai.usage.input_tokens"] == 25
    assert attrs["gen_ai.usage.output_tokens"] == 12
    assert attrs["costtrace.usage.source"] == "provider"
    (record,) = records
    assert record.usage == Usage(input_tokens=25, output_tokens=12)
    assert_priced_like_genai_prices(record)
    assert attrs["costtrace.call.cost_usd"] == float(record.cost_usd)


def test_stream_usage_from_start_and_delta_counted_once(instrumented, llm_server, spans, records):
    body = message_body(usage_body(25, 12))
    llm_server.sse(stream_events(body), named=True)
    llm_server.json(body)
    with sync_client(llm_server) as client:
        events = list(client.messages.create(**create_kwargs(stream=True)))
        client.messages.create(**create_kwargs())
    assert events[0].type == "message_start"
    streamed, plain = records
    assert streamed.usage == Usage(input_tokens=25, output_tokens=12)  # not 25+12+1
    assert streamed.usage == plain.usage
    assert streamed.cost_usd == plain.cost_usd  # streamed and non-streamed calls with equal usage cost the same
    assert_priced_like_genai_prices(streamed)
    stream_span = call_spans(spans)[0]
    assert stream_span.attributes["gen_ai.request.stream"] is True
    assert "costtrace.call.incomplete" not in stream_span.attributes


def test_stream_delta_repeating_cumulative_input_and_cache_counts_once(instrumented, llm_server, records):
    # Newer API versions repeat input and cache counts, cumulatively, on message_delta.
    u = usage_body(300, 80, cache_read=2000, cache_write_5m=500, cache_write_1h=700)
    body = message_body(u)
    delta = {k: u[k] for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")}
    llm_server.sse(stream_events(body, delta_usage={**delta, "output_tokens": 80}), named=True)
    with sync_client(llm_server) as client:
        for _ in client.messages.create(**create_kwargs(stream=True)):
            pass
    (record,) = records
    assert record.usage == Usage(
        input_tokens=300 + 2000 + 1200,
        output_tokens=80,
        cache_read_input_tokens=2000,
        cache_write_input_tokens=1200,
        cache_write_1h_input_tokens=700,
    )
    assert_priced_like_genai_prices(record)


def test_cumulative_delta_overrides_start_values(instrumented, llm_server, records):
    # If message_delta reports a (cumulative, final) input count, it wins over message_start's.
    body = message_body(usage_body(40, 9))
    events = stream_events(
        body, start_usage={"input_tokens": 30, "output_tokens": 1}, delta_usage={"input_tokens": 40, "output_tokens": 9}
    )
    llm_server.sse(events, named=True)
    with sync_client(llm_server) as client:
        list(client.messages.create(**create_kwargs(stream=True)))
    assert records[0].usage == Usage(input_tokens=40, output_tokens=9)


@pytest.mark.parametrize("mode", ["create", "stream", "messages.stream"])
def test_cached_prompt_reads_and_5m_1h_writes_priced_at_their_rates(instrumented, llm_server, spans, records, mode):
    u = usage_body(120, 60, cache_read=4000, cache_write_5m=1000, cache_write_1h=2000)
    body = message_body(u)
    with sync_client(llm_server) as client:
        if mode == "create":
            llm_server.json(body)
            client.messages.create(**create_kwargs())
        elif mode == "stream":
            llm_server.sse(stream_events(body), named=True)
            list(client.messages.create(**create_kwargs(stream=True)))
        else:
            llm_server.sse(stream_events(body), named=True)
            with client.messages.stream(**create_kwargs()) as stream:
                stream.until_done()
    (record,) = records
    assert record.usage == Usage(
        input_tokens=120 + 4000 + 3000,  # Anthropic's input_tokens excludes cache; costtrace's includes it
        output_tokens=60,
        cache_read_input_tokens=4000,
        cache_write_input_tokens=3000,
        cache_write_1h_input_tokens=2000,
    )
    assert_priced_like_genai_prices(record)
    all_5m = Usage(input_tokens=7120, output_tokens=60, cache_read_input_tokens=4000, cache_write_input_tokens=3000)
    assert record.cost_usd > genai_prices_cost(all_5m)  # 1h writes cost more than 5m writes
    attrs = one_call(spans)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 3000
    assert attrs["costtrace.usage.cache_write_1h.input_tokens"] == 2000


def test_costs_equal_record_llm_call_with_same_usage(instrumented, llm_server, records):
    u = usage_body(120, 60, cache_read=4000, cache_write_5m=1000, cache_write_1h=2000)
    llm_server.sse(stream_events(message_body(u)), named=True)
    with sync_client(llm_server) as client:
        list(client.messages.create(**create_kwargs(stream=True)))
    manual = costtrace.record_llm_call(
        "anthropic",
        RESPONSE_MODEL,
        7120,
        60,
        cache_read_input_tokens=4000,
        cache_write_input_tokens=3000,
        cache_write_1h_input_tokens=2000,
    )
    assert manual is not None
    assert records[0].cost_usd == manual.cost_usd


THINKING = [
    {"type": "thinking", "thinking": "The user wants a short summary...", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
    {"type": "text", "text": "Refund requested for order 1234."},
]


@pytest.mark.parametrize("stream", [False, True])
def test_extended_thinking_tokens_are_output_tokens(instrumented, llm_server, records, stream):
    body = message_body(usage_body(50, 420), content=THINKING)
    with sync_client(llm_server) as client:
        kwargs = create_kwargs(extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}})
        if stream:
            llm_server.sse(stream_events(body), named=True)
            with client.messages.stream(**kwargs) as s:
                final = s.get_final_message()
            assert [b.type for b in final.content] == ["thinking", "text"]
        else:
            llm_server.json(body)
            client.messages.create(**kwargs)
    (record,) = records
    assert record.usage == Usage(input_tokens=50, output_tokens=420)  # thinking is billed as output
    assert_priced_like_genai_prices(record)


TOOL_USE = [
    {"type": "text", "text": "Let me look the order up."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_order", "input": {"order_id": "1234"}},
]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use(instrumented, llm_server, spans, records, stream):
    body = message_body(usage_body(380, 71), content=TOOL_USE, stop_reason="tool_use")
    tools = [{"name": "get_order", "description": "Look up an order", "input_schema": {"type": "object"}}]
    with sync_client(llm_server) as client:
        if stream:
            llm_server.sse(stream_events(body), named=True)
            with client.messages.stream(**create_kwargs(tools=tools)) as s:
                final = s.get_final_message()
            assert final.content[1].input == {"order_id": "1234"}
        else:
            llm_server.json(body)
            client.messages.create(**create_kwargs(tools=tools))
    assert one_call(spans)["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert records[0].usage == Usage(input_tokens=380, output_tokens=71)
    assert_priced_like_genai_prices(records[0])


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error")])
@pytest.mark.parametrize("mode", ["create", "stream", "messages.stream"])
def test_sdk_retry_then_success_is_one_call_with_one_resend(
    instrumented, llm_server, spans, records, status, kind, mode
):
    llm_server.json(error_body(kind, "try again"), status=status, headers={"retry-after-ms": "1"})
    body = message_body(usage_body(25, 12))
    with costtrace.task("triage"), sync_client(llm_server, max_retries=2) as client:
        if mode == "create":
            llm_server.json(body)
            client.messages.create(**create_kwargs())
        elif mode == "stream":
            llm_server.sse(stream_events(body), named=True)
            list(client.messages.create(**create_kwargs(stream=True)))
        else:
            llm_server.sse(stream_events(body), named=True)
            with client.messages.stream(**create_kwargs()) as s:
                s.until_done()
    assert len(llm_server.requests) == 2
    attrs = one_call(spans)
    assert attrs["http.request.resend_count"] == 1
    assert "error.type" not in attrs
    task = spans.one_task("triage")
    retries = [e for e in task.events if e.name == "costtrace.sdk_retry"]
    assert len(retries) == 1
    assert retries[0].attributes["costtrace.reason"] == {429: "rate_limit", 529: "overloaded"}[status]
    assert retries[0].attributes["costtrace.model"] == MODEL  # the response model is not known yet
    (record,) = records
    assert record.usage == Usage(input_tokens=25, output_tokens=12)
    assert record.error_type is None


def test_sdk_retries_exhausted_is_a_failed_call_with_unknown_usage(instrumented, llm_server, spans, records):
    for _ in range(2):
        llm_server.json(error_body("overloaded_error", "Overloaded"), status=529, headers={"retry-after-ms": "1"})
    with sync_client(llm_server, max_retries=1) as client, pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(**create_kwargs())
    attrs = one_call(spans)
    assert attrs["http.request.resend_count"] == 1
    assert attrs["error.type"] == type(info.value).__qualname__
    assert attrs["costtrace.usage.source"] == "unknown"
    assert "gen_ai.usage.input_tokens" not in attrs
    assert records[0].cost_usd is None  # unknown, never $0


def test_async_sdk_retry_is_counted(instrumented, llm_server, spans):
    llm_server.json(error_body("rate_limit_error", "slow down"), status=429, headers={"retry-after-ms": "1"})
    llm_server.json(message_body())

    async def main() -> None:
        async with async_client(llm_server, max_retries=2) as client:
            await client.messages.create(**create_kwargs())

    asyncio.run(main())
    assert one_call(spans)["http.request.resend_count"] == 1


def _run_error(client: anthropic.Anthropic, mode: str) -> BaseException:
    try:
        if mode == "create":
            client.messages.create(**create_kwargs())
        elif mode == "stream":
            list(client.messages.create(**create_kwargs(stream=True)))
        elif mode == "raw":
            client.messages.with_raw_response.create(**create_kwargs())
        else:
            with client.messages.stream(**create_kwargs()) as s:
                s.until_done()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an error")


@pytest.mark.parametrize("mode", ["create", "stream", "raw", "messages.stream"])
def test_error_400_passes_through_unchanged_and_fails_the_call(llm_server, spans, records, mode):
    body = error_body("invalid_request_error", "max_tokens: Field required")
    llm_server.json(body, status=400)
    with sync_client(llm_server) as client:
        bare = _run_error(client, mode)
    costtrace.instrument("anthropic")
    try:
        llm_server.json(body, status=400)
        with sync_client(llm_server) as client:
            got = _run_error(client, mode)
    finally:
        costtrace.uninstrument("anthropic")
    assert type(got) is type(bare) is anthropic.BadRequestError
    assert str(got) == str(bare)
    assert got.__cause__ is bare.__cause__ is None
    assert got.status_code == 400
    assert got.body == bare.body
    (span,) = call_spans(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "BadRequestError"
    assert span.attributes["costtrace.usage.source"] == "unknown"
    (record,) = records
    assert record.error_type == "BadRequestError"
    assert record.cost_usd is None


def test_async_error_400_passes_through_unchanged(llm_server, spans):
    body = error_body("invalid_request_error", "messages: at least one message is required")

    async def run(stream: bool) -> BaseException:
        async with async_client(llm_server) as client:
            try:
                if stream:
                    async with client.messages.stream(**create_kwargs()) as s:
                        await s.until_done()
                else:
                    await client.messages.create(**create_kwargs())
            except BaseException as exc:
                return exc
        raise AssertionError("expected an error")

    for stream in (False, True):
        llm_server.json(body, status=400)
        bare = asyncio.run(run(stream))
        costtrace.instrument("anthropic")
        try:
            llm_server.json(body, status=400)
            got = asyncio.run(run(stream))
        finally:
            costtrace.uninstrument("anthropic")
        assert type(got) is type(bare) is anthropic.BadRequestError
        assert str(got) == str(bare)
        assert got.__cause__ is bare.__cause__ is None
    assert [s.attributes["error.type"] for s in call_spans(spans)] == ["BadRequestError"] * 2


def test_connection_error_passes_through_with_its_cause(spans, records):
    def run() -> BaseException:
        with anthropic.Anthropic(base_url="http://127.0.0.1:1", api_key="test-key", max_retries=0) as client:
            try:
                client.messages.create(**create_kwargs())
            except BaseException as exc:
                return exc
        raise AssertionError("expected an error")

    bare = run()
    costtrace.instrument("anthropic")
    try:
        got = run()
    finally:
        costtrace.uninstrument("anthropic")
    assert type(got) is type(bare) is anthropic.APIConnectionError
    assert str(got) == str(bare)
    assert type(got.__cause__) is type(bare.__cause__)
    assert one_call(spans)["error.type"] == "APIConnectionError"
    assert records[0].cost_usd is None


def test_bedrock_and_vertex_clients_map_to_their_providers():
    # AnthropicBedrock needs boto3 to be constructed; the mapping goes by client class name.
    bedrock = type("AnthropicBedrock", (), {})
    vertex = type("AsyncAnthropicVertex", (), {})
    assert anthropic_instr._provider(bedrock()) == "aws.bedrock"
    assert anthropic_instr._provider(vertex()) == "gcp.vertex_ai"
    with anthropic.Anthropic(api_key="k") as client:
        assert anthropic_instr._provider(client) == "anthropic"


def test_error_event_mid_stream_raises_like_bare_and_fails_the_call(llm_server, spans):
    body = message_body()
    events = [*stream_events(body)[:3], ("error", error_body("overloaded_error", "Overloaded"))]

    def run() -> tuple[list[str], BaseException]:
        seen: list[str] = []
        with sync_client(llm_server) as client:
            try:
                for event in client.messages.create(**create_kwargs(stream=True)):
                    seen.append(event.type)
            except anthropic.APIStatusError as exc:
                return seen, exc
        raise AssertionError("expected an error")

    llm_server.sse(events, named=True)
    bare_seen, bare_exc = run()
    costtrace.instrument("anthropic")
    try:
        llm_server.sse(events, named=True)
        seen, exc = run()
    finally:
        costtrace.uninstrument("anthropic")
    assert seen == bare_seen
    assert type(exc) is type(bare_exc)
    assert str(exc) == str(bare_exc)
    (span,) = call_spans(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["costtrace.call.incomplete"] is True
    assert span.attributes["gen_ai.usage.input_tokens"] == 25  # message_start arrived: input billed


# --- transparency matrix -----------------------------------------------------------------------------------


MATRIX = [("create", False), ("create", True), ("stream", False), ("stream", True), ("messages.stream", False)]
"""Each way of calling the Messages API; ``messages.stream`` has no ``with_raw_response`` form."""


def _dump(obj: Any) -> Any:
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def _sync_run(client: anthropic.Anthropic, server: FakeLLMServer, mode: str, raw: bool) -> dict[str, Any]:
    """Make one call of ``mode`` and describe everything the app can see of its result."""
    body = message_body(usage_body(25, 12))
    out: dict[str, Any] = {}
    if mode == "create":
        server.json(body, headers={"request-id": "req_1"})
        if raw:
            resp = client.messages.with_raw_response.create(**create_kwargs())
            out["class"] = resp.__class__
            out["header"] = resp.headers.get("request-id")
            msg = resp.parse()
            assert resp.parse() is msg
        else:
            msg = client.messages.create(**create_kwargs())
        out["message_class"] = type(msg)
        out["message"] = msg.model_dump()
    elif mode == "stream":
        server.sse(stream_events(body), named=True)
        if raw:
            resp = client.messages.with_raw_response.create(**create_kwargs(stream=True))
            out["class"] = resp.__class__
            out["header"] = resp.headers.get("content-type")
            stream = resp.parse()
            assert resp.parse() is stream
        else:
            stream = client.messages.create(**create_kwargs(stream=True))
        out["stream_class"] = stream.__class__
        assert isinstance(stream, anthropic.Stream)
        out["status"] = stream.response.status_code
        with stream as s:
            out["events"] = [_dump(e) for e in s]
        stream.close()
    else:
        server.sse(stream_events(body), named=True)
        manager = client.messages.stream(**create_kwargs())
        out["manager_class"] = manager.__class__
        with manager as s:
            out["stream_class"] = type(s)
            out["text"] = "".join(s.text_stream)
            out["final"] = s.get_final_message().model_dump()
            out["final_text"] = s.get_final_text()
            out["snapshot"] = s.current_message_snapshot.model_dump()
            out["status"] = s.response.status_code
            s.until_done()
            s.close()
    return out


@pytest.mark.parametrize(("mode", "raw"), MATRIX)
def test_sync_matrix_same_results_as_bare(llm_server, spans, records, no_leaked_spans, mode, raw):
    with sync_client(llm_server) as client:
        bare = _sync_run(client, llm_server, mode, raw)
    costtrace.instrument("anthropic")
    try:
        with sync_client(llm_server) as client:
            got = _sync_run(client, llm_server, mode, raw)
    finally:
        costtrace.uninstrument("anthropic")
    assert got == bare
    (record,) = records
    assert record.usage == Usage(input_tokens=25, output_tokens=12)
    assert_priced_like_genai_prices(record)


async def _async_run(client: anthropic.AsyncAnthropic, server: FakeLLMServer, mode: str, raw: bool) -> dict[str, Any]:
    body = message_body(usage_body(25, 12))
    out: dict[str, Any] = {}
    if mode == "create":
        server.json(body, headers={"request-id": "req_1"})
        if raw:
            resp = await client.messages.with_raw_response.create(**create_kwargs())
            out["class"] = resp.__class__
            out["header"] = resp.headers.get("request-id")
            parsed = resp.parse()
            msg = await parsed if asyncio.iscoroutine(parsed) else parsed
        else:
            msg = await client.messages.create(**create_kwargs())
        out["message_class"] = type(msg)
        out["message"] = msg.model_dump()
    elif mode == "stream":
        server.sse(stream_events(body), named=True)
        if raw:
            resp = await client.messages.with_raw_response.create(**create_kwargs(stream=True))
            out["class"] = resp.__class__
            parsed = resp.parse()
            stream = await parsed if asyncio.iscoroutine(parsed) else parsed
        else:
            stream = await client.messages.create(**create_kwargs(stream=True))
        out["stream_class"] = stream.__class__
        assert isinstance(stream, anthropic.AsyncStream)
        out["status"] = stream.response.status_code
        async with stream as s:
            out["events"] = [_dump(e) async for e in s]
        await stream.close()
    else:
        server.sse(stream_events(body), named=True)
        manager = client.messages.stream(**create_kwargs())
        out["manager_class"] = manager.__class__
        async with manager as s:
            out["stream_class"] = type(s)
            out["text"] = "".join([t async for t in s.text_stream])
            out["final"] = (await s.get_final_message()).model_dump()
            out["final_text"] = await s.get_final_text()
            out["snapshot"] = s.current_message_snapshot.model_dump()
            await s.until_done()
            await s.close()
    return out


@pytest.mark.parametrize(("mode", "raw"), MATRIX)
def test_async_matrix_same_results_as_bare(llm_server, spans, records, no_leaked_spans, mode, raw):

    async def run() -> dict[str, Any]:
        async with async_client(llm_server) as client:
            return await _async_run(client, llm_server, mode, raw)

    bare = asyncio.run(run())
    costtrace.instrument("anthropic")
    try:
        got = asyncio.run(run())
    finally:
        costtrace.uninstrument("anthropic")
    assert got == bare
    (record,) = records
    assert record.usage == Usage(input_tokens=25, output_tokens=12)
    assert_priced_like_genai_prices(record)


def test_non_stream_create_returns_the_sdk_object_itself(instrumented, llm_server):
    llm_server.json(message_body())
    llm_server.json(message_body())
    with sync_client(llm_server) as client:
        msg = client.messages.create(**create_kwargs())
        raw_resp = client.messages.with_raw_response.create(**create_kwargs())
    assert type(msg) is anthropic.types.Message
    assert type(raw_resp).__name__ in ("APIResponse", "LegacyAPIResponse")  # not a proxy: nothing to watch


def test_with_streaming_response_create(instrumented, llm_server, records, no_leaked_spans):
    llm_server.json(message_body(usage_body(25, 12)))
    with sync_client(llm_server) as client:
        with client.messages.with_streaming_response.create(**create_kwargs()) as resp:
            assert resp.headers.get("content-type") == "application/json"
            msg = resp.parse()
    assert msg.usage.output_tokens == 12
    assert records[0].usage == Usage(input_tokens=25, output_tokens=12)


def test_async_with_streaming_response_stream(instrumented, llm_server, records, no_leaked_spans):
    llm_server.sse(stream_events(message_body(usage_body(25, 12))), named=True)

    async def main() -> list[str]:
        async with async_client(llm_server) as client:
            ctx = client.messages.with_streaming_response.create(**create_kwargs(stream=True))
            async with ctx as resp:
                assert resp.headers.get("content-type") == "text/event-stream"
                parsed = resp.parse()
                stream = await parsed if asyncio.iscoroutine(parsed) else parsed
                return [e.type async for e in stream]

    types = asyncio.run(main())
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert records[0].usage == Usage(input_tokens=25, output_tokens=12)


def test_messages_parse_is_recorded(instrumented, llm_server, records):
    if not hasattr(anthropic.resources.messages.Messages, "parse"):
        pytest.skip(f"anthropic {anthropic.__version__} has no messages.parse")
    llm_server.json(message_body(usage_body(31, 7)))
    with sync_client(llm_server) as client:
        client.messages.parse(**create_kwargs())
    assert records[0].usage == Usage(input_tokens=31, output_tokens=7)


def test_beta_messages_are_recorded(instrumented, llm_server, records):
    body = message_body(usage_body(31, 7))
    with sync_client(llm_server) as client:
        llm_server.json(body)
        client.beta.messages.create(**create_kwargs())
        has_stream = hasattr(client.beta.messages, "stream")
        if has_stream:
            llm_server.sse(stream_events(body), named=True)
            with client.beta.messages.stream(**create_kwargs()) as s:
                s.until_done()
    assert [r.usage for r in records] == [Usage(input_tokens=31, output_tokens=7)] * (2 if has_stream else 1)


def test_vertex_client_is_recorded_as_vertex_ai(instrumented, llm_server, spans, records):
    pytest.importorskip("google.auth")
    vertex = anthropic.AnthropicVertex(
        region="us-east5", project_id="proj", access_token="test-token", base_url=llm_server.url, max_retries=0
    )
    llm_server.json(message_body(usage_body(25, 12)))
    msg = vertex.messages.create(model="claude-haiku-4-5@20251001", max_tokens=100, messages=PROMPT)
    vertex.close()
    assert msg.usage.input_tokens == 25
    attrs = one_call(spans)
    assert attrs["gen_ai.provider.name"] == "gcp.vertex_ai"
    assert attrs["server.address"] == "127.0.0.1"
    assert records[0].usage == Usage(input_tokens=25, output_tokens=12)
    assert records[0].cost_usd is None or records[0].cost_usd > 0  # priced, or flagged unpriced: never $0


def test_sdk_own_span_nests_under_the_call_span(instrumented, llm_server, spans):
    llm_server.json(message_body())
    with sync_client(llm_server) as client:
        client.messages.create(**create_kwargs())
    ours = call_spans(spans)
    sdk = [s for s in spans.all() if s.name == "anthropic.messages.create"]
    if not sdk:
        pytest.skip(f"anthropic {anthropic.__version__} emits no spans of its own")
    assert sdk[0].parent is not None and sdk[0].parent.span_id == ours[0].context.span_id
    cost_spans = [s for s in spans.all() if "costtrace.call.cost_usd" in (s.attributes or {})]
    assert len(cost_spans) == 1  # costtrace's cost is counted once


# --- early exit --------------------------------------------------------------------------------------------


def _early_exit_checks(attrs: dict[str, Any], *, input_tokens: int = 25) -> None:
    assert attrs["costtrace.call.incomplete"] is True
    assert attrs["gen_ai.usage.input_tokens"] == input_tokens  # from message_start: the provider's count
    assert attrs["costtrace.usage.source"] in ("estimated", "heuristic")  # output estimated from the text
    assert attrs["gen_ai.usage.output_tokens"] >= 1


def test_break_after_first_event_then_close(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)
    with sync_client(llm_server) as client:
        stream = client.messages.create(**create_kwargs(stream=True))
        for _ in stream:
            break
        stream.close()
    _early_exit_checks(one_call(spans))


def test_break_inside_messages_stream_block(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)
    with sync_client(llm_server) as client, client.messages.stream(**create_kwargs()) as s:
        for event in s:
            if event.type == "content_block_delta":
                break
    _early_exit_checks(one_call(spans))


def test_stream_dropped_unclosed_ends_its_call_at_gc(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)
    with sync_client(llm_server) as client:
        stream = client.messages.create(**create_kwargs(stream=True))
        next(iter(stream))
        del stream
        gc.collect()
    _early_exit_checks(one_call(spans))


def test_message_stream_entered_without_with_and_dropped(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)
    with sync_client(llm_server) as client:
        manager = client.messages.stream(**create_kwargs())
        s = manager.__enter__()
        next(iter(s))
        del s, manager
        gc.collect()
    _early_exit_checks(one_call(spans))


def test_stream_manager_never_entered_records_nothing(instrumented, llm_server, spans):
    with sync_client(llm_server) as client:
        client.messages.stream(**create_kwargs())
    assert call_spans(spans) == []
    assert llm_server.requests == []


def test_server_cuts_stream_after_message_start(instrumented, llm_server, spans, no_leaked_spans):
    events = stream_events(message_body(usage_body(25, 12)))
    llm_server.sse(events, named=True, cut_after=4)  # message_start, block start, ping, one text delta
    with sync_client(llm_server) as client:
        got = list(client.messages.create(**create_kwargs(stream=True)))
    assert [e.type for e in got] == ["message_start", "content_block_start", "content_block_delta"]
    attrs = one_call(spans)
    _early_exit_checks(attrs)
    assert "error.type" not in attrs  # the SDK raised nothing; the stream just ended


def test_server_cuts_stream_before_any_event_usage_unknown(instrumented, llm_server, spans, records):
    llm_server.sse(stream_events(message_body()), named=True, cut_after=0)
    with sync_client(llm_server) as client:
        assert list(client.messages.create(**create_kwargs(stream=True))) == []
    attrs = one_call(spans)
    assert attrs["costtrace.call.incomplete"] is True
    assert attrs["costtrace.usage.source"] == "unknown"
    assert records[0].cost_usd is None  # flagged, never $0


def test_cut_after_message_delta_keeps_provider_usage(instrumented, llm_server, spans):
    events = stream_events(message_body(usage_body(25, 12)))
    llm_server.sse(events, named=True, cut_after=len(events) - 1)  # everything but message_stop
    with sync_client(llm_server) as client, client.messages.stream(**create_kwargs()) as s:
        s.until_done()
    attrs = one_call(spans)
    assert attrs["costtrace.call.incomplete"] is True
    assert attrs["costtrace.usage.source"] == "provider"  # message_delta's cumulative output arrived
    assert attrs["gen_ai.usage.output_tokens"] == 12


def test_cancel_async_task_mid_stream(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)

    async def main() -> None:
        async with async_client(llm_server) as client:
            first = asyncio.Event()

            async def consume() -> None:
                async with client.messages.stream(**create_kwargs()) as s:
                    async for _ in s:
                        first.set()
                        await asyncio.Event().wait()  # parked mid-stream until cancelled

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    attrs = one_call(spans)
    _early_exit_checks(attrs)
    assert attrs["error.type"] == "CancelledError"


def test_async_stream_dropped_unclosed(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)

    async def main() -> None:
        async with async_client(llm_server) as client:
            stream = await client.messages.create(**create_kwargs(stream=True))
            await stream.__anext__()
            await stream.close()  # the response must be closed inside the loop; the proxy is then dropped
            del stream
            gc.collect()

    asyncio.run(main())
    _early_exit_checks(one_call(spans))


def test_async_break_after_first_event(instrumented, llm_server, spans, no_leaked_spans):
    llm_server.sse(stream_events(message_body()), named=True)

    async def main() -> None:
        async with async_client(llm_server) as client:
            stream = await client.messages.create(**create_kwargs(stream=True))
            async for _ in stream:
                break
            await stream.close()

    asyncio.run(main())
    _early_exit_checks(one_call(spans))


# --- our errors never reach the app ---------------------------------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("costtrace bug")


def test_user_exception_in_stream_block_wins_over_ours(instrumented, llm_server, spans, monkeypatch):
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(anthropic_instr._StreamUsage, "finish", _boom)
    llm_server.sse(stream_events(message_body()), named=True)
    with sync_client(llm_server) as client, pytest.raises(ValueError, match="mine") as info:
        with client.messages.stream(**create_kwargs()) as s:
            next(iter(s))
            raise ValueError("mine")
    assert info.value.__cause__ is None
    assert len(call_spans(spans)) == 1  # the call still ended
    assert _internal.internal_error_counts().get("instrumentation.stream.finish") == 1


def test_user_exception_in_raw_stream_block_wins_over_ours(instrumented, llm_server, spans, monkeypatch):
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(anthropic_instr._StreamUsage, "finish", _boom)
    llm_server.sse(stream_events(message_body()), named=True)
    with sync_client(llm_server) as client, pytest.raises(KeyError):
        with client.messages.create(**create_kwargs(stream=True)) as stream:
            next(iter(stream))
            raise KeyError("mine")
    assert len(call_spans(spans)) == 1


def test_accumulator_error_leaves_iteration_untouched(instrumented, llm_server, spans, monkeypatch):
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(anthropic_instr._StreamUsage, "on_item", _boom)
    events = stream_events(message_body())
    llm_server.sse(events, named=True)
    with sync_client(llm_server) as client, client.messages.stream(**create_kwargs()) as s:
        text = s.get_final_text()
    assert text == "Customer wants a refund."
    assert len(call_spans(spans)) == 1


def test_recording_error_still_returns_the_message(instrumented, llm_server, spans, monkeypatch):
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(anthropic_instr, "_record_message", _boom)
    llm_server.json(message_body())
    with sync_client(llm_server) as client:
        msg = client.messages.create(**create_kwargs())
    assert type(msg) is anthropic.types.Message
    attrs = one_call(spans)
    assert attrs["costtrace.usage.source"] == "unknown"  # flagged, not $0


def test_snapshot_fallback_when_stream_cannot_be_observed(instrumented, llm_server, spans, records, monkeypatch):
    # An SDK whose MessageStream has no _raw_stream: usage comes from the SDK's own snapshot at exit.
    monkeypatch.setattr(anthropic_instr, "_observe_message_stream", lambda *a: None)
    llm_server.sse(stream_events(message_body(usage_body(25, 12))), named=True)
    with sync_client(llm_server) as client, client.messages.stream(**create_kwargs()) as s:
        s.until_done()
    assert records[0].usage == Usage(input_tokens=25, output_tokens=12)
    assert "costtrace.call.incomplete" not in one_call(spans)


# --- instrumentor lifecycle, privacy ----------------------------------------------------------------------------


def test_instrument_twice_is_noop_and_uninstrument_restores(llm_server, spans):
    from anthropic.resources.messages import AsyncMessages, Messages

    originals = (Messages.create, AsyncMessages.create, Messages.stream)
    costtrace.instrument("anthropic")
    costtrace.instrument("anthropic")
    try:
        assert Messages.create.__wrapped__ is originals[0]  # one wrapper, not two
        llm_server.json(message_body())
        with sync_client(llm_server) as client:
            client.messages.create(**create_kwargs())
        assert len(call_spans(spans)) == 1
    finally:
        costtrace.uninstrument("anthropic")
    assert (Messages.create, AsyncMessages.create, Messages.stream) == originals
    llm_server.json(message_body())
    with sync_client(llm_server) as client:
        client.messages.create(**create_kwargs())
    assert len(call_spans(spans)) == 1


def test_raw_wrapper_created_while_instrumented_passes_through_after_uninstrument(llm_server, spans):
    costtrace.instrument("anthropic")
    client = sync_client(llm_server)
    raw = client.messages.with_raw_response  # caches the patched bound method
    costtrace.uninstrument("anthropic")
    llm_server.json(message_body())
    raw.create(**create_kwargs()).parse()
    client.close()
    assert call_spans(spans) == []


CANARY_PROMPT = "canary-prompt-7f3a9"
CANARY_REPLY = "canary-reply-1c2d8"


def _all_span_text(spans: Any) -> str:
    return json.dumps(
        [
            {**dict(s.attributes or {}), "events": [dict(e.attributes or {}) for e in s.events]}
            for s in spans.all()
            if "costtrace.call.id" in (s.attributes or {}) or s.name.startswith("invoke_workflow")
        ],
        default=str,
    )


def test_no_content_captured_by_default(instrumented, llm_server, spans):
    body = message_body(content=[{"type": "text", "text": CANARY_REPLY}])
    prompt = [{"role": "user", "content": CANARY_PROMPT}]
    llm_server.json(body)
    llm_server.sse(stream_events(body), named=True)
    with costtrace.task("t"), sync_client(llm_server) as client:
        client.messages.create(model=MODEL, max_tokens=10, messages=prompt, system=CANARY_PROMPT)
        with client.messages.stream(model=MODEL, max_tokens=10, messages=prompt) as s:
            s.until_done()
    text = _all_span_text(spans)
    assert CANARY_PROMPT not in text
    assert CANARY_REPLY not in text
    assert "test-key" not in text


def test_content_captured_when_opted_in(instrumented, llm_server, spans):
    body = message_body(content=[{"type": "text", "text": CANARY_REPLY}])
    prompt = [{"role": "user", "content": CANARY_PROMPT}]
    llm_server.json(body)
    llm_server.sse(stream_events(body), named=True)
    costtrace.capture_content(True)
    try:
        with sync_client(llm_server) as client:
            client.messages.create(model=MODEL, max_tokens=10, messages=prompt)
            with client.messages.stream(model=MODEL, max_tokens=10, messages=prompt) as s:
                s.until_done()
    finally:
        content._reset_for_tests()
    for span in call_spans(spans):
        assert CANARY_PROMPT in span.attributes["gen_ai.input.messages"]
        assert CANARY_REPLY in span.attributes["gen_ai.output.messages"]
