"""Google GenAI instrumentation: the real ``google-genai`` SDK against a local server speaking the
Gemini Developer API wire format (``POST .../models/{model}:generateContent`` JSON and
``:streamGenerateContent?alt=sse`` with ``data: {json}`` chunks).

Golden accounting (tokens exact, cost equal to genai-prices' to the last Decimal digit), the
transparency matrix (sync/async x generate_content/generate_content_stream), early exits, SDK retries,
errors, key hygiene. Bodies follow the documented ``GenerateContentResponse`` JSON shape.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import socket
import threading
import warnings
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import genai_prices
import pytest
from google import genai
from google.genai import errors, types
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

import costtrace
from costtrace import _internal, content
from costtrace import semconv as sc
from costtrace.instrumentation import google_genai as gg
from costtrace.records import CallRecord
from costtrace.testing import capture
from tests.instrumentation.fake_server import FakeLLMServer

MODEL = "gemini-2.5-flash"
PROMPT = "Summarise ticket T-1 in one line."
ANSWER = "Customer wants a refund."
SDK_VERSION = tuple(int(p) for p in genai.__version__.split(".")[:2])
if SDK_VERSION < (1, 8):  # GoogleGenAIInstrumentor._instruments: older SDKs drop billed token counts
    pytest.skip(
        f"google-genai {genai.__version__} is below the supported 1.8: not instrumented", allow_module_level=True
    )
HAS_RETRY_OPTIONS = hasattr(types, "HttpRetryOptions")
CANARY_KEY = "AIza-canary-9f8e7d6c5b4a"

# google-genai 1.x calls pydantic's deprecated ``.dict()`` in ``GenerateContentResponse.text``: the
# SDK's own warning, with or without costtrace.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


# --- bodies shaped like the Gemini API's -----------------------------------------------------------------


def usage(
    prompt: int = 25,
    candidates: int | None = 12,
    *,
    cached: int | None = None,
    thoughts: int | None = None,
    tool_prompt: int | None = None,
) -> dict[str, Any]:
    u: dict[str, Any] = {"promptTokenCount": prompt}
    total = prompt
    if candidates is not None:
        u["candidatesTokenCount"] = candidates
        total += candidates
    if cached is not None:
        u["cachedContentTokenCount"] = cached
    if thoughts is not None:
        u["thoughtsTokenCount"] = thoughts
        total += thoughts
    if tool_prompt is not None:
        u["toolUsePromptTokenCount"] = tool_prompt
        total += tool_prompt
    u["totalTokenCount"] = total
    return u


def response_body(
    text: str = ANSWER,
    usage_metadata: dict[str, Any] | None = None,
    *,
    finish: str | None = "STOP",
    model_version: str = MODEL,
    parts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts if parts is not None else [{"text": text}]},
        "index": 0,
    }
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": model_version,
        "responseId": "mT9yaOv1HJqAqtsP4NTHqAU",
    }
    if usage_metadata is not None:
        body["usageMetadata"] = usage_metadata
    return body


def stream_chunks(texts: list[str], final_usage: dict[str, Any] | None, *, cumulative: bool = True) -> list[dict]:
    """Chunks as the API streams them: every chunk carries the usage SO FAR (cumulative), the last one
    the final usage and the finish reason."""
    chunks = []
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        u: dict[str, Any] | None = None
        if final_usage is not None and (cumulative or last):
            u = dict(final_usage)
            if not last:  # the running total: output so far
                u["candidatesTokenCount"] = i + 1
                u.pop("thoughtsTokenCount", None)
                u["totalTokenCount"] = u["promptTokenCount"] + i + 1
        chunks.append(response_body(text, u, finish="STOP" if last else None))
    return chunks


ERROR_400 = {"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}
ERROR_429 = {"error": {"code": 429, "message": "Resource has been exhausted.", "status": "RESOURCE_EXHAUSTED"}}
ERROR_503 = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}


# --- helpers --------------------------------------------------------------------------------------------


_open_clients: list[Any] = []


def make_client(url: str, *, vertex: bool = False, retries: int | None = None, api_key: str = "test-key") -> Any:
    """A real client pointed at ``url``; closed after the test (async users call :func:`aclose`)."""
    options: dict[str, Any] = {"base_url": url}
    if retries is not None:
        options["retry_options"] = types.HttpRetryOptions(
            attempts=retries + 1, initial_delay=0.001, max_delay=0.001, jitter=0.0
        )
    client = genai.Client(vertexai=vertex, api_key=api_key, http_options=types.HttpOptions(**options))
    _open_clients.append(client)
    return client


async def aclose(client: Any) -> None:
    """Close the async transport inside its event loop (2.x+; 1.x opens none of its own)."""
    closer = getattr(client.aio, "aclose", None)
    if closer is not None:
        await closer()


class _OpenSpans(SpanProcessor):
    """Spans started and not yet ended while a test of this module runs: a leak detector."""

    def __init__(self) -> None:
        self.active = False
        self.open: dict[int, str] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.active:
            self.open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        self.open.pop(span.context.span_id, None)


_open_spans = _OpenSpans()
trace.get_tracer_provider().add_span_processor(_open_spans)  # the SDK provider tests/conftest.py set


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Closes the test's clients, then checks that every span the test started has ended."""
    _open_spans.open.clear()
    _open_spans.active = True
    yield
    _open_spans.active = False
    while _open_clients:
        closer = getattr(_open_clients.pop(), "close", None)
        if closer is not None:
            closer()
    with warnings.catch_warnings():
        # google-genai 1.x opens a requests.Session per request and never closes it: collect its
        # sockets here, not in another test's unraisable-exception check.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert not _open_spans.open, f"leaked spans: {sorted(_open_spans.open.values())}"


def ref_price(model: str = MODEL, **u: int) -> Decimal:
    return genai_prices.calc_price(genai_prices.Usage(**u), model, provider_id="google").total_price


@pytest.fixture
def instrumented() -> Iterator[gg.GoogleGenAIInstrumentor]:
    inst = gg.GoogleGenAIInstrumentor()
    inst.instrument()
    yield inst
    inst.uninstrument()


@pytest.fixture
def client(llm_server: FakeLLMServer, instrumented: Any) -> Any:
    return make_client(llm_server.url)


def one_call(got: Any) -> CallRecord:
    assert len(got.calls) == 1, got.calls
    return got.calls[0]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- instrumentor -----------------------------------------------------------------------------------------


def test_instrument_twice_is_noop_and_uninstrument_restores_originals() -> None:
    from google.genai import _api_client, models

    originals = {n: models.Models.__dict__[n] for n in ("_generate_content", "_generate_content_stream")}
    async_originals = {n: models.AsyncModels.__dict__[n] for n in ("_generate_content", "_generate_content_stream")}
    assert costtrace.instrument("google_genai") == ["google_genai"]
    assert costtrace.instrument("google_genai") == ["google_genai"]
    wrapped = models.Models.__dict__["_generate_content"]
    assert wrapped is not originals["_generate_content"]
    assert wrapped.__wrapped__ is originals["_generate_content"]  # wrapped once, not twice
    costtrace.uninstrument("google_genai")
    for name, fn in originals.items():
        assert models.Models.__dict__[name] is fn
    for name, fn in async_originals.items():
        assert models.AsyncModels.__dict__[name] is fn
    for name in ("_request_once", "_async_request_once"):  # the retry hooks (2.x+)
        assert not hasattr(getattr(getattr(_api_client, "BaseApiClient", None), name, None), "__wrapped__")


def test_per_request_methods_are_wrapped_at_this_sdk_version(instrumented: Any) -> None:
    """Pins the hook level: one span per billed HTTP request (AFC and continuation send several)."""
    from google.genai import models

    assert gg.GoogleGenAIInstrumentor.per_request_level()
    for cls in (models.Models, models.AsyncModels):
        for name in ("_generate_content", "_generate_content_stream"):
            assert hasattr(cls.__dict__[name], "__wrapped__"), (cls, name)
        for name in ("generate_content", "generate_content_stream"):
            assert not hasattr(cls.__dict__[name], "__wrapped__"), (cls, name)


def test_model_names_normalised_for_pricing() -> None:
    assert gg._model_name("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert gg._model_name("publishers/google/models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert gg._model_name("projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro") == (
        "gemini-2.5-pro"
    )
    assert gg._model_name("google/gemini-2.5-flash") == "gemini-2.5-flash"
    assert gg._model_name("gemini-2.5-flash") == "gemini-2.5-flash"
    assert gg._model_name("tunedModels/1234567890") == "tunedModels/1234567890"


# --- golden accounting ----------------------------------------------------------------------------------


def test_plain_call_span_tokens_and_cost_exact(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage(1200, 300)))
    with capture() as got, costtrace.task("triage"):
        resp = client.models.generate_content(
            model="models/gemini-2.5-flash", contents=PROMPT, config={"max_output_tokens": 512, "temperature": 0}
        )
    assert resp.text == ANSWER
    (span,) = spans.calls()
    a = span.attributes
    assert span.name == "generate_content gemini-2.5-flash"
    assert a[sc.GEN_AI_OPERATION_NAME] == "generate_content"
    assert a[sc.GEN_AI_PROVIDER_NAME] == "gcp.gemini"
    assert a[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert a[sc.GEN_AI_RESPONSE_MODEL] == MODEL
    assert a.get(sc.GEN_AI_RESPONSE_ID) == resp.response_id  # old SDKs drop the Developer API's responseId
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("STOP",)
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 512
    assert a[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert a[sc.SERVER_PORT] == int(llm_server.url.rsplit(":", 1)[1])
    assert sc.GEN_AI_REQUEST_STREAM not in a
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1200
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 300
    assert a[sc.USAGE_SOURCE] == "provider"
    assert span.status.status_code == StatusCode.UNSET
    rec = one_call(got)
    assert rec.cost_usd == ref_price(input_tokens=1200, output_tokens=300)
    assert (
        rec.cost_usd == costtrace.record_llm_call("gcp.gemini", MODEL, 1200, 300, operation="generate_content").cost_usd
    )
    assert got.task("triage").cost_usd == rec.cost_usd


def test_max_tokens_from_a_config_object(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage()))
    client.models.generate_content(
        model=MODEL, contents=PROMPT, config=types.GenerateContentConfig(max_output_tokens=64)
    )
    assert spans.calls()[0].attributes[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64


def test_response_model_version_preferred_for_pricing(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage(100, 10), model_version="models/gemini-2.5-pro"))
    with capture() as got:
        client.models.generate_content(model="gemini-pro-latest-alias", contents=PROMPT)
    a = spans.calls()[0].attributes
    assert a[sc.GEN_AI_REQUEST_MODEL] == "gemini-pro-latest-alias"
    assert a[sc.GEN_AI_RESPONSE_MODEL] == "gemini-2.5-pro"
    assert one_call(got).cost_usd == ref_price("gemini-2.5-pro", input_tokens=100, output_tokens=10)


def test_stream_cumulative_usage_counted_once_the_last(llm_server, client, spans) -> None:
    final = usage(1200, 300)
    llm_server.sse(stream_chunks(["Customer ", "wants ", "a refund."], final))
    with capture() as got:
        stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        texts = [chunk.text for chunk in stream]
    assert texts == ["Customer ", "wants ", "a refund."]
    a = spans.calls()[0].attributes
    assert a[sc.GEN_AI_REQUEST_STREAM] is True
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1200  # not 3 x 1200
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 300  # the last running total, not 1 + 2 + 300
    assert a[sc.USAGE_SOURCE] == "provider"
    assert sc.CALL_INCOMPLETE not in a
    assert one_call(got).cost_usd == ref_price(input_tokens=1200, output_tokens=300)


def test_streamed_and_non_streamed_calls_with_equal_usage_cost_the_same(llm_server, client) -> None:
    final = usage(5000, 800, cached=4000, thoughts=150)
    llm_server.json(response_body(usage_metadata=final))
    llm_server.sse(stream_chunks(["a", "b", "c", "d"], final))
    with capture() as got:
        client.models.generate_content(model=MODEL, contents=PROMPT)
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    plain, streamed = got.calls
    assert plain.usage == streamed.usage
    assert (
        plain.cost_usd == streamed.cost_usd == ref_price(input_tokens=5000, cache_read_tokens=4000, output_tokens=950)
    )


def test_cached_content_tokens_priced_as_cache_reads(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage(10_000, 200, cached=8192)))
    with capture() as got:
        client.models.generate_content(model=MODEL, contents=PROMPT, config={"cached_content": "cachedContents/abc"})
    a = spans.calls()[0].attributes
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10_000  # all input, cached included
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 8192
    rec = one_call(got)
    assert rec.cost_usd == ref_price(input_tokens=10_000, cache_read_tokens=8192, output_tokens=200)
    assert rec.cost.cache_savings_usd > 0


def test_thinking_tokens_priced_as_output(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage(400, 120, thoughts=900)))
    with capture() as got:
        client.models.generate_content(model=MODEL, contents=PROMPT)
    a = spans.calls()[0].attributes
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 1020  # candidates + thoughts
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 900
    assert one_call(got).cost_usd == ref_price(input_tokens=400, output_tokens=1020)


def test_tool_use_prompt_tokens_count_as_input(llm_server, client, spans) -> None:
    call_part = {"functionCall": {"name": "get_order", "args": {"order_id": "T-1"}}}
    llm_server.json(response_body(usage_metadata=usage(300, 20, tool_prompt=75), parts=[call_part]))
    tool = {"function_declarations": [{"name": "get_order", "description": "Look an order up."}]}
    with capture() as got:
        resp = client.models.generate_content(model=MODEL, contents=PROMPT, config={"tools": [tool]})
    assert resp.function_calls[0].name == "get_order"
    assert spans.calls()[0].attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 375
    assert one_call(got).cost_usd == ref_price(input_tokens=375, output_tokens=20)


def test_automatic_function_calling_each_request_is_its_own_priced_call(llm_server, client, spans) -> None:
    """AFC sends two requests for one ``generate_content``; the response the user gets carries the
    second's usage only. costtrace records both, each priced on its own."""

    def get_order(order_id: str) -> str:
        """Look an order up."""
        return "refund requested"

    get_order.__annotations__ = {"order_id": str, "return": str}  # real types, for 1.x's AFC parser

    call_part = {"functionCall": {"name": "get_order", "args": {"order_id": "T-1"}}}
    llm_server.json(response_body(usage_metadata=usage(300, 20), parts=[call_part], finish="STOP"))
    llm_server.json(response_body(usage_metadata=usage(350, 12)))
    with capture() as got, costtrace.task("afc"):
        resp = client.models.generate_content(model=MODEL, contents=PROMPT, config={"tools": [get_order]})
    assert resp.text == ANSWER
    assert resp.usage_metadata.prompt_token_count == 350  # the SDK shows the last request only
    assert len(llm_server.requests) == 2
    assert [s.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] for s in spans.calls()] == [300, 350]
    first, second = got.calls
    assert got.task("afc").cost_usd == first.cost_usd + second.cost_usd
    assert first.cost_usd + second.cost_usd == ref_price(input_tokens=300, output_tokens=20) + ref_price(
        input_tokens=350, output_tokens=12
    )


def test_vertex_client_is_provider_vertex_ai(llm_server, instrumented, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage(100, 10)))
    client = make_client(llm_server.url, vertex=True)
    with capture() as got:
        client.models.generate_content(model="publishers/google/models/gemini-2.5-flash", contents=PROMPT)
    a = spans.calls()[0].attributes
    assert a[sc.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    assert a[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert one_call(got).cost_usd == ref_price(input_tokens=100, output_tokens=10)


def test_async_calls_account_like_sync_ones(llm_server, client, spans) -> None:
    final = usage(1200, 300, cached=1000)
    llm_server.json(response_body(usage_metadata=final))
    llm_server.sse(stream_chunks(["a", "b"], final))

    async def main() -> list[str]:
        await client.aio.models.generate_content(model=MODEL, contents=PROMPT)
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        texts = [c.text async for c in stream]
        await aclose(client)
        return texts

    with capture() as got:
        assert run(main()) == ["a", "b"]
    expected = ref_price(input_tokens=1200, cache_read_tokens=1000, output_tokens=300)
    assert [c.cost_usd for c in got.calls] == [expected, expected]
    assert [s.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] for s in spans.calls()] == [300, 300]


def test_stream_without_usage_is_estimated_from_text(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["Customer wants ", "a refund."], None))
    with capture() as got:
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    rec = one_call(got)
    assert rec.usage.source == "estimated"
    assert rec.usage.input_tokens > 0 and rec.usage.output_tokens > 0
    assert rec.cost_usd is not None and rec.cost_usd > 0
    assert spans.calls()[0].attributes[sc.USAGE_SOURCE] == "estimated"


def test_response_without_usage_is_estimated_not_zero(llm_server, client) -> None:
    llm_server.json(response_body())
    with capture() as got:
        client.models.generate_content(model=MODEL, contents=PROMPT)
    rec = one_call(got)
    assert rec.usage.source == "estimated" and rec.usage.total_tokens > 0
    assert rec.cost_usd is not None and rec.cost_usd > 0


# --- errors -----------------------------------------------------------------------------------------------


def test_error_400_is_a_failed_call_with_usage_unknown(llm_server, client, spans) -> None:
    llm_server.json(ERROR_400, status=400)
    with capture() as got, costtrace.task("t"), pytest.raises(errors.ClientError):
        client.models.generate_content(model=MODEL, contents=PROMPT)
    (span,) = spans.calls()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == "ClientError"
    assert span.attributes[sc.USAGE_SOURCE] == "unknown"
    assert span.attributes[sc.CALL_PRICED] is False
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    rec = one_call(got)
    assert rec.cost_usd is None and rec.error_type == "ClientError"  # unknown, never $0
    assert got.task("t").failed_calls == 1


def test_stream_error_before_first_chunk(llm_server, client, spans) -> None:
    llm_server.json(ERROR_400, status=400)
    with capture() as got, pytest.raises(errors.ClientError):
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    (span,) = spans.calls()
    assert span.attributes[sc.ERROR_TYPE] == "ClientError"
    assert one_call(got).usage.source == "unknown"


def _failure(fn: Any) -> BaseException:
    try:
        fn()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


@pytest.mark.parametrize("status,body", [(400, ERROR_400), (503, ERROR_503), (404, {"error": "not json-ish"})])
@pytest.mark.parametrize("streaming", [False, True])
def test_exceptions_identical_to_the_bare_sdk(llm_server, status, body, streaming) -> None:
    def call() -> Any:
        client = make_client(llm_server.url)
        if streaming:
            return list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
        return client.models.generate_content(model=MODEL, contents=PROMPT)

    llm_server.json(body, status=status)
    bare = _failure(call)
    costtrace.instrument("google_genai")
    try:
        llm_server.json(body, status=status)
        ours = _failure(call)
    finally:
        costtrace.uninstrument("google_genai")
    assert type(ours) is type(bare)
    assert str(ours) == str(bare)
    assert type(ours.__cause__) is type(bare.__cause__)
    assert getattr(ours, "code", None) == getattr(bare, "code", None)


def test_connection_error_identical_to_the_bare_sdk() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    url = f"http://127.0.0.1:{port}"

    def call() -> Any:
        return make_client(url).models.generate_content(model=MODEL, contents=PROMPT)

    bare = _failure(call)
    costtrace.instrument("google_genai")
    try:
        ours = _failure(call)
    finally:
        costtrace.uninstrument("google_genai")
    assert type(ours) is type(bare) and str(ours) == str(bare)
    assert type(ours.__cause__) is type(bare.__cause__)


# --- SDK retries ------------------------------------------------------------------------------------------


needs_retry_options = pytest.mark.skipif(
    not HAS_RETRY_OPTIONS, reason="google-genai < 1.21 has no HttpRetryOptions: the SDK never re-sends a request"
)


@needs_retry_options
def test_sdk_retries_are_visible_on_the_call_and_the_task(llm_server, instrumented, spans) -> None:
    llm_server.json(ERROR_429, status=429)
    llm_server.json(ERROR_503, status=503)
    llm_server.json(response_body(usage_metadata=usage(100, 10)))
    client = make_client(llm_server.url, retries=3)
    with capture() as got, costtrace.task("t"):
        resp = client.models.generate_content(model=MODEL, contents=PROMPT)
    assert resp.text == ANSWER and len(llm_server.requests) == 3
    (span,) = spans.calls()
    assert span.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 2
    assert span.status.status_code == StatusCode.UNSET
    events = [e for e in spans.one_task("t").events if e.name == sc.EVENT_SDK_RETRY]
    assert [e.attributes[sc.EVENT_ATTR_REASON] for e in events] == ["rate_limit", "server_error"]
    assert one_call(got).cost_usd == ref_price(input_tokens=100, output_tokens=10)
    assert got.task("t").failed_calls == 0


@needs_retry_options
def test_stream_sdk_retry_then_success(llm_server, instrumented, spans) -> None:
    llm_server.json(ERROR_503, status=503)
    llm_server.sse(stream_chunks(["a", "b"], usage(100, 10)))
    client = make_client(llm_server.url, retries=2)
    assert [c.text for c in client.models.generate_content_stream(model=MODEL, contents=PROMPT)] == ["a", "b"]
    (span,) = spans.calls()
    assert span.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 1
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 10


@needs_retry_options
def test_async_sdk_retry_then_success(llm_server, instrumented, spans) -> None:
    llm_server.json(ERROR_429, status=429)
    llm_server.json(response_body(usage_metadata=usage(100, 10)))
    llm_server.json(ERROR_503, status=503)
    llm_server.sse(stream_chunks(["a"], usage(100, 10)))
    client = make_client(llm_server.url, retries=2)

    async def main() -> None:
        await client.aio.models.generate_content(model=MODEL, contents=PROMPT)
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        [c async for c in stream]
        await aclose(client)

    run(main())
    assert [s.attributes[sc.HTTP_REQUEST_RESEND_COUNT] for s in spans.calls()] == [1, 1]


@needs_retry_options
def test_retries_exhausted_is_one_failed_call(llm_server, instrumented, spans) -> None:
    for _ in range(3):
        llm_server.json(ERROR_503, status=503)
    client = make_client(llm_server.url, retries=2)
    with capture() as got, pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents=PROMPT)
    (span,) = spans.calls()
    assert span.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 2
    assert span.attributes[sc.ERROR_TYPE] == "ServerError"
    assert one_call(got).usage.source == "unknown"


def test_no_resend_counted_without_retries(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage()))
    client.models.generate_content(model=MODEL, contents=PROMPT)
    assert sc.HTTP_REQUEST_RESEND_COUNT not in spans.calls()[0].attributes


# --- transparency -----------------------------------------------------------------------------------------


def _dump(obj: Any) -> Any:
    data = obj.model_dump()
    data.pop("sdk_http_response", None)  # carries the server's Date header
    return data


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("is_async", [False, True])
def test_same_return_types_and_values_as_the_bare_sdk(llm_server, streaming, is_async) -> None:
    def script() -> None:
        if streaming:
            llm_server.sse(stream_chunks(["Customer ", "wants a refund."], usage(100, 10)))
        else:
            llm_server.json(response_body(usage_metadata=usage(100, 10)))

    def call() -> tuple[type, Any]:
        client = make_client(llm_server.url)
        if not is_async:
            if not streaming:
                resp = client.models.generate_content(model=MODEL, contents=PROMPT)
                return type(resp), (_dump(resp), resp.text, resp.candidates)
            stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
            first = next(stream)
            rest = list(stream)
            return type(stream), [(type(c), _dump(c), c.text) for c in [first, *rest]]

        async def main() -> tuple[type, Any]:
            try:
                if not streaming:
                    resp = await client.aio.models.generate_content(model=MODEL, contents=PROMPT)
                    return type(resp), (_dump(resp), resp.text, resp.candidates)
                stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
                return type(stream), [(type(c), _dump(c), c.text) async for c in stream]
            finally:
                await aclose(client)

        return run(main())

    script()
    bare = call()
    costtrace.instrument("google_genai")
    try:
        script()
        ours = call()
    finally:
        costtrace.uninstrument("google_genai")
    assert ours == bare
    assert ours[0] in (types.GenerateContentResponse, type(x for x in ()), type(_agen()))


async def _agen() -> Any:
    yield None


def test_sync_stream_is_still_a_generator(llm_server, client) -> None:
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))
    stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
    assert inspect.isgenerator(stream)
    assert iter(stream) is stream
    assert next(stream).text == "a"
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)


def test_async_stream_method_still_a_coroutine_function(instrumented) -> None:
    client = genai.Client(api_key="test-key")
    assert inspect.iscoroutinefunction(client.aio.models.generate_content)
    assert inspect.iscoroutinefunction(client.aio.models.generate_content_stream)
    assert inspect.signature(client.models.generate_content) == inspect.signature(
        genai.models.Models.generate_content.__get__(client.models)
    )


def test_internal_error_at_start_leaves_the_call_untouched(llm_server, client, monkeypatch, spans) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("costtrace bug")

    monkeypatch.setattr(gg, "_start_call", broken)
    llm_server.json(response_body(usage_metadata=usage()))
    assert client.models.generate_content(model=MODEL, contents=PROMPT).text == ANSWER
    assert spans.calls() == []
    assert _internal.internal_error_counts()["google_genai.start"] == 1


def test_user_exception_while_iterating_wins_over_ours(llm_server, client, monkeypatch, spans) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    def broken(self: Any, *args: Any) -> Any:
        raise RuntimeError("costtrace bug")

    monkeypatch.setattr(gg._StreamAccumulator, "finish", broken)
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))
    stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
    with pytest.raises(ValueError, match="user bug"):
        for _chunk in stream:
            raise ValueError("user bug")
    del stream
    gc.collect()
    (span,) = spans.calls()  # still ended exactly once, flagged
    assert span.attributes[sc.CALL_INCOMPLETE] is True
    assert _internal.internal_error_counts()["instrumentation.stream.finish"] == 1


def test_accumulator_error_leaves_chunks_untouched(llm_server, client, monkeypatch, spans) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    def broken(self: Any, *args: Any) -> Any:
        raise RuntimeError("costtrace bug")

    monkeypatch.setattr(gg._StreamAccumulator, "on_item", broken)
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))
    texts = [c.text for c in client.models.generate_content_stream(model=MODEL, contents=PROMPT)]
    assert texts == ["a", "b", "c"]
    assert len(spans.calls()) == 1
    assert _internal.internal_error_counts()["instrumentation.stream.item"] == 3


def test_async_user_exception_while_iterating_wins(llm_server, client, monkeypatch, spans) -> None:
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    def broken(self: Any, *args: Any) -> Any:
        raise RuntimeError("costtrace bug")

    monkeypatch.setattr(gg._StreamAccumulator, "finish", broken)
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))

    async def main() -> None:
        try:
            stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
            async for _ in stream:
                raise ValueError("user bug")
        finally:
            await aclose(client)

    with pytest.raises(ValueError, match="user bug"):
        run(main())
    gc.collect()
    assert len(spans.calls()) == 1


# --- early exit -------------------------------------------------------------------------------------------


def _assert_one_incomplete(spans: Any, got: Any, *, output_tokens: int | None) -> CallRecord:
    gc.collect()
    (span,) = spans.calls()
    assert span.attributes[sc.CALL_INCOMPLETE] is True
    rec = one_call(got)
    if output_tokens is None:
        assert rec.usage.source == "unknown"
    else:
        # The last running total seen: provider numbers, but a lower bound of the bill -> estimated.
        assert rec.usage.source == "estimated"
        assert rec.usage.input_tokens == 100 and rec.usage.output_tokens == output_tokens
        assert rec.cost_usd == ref_price(input_tokens=100, output_tokens=output_tokens)
    return rec


def test_break_after_first_chunk(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))
    with capture() as got:
        stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        for _chunk in stream:
            break
        stream.close()
        _assert_one_incomplete(spans, got, output_tokens=1)


def test_stream_dropped_unclosed(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))
    with capture() as got:
        stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        next(stream)
        next(stream)
        del stream
        _assert_one_incomplete(spans, got, output_tokens=2)


def test_break_after_the_final_chunk_keeps_provider_usage(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["a", "b"], usage(100, 10)))
    with capture() as got:
        stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        next(stream)
        next(stream)  # the final chunk (finish reason + final usage), StopIteration never reached
        stream.close()
    rec = one_call(got)
    assert rec.usage.source == "provider" and rec.usage.output_tokens == 10


def test_server_cuts_the_stream(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)), cut_after=2)
    with capture() as got:
        texts = [c.text for c in client.models.generate_content_stream(model=MODEL, contents=PROMPT)]
    assert texts == ["a", "b"]  # the SDK itself sees a normal end
    _assert_one_incomplete(spans, got, output_tokens=2)


def test_server_cuts_a_stream_without_usage_estimates_it(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["Customer wants", " a refund", "."], None), cut_after=2)
    with capture() as got:
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    gc.collect()
    assert spans.calls()[0].attributes[sc.CALL_INCOMPLETE] is True
    rec = one_call(got)
    assert rec.usage.source == "estimated" and rec.usage.output_tokens > 0


def test_async_break_and_drop(llm_server, client, spans) -> None:
    llm_server.sse(stream_chunks(["a", "b", "c"], usage(100, 10)))

    async def main() -> None:
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        async for _ in stream:
            break
        await aclose(client)

    with capture() as got:
        run(main())  # asyncio.run finalises the abandoned async generators
        _assert_one_incomplete(spans, got, output_tokens=1)


class _StallingSSEServer:
    """Sends ``events`` then holds the connection open until released: a stream still in flight."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.release = threading.Event()
        payload = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                release.wait(600)  # until the test closes the server; only bounds a hang
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def test_cancelled_task_mid_stream(instrumented, spans) -> None:
    server = _StallingSSEServer(stream_chunks(["a", "b", "c"], usage(100, 10))[:1])
    got_first = asyncio.Event

    async def main() -> None:
        first = got_first()
        client = make_client(server.url)

        async def consume() -> None:
            stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
            async for _ in stream:
                first.set()  # the next __anext__ waits on the socket: cancelled there

        task = asyncio.create_task(consume())
        await first.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await aclose(client)

    try:
        with capture() as got:
            run(main())
            gc.collect()
            (span,) = spans.calls()
            assert span.attributes[sc.CALL_INCOMPLETE] is True
            assert span.attributes[sc.ERROR_TYPE] == "CancelledError"
            rec = one_call(got)
            assert rec.usage.source == "estimated" and rec.usage.output_tokens == 1
    finally:
        server.close()


# --- privacy ---------------------------------------------------------------------------------------------


def _everything_exported(spans: Any, caplog: Any, metric_points: Any) -> str:
    out = []
    for span in spans.all():
        out.append(span.name)
        out.append(repr(dict(span.attributes or {})))
        out.append(repr(span.status.description))
        out.extend(repr((e.name, dict(e.attributes or {}))) for e in span.events)
    out.append(caplog.text)
    out.append(repr(metric_points.collect()))
    return "\n".join(out)


def test_no_api_key_or_content_anywhere(llm_server, instrumented, spans, caplog, metric_points) -> None:
    caplog.set_level(logging.DEBUG)
    canary_prompt = "CANARY-PROMPT-7c1d"
    canary_answer = "CANARY-ANSWER-2b9e"
    client = make_client(llm_server.url, api_key=CANARY_KEY, retries=1 if HAS_RETRY_OPTIONS else None)
    if HAS_RETRY_OPTIONS:
        llm_server.json(ERROR_429, status=429)
    llm_server.json(response_body(canary_answer, usage(100, 10)))
    llm_server.sse(stream_chunks([canary_answer, "!"], usage(100, 10)))
    llm_server.json(ERROR_400, status=400)
    with costtrace.task("t"):
        client.models.generate_content(model=MODEL, contents=canary_prompt)
        list(client.models.generate_content_stream(model=MODEL, contents=canary_prompt))
        with pytest.raises(errors.ClientError):
            client.models.generate_content(model=MODEL, contents=canary_prompt)
    assert any(CANARY_KEY in str(r.headers) for r in llm_server.requests)  # the SDK did send it
    exported = _everything_exported(spans, caplog, metric_points)
    for needle in (CANARY_KEY, "AIza", "key=", canary_prompt, canary_answer):
        assert needle not in exported, needle


def test_content_captured_only_when_opted_in(llm_server, client, spans) -> None:
    llm_server.json(response_body("the answer", usage(100, 10)))
    llm_server.sse(stream_chunks(["streamed ", "answer"], usage(100, 10)))
    costtrace.capture_content(True, max_chars=100, redact=lambda s: s.replace("secret", "[x]"))
    try:
        client.models.generate_content(model=MODEL, contents="a secret question")
        list(
            client.models.generate_content_stream(
                model=MODEL, contents=["q1", {"role": "user", "parts": [{"text": "q2"}]}]
            )
        )
    finally:
        content._reset_for_tests()
    plain, streamed = spans.calls()
    assert plain.attributes[sc.GEN_AI_INPUT_MESSAGES] == "a [x] question"
    assert plain.attributes[sc.GEN_AI_OUTPUT_MESSAGES] == "the answer"
    assert streamed.attributes[sc.GEN_AI_INPUT_MESSAGES] == "q1\nq2"
    assert streamed.attributes[sc.GEN_AI_OUTPUT_MESSAGES] == "streamed answer"


# --- another GenAI instrumentation installed too ------------------------------------------------------------


def test_with_the_official_otel_google_genai_instrumentation_cost_counts_once(llm_server, spans) -> None:
    """opentelemetry-instrumentation-google-genai wraps the public methods: its span is the parent of
    costtrace's per-request span. Tokens appear on both spans (each instrumentation's own reading);
    cost is on costtrace's span only and the task counts the call once."""
    official = pytest.importorskip("opentelemetry.instrumentation.google_genai")
    inst = official.GoogleGenAiSdkInstrumentor()
    inst.instrument()
    if not inst.is_instrumented_by_opentelemetry:
        pytest.skip(f"the official instrumentation does not support google-genai {genai.__version__}")
    costtrace.instrument("google_genai")
    try:
        llm_server.json(response_body(usage_metadata=usage(1200, 300)))
        with capture() as got, costtrace.task("t"):
            resp = make_client(llm_server.url).models.generate_content(model=MODEL, contents=PROMPT)
    finally:
        costtrace.uninstrument("google_genai")
        inst.uninstrument()
    assert resp.text == ANSWER
    ours = [s for s in spans.calls() if sc.CALL_ID in s.attributes]
    theirs = [s for s in spans.calls() if sc.CALL_ID not in s.attributes]
    assert len(ours) == 1 and len(theirs) == 1
    assert ours[0].parent is not None and ours[0].parent.span_id == theirs[0].context.span_id
    assert not any(k.startswith("costtrace.") for k in theirs[0].attributes)
    expected = ref_price(input_tokens=1200, output_tokens=300)
    assert one_call(got).cost_usd == expected
    assert got.task("t").cost_usd == expected  # counted once
    assert spans.one_task("t").attributes[sc.TASK_LLM_CALLS] == 1


needs_continuation = pytest.mark.skipif(
    not hasattr(types.FinishReason, "CONTINUATION"), reason="automatic continuation arrived in google-genai 3.x"
)


@needs_continuation
def test_continuation_hops_are_separate_priced_calls(llm_server, client, spans) -> None:
    """3.x follows ``continuation_token`` with a second request and merges the two responses (usage
    summed). costtrace prices each request on its own; the totals agree."""
    hop = response_body("Customer wants ", usage(1000, 200), finish="CONTINUATION")
    hop["candidates"][0]["continuationToken"] = "Y29udGludWU="  # base64, as the API sends bytes
    llm_server.json(hop)
    llm_server.json(response_body("a refund.", usage(1200, 100)))
    with capture() as got:
        resp = client.models.generate_content(model=MODEL, contents=PROMPT)
    assert len(llm_server.requests) == 2
    assert resp.usage_metadata.prompt_token_count == 2200  # the SDK's merged response
    assert [s.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] for s in spans.calls()] == [1000, 1200]
    assert sum(c.cost_usd for c in got.calls) == ref_price(input_tokens=1000, output_tokens=200) + ref_price(
        input_tokens=1200, output_tokens=100
    )


@pytest.mark.skipif(
    "should_return_http_response" not in types.GenerateContentConfig.model_fields,
    reason="should_return_http_response arrived in google-genai 1.3x",
)
def test_raw_http_response_mode_still_priced(llm_server, client, spans) -> None:
    llm_server.json(response_body(usage_metadata=usage(1200, 300)))
    with capture() as got:
        resp = client.models.generate_content(
            model=MODEL, contents=PROMPT, config=types.GenerateContentConfig(should_return_http_response=True)
        )
    assert resp.usage_metadata is None and json.loads(resp.sdk_http_response.body)["usageMetadata"]
    rec = one_call(got)
    assert rec.usage.source == "provider" and rec.usage.input_tokens == 1200
    assert rec.cost_usd == ref_price(input_tokens=1200, output_tokens=300)
