"""langchain-openai ``ChatOpenAI(base_url=...)`` with ``costtrace.instrument()``: every request it sends is one
exactly priced call on the task, streams included (langchain asks for no stream usage with a custom base URL,
so costtrace asks for it and hides the extra chunk: the app's chunks are the ones it gets without costtrace).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.frameworks.conftest import need

need("langchain_openai")

from langchain_core.messages import AIMessageChunk  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from pydantic import BaseModel  # noqa: E402

import costtrace  # noqa: E402
from costtrace import semconv as sc  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from tests.frameworks.accounting import assert_exact, stream_twice  # noqa: E402
from tests.instrumentation.test_openai import (  # noqa: E402
    MODEL,
    RESP_MODEL,
    SECRET,
    TOOL_CALL,
    chat_body,
    chat_chunks,
    responses_body,
    responses_events,
    responses_usage,
    usage_body,
)

PARTS = ["Hello", ", team", "!"]


@pytest.fixture
def instrumented() -> Iterator[None]:
    costtrace.instrument()
    yield
    costtrace.uninstrument()


def chat_model(server: Any, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("max_retries", 0)
    return ChatOpenAI(model=MODEL, base_url=server.url + "/v1", api_key=SECRET, **kwargs)  # type: ignore[arg-type]


def test_invoke(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(1200, 150)))
    with capture() as got, costtrace.task("lc-invoke"):
        msg = chat_model(llm_server).invoke("Say hello to the team.")
    assert msg.content == "Hello, team!"
    assert msg.usage_metadata is not None and msg.usage_metadata["input_tokens"] == 1200
    assert_exact(got, spans, llm_server, "lc-invoke", [(RESP_MODEL, 1200, 150)])


def test_ainvoke(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(900, 80)))

    async def main() -> Any:
        async with costtrace.task("lc-ainvoke"):
            return await chat_model(llm_server).ainvoke("Say hello to the team.")

    with capture() as got:
        msg = asyncio.run(main())
    assert msg.content == "Hello, team!"
    assert_exact(got, spans, llm_server, "lc-ainvoke", [(RESP_MODEL, 900, 80)])


def test_batch_each_request_is_one_call_on_the_task(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(100, 10)))
    llm_server.json(chat_body(usage_body(200, 20)))
    llm_server.json(chat_body(usage_body(300, 30)))
    with capture() as got, costtrace.task("lc-batch"):
        out = chat_model(llm_server).batch(["one", "two", "three"])  # a thread pool, context copied
    assert [m.content for m in out] == ["Hello, team!"] * 3
    expected = [(RESP_MODEL, 100, 10), (RESP_MODEL, 200, 20), (RESP_MODEL, 300, 30)]
    assert_exact(got, spans, llm_server, "lc-batch", expected)


class Ticket(BaseModel):
    priority: str
    team: str


def test_with_structured_output(llm_server: Any, instrumented: None, spans: Any) -> None:
    content = json.dumps({"priority": "high", "team": "billing"})
    llm_server.json(chat_body(usage_body(310, 12), content=content))
    with capture() as got, costtrace.task("lc-structured"):
        ticket = chat_model(llm_server).with_structured_output(Ticket).invoke("Route: refund not received")
    assert ticket == Ticket(priority="high", team="billing")
    assert "response_format" in llm_server.requests[0].body  # json_schema: chat.completions.parse
    assert_exact(got, spans, llm_server, "lc-structured", [(RESP_MODEL, 310, 12)])


def test_tool_calls_then_the_tool_result(llm_server: Any, instrumented: None, spans: Any) -> None:
    def get_weather(location: str) -> str:
        """The weather at a location."""
        return "sunny"

    llm_server.json(chat_body(usage_body(82, 17), content=None, finish="tool_calls", tool_calls=[TOOL_CALL]))
    llm_server.json(chat_body(usage_body(120, 9), content="Sunny in Paris."))
    model = chat_model(llm_server).bind_tools([get_weather])
    with capture() as got, costtrace.task("lc-tools"):
        first = model.invoke("Weather in Paris?")
        call = first.tool_calls[0]
        answer = model.invoke(
            ["Weather in Paris?", first, {"role": "tool", "content": "sunny", "tool_call_id": call["id"]}]
        )
    assert call["name"] == "get_weather" and answer.content == "Sunny in Paris."
    assert llm_server.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
    assert_exact(got, spans, llm_server, "lc-tools", [(RESP_MODEL, 82, 17), (RESP_MODEL, 120, 9)])


def test_max_retries_resends_are_on_the_call(llm_server: Any, instrumented: None, spans: Any) -> None:
    """langchain's ``max_retries`` is the OpenAI client's: re-sends inside one call, each one visible."""
    too_many = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    llm_server.json(too_many, status=429, headers={"retry-after-ms": "1"})
    llm_server.json(chat_body(usage_body(400, 40)))
    with capture() as got, costtrace.task("lc-retry"):
        chat_model(llm_server, max_retries=2).invoke("hello")
    assert len(llm_server.requests) == 2
    (rec,) = got.calls
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (400, 40)
    (span,) = spans.calls()
    assert span.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 1
    task_span = spans.one_task("lc-retry")
    events = [e for e in task_span.events if e.name == sc.EVENT_SDK_RETRY]
    assert [e.attributes[sc.EVENT_ATTR_REASON] for e in events] == ["rate_limit"]
    summary = got.task("lc-retry")
    assert summary.llm_calls == 1 and summary.cost_complete


# --- streams ------------------------------------------------------------------------------------------------


def _dump(chunks: list[AIMessageChunk]) -> list[dict[str, Any]]:
    """The chunks as data; langchain names each run with a fresh id (``lc_run--<uuid>``), the same in one run."""
    out = [c.model_dump() for c in chunks]
    run_ids = {d["id"] for d in out if str(d["id"]).startswith("lc_run--")}
    assert len(run_ids) <= 1, run_ids
    return [{**d, "id": "lc_run"} if d["id"] in run_ids else d for d in out]


def test_stream_usage_exact_and_chunks_unchanged(llm_server: Any, spans: Any) -> None:
    model = chat_model(llm_server)
    plain, seen, got = stream_twice(
        llm_server, lambda: list(model.stream("Say hello")), "lc-stream", usage_body(1200, 300), PARTS
    )
    assert "".join(str(c.content) for c in seen) == "Hello, team!"
    assert _dump(seen) == _dump(plain)
    assert_exact(got, spans, llm_server, "lc-stream", [(RESP_MODEL, 1200, 300)])


def test_astream_usage_exact_and_chunks_unchanged(llm_server: Any, spans: Any) -> None:
    model = chat_model(llm_server)

    async def consume() -> list[Any]:
        return [c async for c in model.astream("Say hello")]

    plain, seen, got = stream_twice(
        llm_server, lambda: asyncio.run(consume()), "lc-astream", usage_body(700, 90), PARTS
    )
    assert _dump(seen) == _dump(plain)
    assert_exact(got, spans, llm_server, "lc-astream", [(RESP_MODEL, 700, 90)])


def test_stream_usage_the_app_asked_for_is_counted_once_and_seen(
    llm_server: Any, instrumented: None, spans: Any
) -> None:
    """Guard (passes before the fix): ``stream_usage=True`` is the app's own request; it sees the usage."""
    llm_server.sse(chat_chunks(PARTS, usage=usage_body(500, 60)), done=True)
    with capture() as got, costtrace.task("lc-stream-usage"):
        chunks = list(chat_model(llm_server, stream_usage=True).stream("Say hello"))
    total = sum(chunks[1:], chunks[0])
    assert total.usage_metadata is not None and total.usage_metadata["input_tokens"] == 500
    assert_exact(got, spans, llm_server, "lc-stream-usage", [(RESP_MODEL, 500, 60)])


def test_with_retry_is_a_task_retry(llm_server: Any, instrumented: None, spans: Any) -> None:
    """langchain's ``.with_retry()`` calls the model again after an error: the failed call is a failed attempt."""
    llm_server.json({"error": {"message": "The server had an error", "type": "server_error"}}, status=500)
    llm_server.json(chat_body(usage_body(400, 40)))
    model = chat_model(llm_server).with_retry(stop_after_attempt=2, wait_exponential_jitter=False)
    with capture() as got, costtrace.task("lc-with-retry"):
        assert model.invoke("hello").content == "Hello, team!"
    failed, ok = got.calls
    assert failed.error_type == "InternalServerError" and ok.error_type is None
    summary = got.task("lc-with-retry")
    assert (summary.llm_calls, summary.failed_calls, summary.attempts, summary.retries) == (2, 1, 2, 1)
    assert summary.first_pass is False


def test_responses_api_invoke_and_stream(llm_server: Any, spans: Any) -> None:
    """``use_responses_api=True``: langchain sends through ``client.with_raw_response.responses.create``."""
    events = responses_events(PARTS, responses_usage(600, 35), model=RESP_MODEL)
    llm_server.sse(events, named=True)
    plain = list(chat_model(llm_server, use_responses_api=True).stream("Say hello"))
    costtrace.instrument()
    try:
        model = chat_model(llm_server, use_responses_api=True)
        llm_server.json(responses_body(responses_usage(500, 25), model=RESP_MODEL))
        llm_server.sse(events, named=True)
        with capture() as got, costtrace.task("lc-responses"):
            assert model.invoke("Say hello").text == "Hi team."
            seen = list(model.stream("Say hello"))
    finally:
        costtrace.uninstrument()
    assert _dump(seen) == _dump(plain)
    del llm_server.requests[0]
    assert {r.path for r in llm_server.requests} == {"/v1/responses"}
    assert_exact(got, spans, llm_server, "lc-responses", [(RESP_MODEL, 500, 25), (RESP_MODEL, 600, 35)])


def test_stream_with_response_headers_goes_through_the_raw_response(llm_server: Any, spans: Any) -> None:
    """``include_response_headers=True``: the stream comes from ``with_raw_response.create(...).parse()``."""

    # A model made after instrument(): the SDK caches ``with_raw_response`` on first use, with the methods of
    # that moment (see the report on issue 11: one made before is recorded by the HTTP fallback instead).
    def consume() -> list[Any]:
        return list(chat_model(llm_server, include_response_headers=True).stream("Say hello"))

    plain, seen, got = stream_twice(llm_server, consume, "lc-raw", usage_body(90, 9), PARTS)

    def without_headers(chunks: list[Any]) -> list[dict[str, Any]]:  # Date and ports differ between the runs
        return [{**d, "response_metadata": {**d["response_metadata"], "headers": None}} for d in _dump(chunks)]

    assert without_headers(seen) == without_headers(plain)
    assert_exact(got, spans, llm_server, "lc-raw", [(RESP_MODEL, 90, 9)])


@pytest.mark.filterwarnings(
    "ignore:Pydantic serializer warnings:UserWarning"
)  # langchain's own, with or without costtrace
def test_structured_output_stream(llm_server: Any, spans: Any) -> None:
    """A stream with ``response_format``: langchain uses the SDK's ``beta.chat.completions.stream`` helper."""
    content = json.dumps({"priority": "high", "team": "billing"})
    parts = [content[:10], content[10:]]
    model = chat_model(llm_server).with_structured_output(Ticket, method="json_schema")
    llm_server.sse(chat_chunks(parts), done=True)
    plain = list(model.stream("Route: refund not received"))
    costtrace.instrument()
    try:
        llm_server.sse(chat_chunks(parts, usage=usage_body(310, 12)), done=True)
        with capture() as got, costtrace.task("lc-structured-stream"):
            seen = list(model.stream("Route: refund not received"))
    finally:
        costtrace.uninstrument()
    assert seen == plain and seen[-1] == Ticket(priority="high", team="billing")
    assert llm_server.requests[1].body["stream_options"] == {"include_usage": True}
    del llm_server.requests[0]
    assert_exact(got, spans, llm_server, "lc-structured-stream", [(RESP_MODEL, 310, 12)])
