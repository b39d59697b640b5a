"""llama-index-llms-openai ``OpenAI(api_base=...)`` with ``costtrace.instrument()`` (openai 2.x: llama-index pins
openai<3): chat / achat / stream_chat / astream_chat / complete / stream_complete, each request one exactly priced
call on the task; streams ask for their usage through costtrace and the app's chunks stay the ones it gets
without costtrace; llama-index's own retries (its ``max_retries`` drives both the SDK's re-sends and a tenacity
loop around them) are visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.frameworks.conftest import need

need("llama_index.llms.openai")

from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.llms.openai import OpenAI, OpenAIResponses  # noqa: E402

import costtrace  # noqa: E402
from costtrace import semconv as sc  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from tests.frameworks.accounting import assert_exact, stream_twice  # noqa: E402
from tests.instrumentation.test_openai import (  # noqa: E402
    MODEL,
    RESP_MODEL,
    SECRET,
    chat_body,
    responses_body,
    responses_events,
    responses_usage,
    usage_body,
)

PARTS = ["Hello", ", team", "!"]
MESSAGES = [ChatMessage(role="system", content="You are terse."), ChatMessage(role="user", content="Say hello.")]


@pytest.fixture
def instrumented() -> Iterator[None]:
    costtrace.instrument()
    yield
    costtrace.uninstrument()


def llm(server: Any, **kwargs: Any) -> OpenAI:
    kwargs.setdefault("max_retries", 0)
    return OpenAI(model=MODEL, api_base=server.url + "/v1", api_key=SECRET, **kwargs)


def test_chat(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(1200, 150)))
    with capture() as got, costtrace.task("li-chat"):
        resp = llm(llm_server).chat(MESSAGES)
    assert resp.message.content == "Hello, team!"
    assert_exact(got, spans, llm_server, "li-chat", [(RESP_MODEL, 1200, 150)])


def test_achat(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(900, 80)))

    async def main() -> Any:
        async with httpx.AsyncClient() as http, costtrace.task("li-achat"):
            return await llm(llm_server, async_http_client=http).achat(MESSAGES)

    with capture() as got:
        resp = asyncio.run(main())
    assert resp.message.content == "Hello, team!"
    assert_exact(got, spans, llm_server, "li-achat", [(RESP_MODEL, 900, 80)])


def test_complete(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(40, 5)))
    with capture() as got, costtrace.task("li-complete"):
        resp = llm(llm_server).complete("Say hello.")
    assert resp.text == "Hello, team!"
    assert llm_server.requests[0].path == "/v1/chat/completions"  # a chat model: complete() is a chat call
    assert_exact(got, spans, llm_server, "li-complete", [(RESP_MODEL, 40, 5)])


def test_openai_responses_chat_and_stream_chat(llm_server: Any, instrumented: None, spans: Any) -> None:
    """Guard (passes before issue 11): ``OpenAIResponses`` sends through ``responses.create``, streamed or not."""
    llm_server.json(responses_body(responses_usage(100, 10), model=RESP_MODEL))
    llm_server.sse(responses_events(["Hi", " team."], responses_usage(200, 20), model=RESP_MODEL), named=True)
    model = OpenAIResponses(model=MODEL, api_base=llm_server.url + "/v1", api_key=SECRET, max_retries=0)
    with capture() as got, costtrace.task("li-responses"):
        assert model.chat(MESSAGES).message.content == "Hi team."
        assert list(model.stream_chat(MESSAGES))[-1].message.content == "Hi team."
    assert {r.path for r in llm_server.requests} == {"/v1/responses"}
    assert_exact(got, spans, llm_server, "li-responses", [(RESP_MODEL, 100, 10), (RESP_MODEL, 200, 20)])


def test_max_retries_sdk_resends_and_the_tenacity_retry(llm_server: Any, instrumented: None, spans: Any) -> None:
    """``max_retries=2``: the SDK re-sends twice inside one call; then llama-index's tenacity loop calls again."""
    too_many = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    for _ in range(3):
        llm_server.json(too_many, status=429, headers={"retry-after-ms": "1", "retry-after": "0"})
    llm_server.json(chat_body(usage_body(400, 40)))
    with capture() as got, costtrace.task("li-retry"):
        resp = llm(llm_server, max_retries=2).chat(MESSAGES)
    assert resp.message.content == "Hello, team!"
    assert len(llm_server.requests) == 4
    failed, ok = got.calls
    assert failed.error_type == "RateLimitError" and ok.error_type is None
    assert (ok.usage.input_tokens, ok.usage.output_tokens) == (400, 40)
    first, second = spans.calls()
    assert first.attributes[sc.HTTP_REQUEST_RESEND_COUNT] == 2
    assert sc.HTTP_REQUEST_RESEND_COUNT not in second.attributes
    summary = got.task("li-retry")
    assert (summary.llm_calls, summary.failed_calls, summary.attempts, summary.retries) == (2, 1, 2, 1)
    assert summary.first_pass is False
    task_events = [e.name for e in spans.one_task("li-retry").events]
    assert task_events.count(sc.EVENT_SDK_RETRY) == 2


# --- streams ------------------------------------------------------------------------------------------------


def _dump(responses: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in responses]


def test_stream_chat(llm_server: Any, spans: Any) -> None:
    model = llm(llm_server)
    plain, seen, got = stream_twice(
        llm_server, lambda: list(model.stream_chat(MESSAGES)), "li-stream", usage_body(1200, 300), PARTS
    )
    assert seen[-1].message.content == "Hello, team!"
    assert _dump(seen) == _dump(plain)
    assert_exact(got, spans, llm_server, "li-stream", [(RESP_MODEL, 1200, 300)])


def test_astream_chat(llm_server: Any, spans: Any) -> None:
    async def consume() -> list[Any]:
        async with httpx.AsyncClient() as http:  # closed on the loop it ran on
            return [r async for r in await llm(llm_server, async_http_client=http).astream_chat(MESSAGES)]

    plain, seen, got = stream_twice(
        llm_server, lambda: asyncio.run(consume()), "li-astream", usage_body(700, 90), PARTS
    )
    assert _dump(seen) == _dump(plain)
    assert_exact(got, spans, llm_server, "li-astream", [(RESP_MODEL, 700, 90)])


def test_stream_complete(llm_server: Any, spans: Any) -> None:
    model = llm(llm_server)
    plain, seen, got = stream_twice(
        llm_server, lambda: list(model.stream_complete("Say hello.")), "li-stream-complete", usage_body(30, 4), PARTS
    )
    assert seen[-1].text == "Hello, team!"
    assert _dump(seen) == _dump(plain)
    assert_exact(got, spans, llm_server, "li-stream-complete", [(RESP_MODEL, 30, 4)])
