"""openai-agents (the Agents SDK) with ``costtrace.instrument()``: ``Runner.run`` / ``run_sync`` / ``run_streamed`` on
the Responses API (streamed through ``responses.with_streaming_response.create(...)`` then ``.parse()``) and on
``OpenAIChatCompletionsModel``, each request one exactly priced call on the task; the runner's own retries
(``ModelSettings(retry=...)``) are retries of the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.frameworks.conftest import need

need("agents")

import openai  # noqa: E402
from agents import (  # noqa: E402
    Agent,
    ModelRetrySettings,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    retry_policies,
    set_tracing_disabled,
)

import costtrace  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from tests.frameworks.accounting import assert_exact  # noqa: E402
from tests.instrumentation.test_openai import (  # noqa: E402
    MODEL,
    RESP_MODEL,
    SECRET,
    chat_body,
    chat_chunks,
    responses_body,
    responses_events,
    responses_usage,
    usage_body,
)

set_tracing_disabled(True)  # the Agents SDK would export its traces to the vendor's endpoint

PARTS = ["Hi", " team", "."]


@pytest.fixture
def instrumented() -> Iterator[None]:
    costtrace.instrument()
    yield
    costtrace.uninstrument()


def client(server: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=SECRET, base_url=server.url + "/v1", max_retries=0)


def responses_agent(c: openai.AsyncOpenAI, **settings: Any) -> Agent[Any]:
    model = OpenAIResponsesModel(model=MODEL, openai_client=c)
    return Agent(name="greeter", instructions="You are terse.", model=model, model_settings=ModelSettings(**settings))


def chat_agent(c: openai.AsyncOpenAI) -> Agent[Any]:
    model = OpenAIChatCompletionsModel(model=MODEL, openai_client=c)
    return Agent(name="greeter", instructions="You are terse.", model=model)


def run_sync(agent: Agent[Any], c: openai.AsyncOpenAI) -> Any:
    """``Runner.run_sync``, then the client closed on the loop it ran in: run_sync keeps the thread's default
    loop open (by design, see its source), so the test closes it."""
    try:
        return Runner.run_sync(agent, "Say hello to the team.")
    finally:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        loop.run_until_complete(c.close())
        loop.close()
        asyncio.set_event_loop(None)


def test_runner_run_responses(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(responses_body(responses_usage(1200, 150), model=RESP_MODEL))

    async def main() -> Any:
        async with client(llm_server) as c, costtrace.task("agents-run"):
            return await Runner.run(responses_agent(c), "Say hello to the team.")

    with capture() as got:
        result = asyncio.run(main())
    assert result.final_output == "Hi team."
    assert llm_server.requests[0].path == "/v1/responses"
    assert_exact(got, spans, llm_server, "agents-run", [(RESP_MODEL, 1200, 150)])


def test_runner_run_sync_responses(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(responses_body(responses_usage(640, 32), model=RESP_MODEL))
    with capture() as got, costtrace.task("agents-run-sync"):
        result = run_sync(responses_agent(c := client(llm_server)), c)
    assert result.final_output == "Hi team."
    assert_exact(got, spans, llm_server, "agents-run-sync", [(RESP_MODEL, 640, 32)])


def test_runner_run_chat_completions(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.json(chat_body(usage_body(300, 12), content="Hi team."))
    with capture() as got, costtrace.task("agents-chat"):
        result = run_sync(chat_agent(c := client(llm_server)), c)
    assert result.final_output == "Hi team."
    assert llm_server.requests[0].path == "/v1/chat/completions"
    assert_exact(got, spans, llm_server, "agents-chat", [(RESP_MODEL, 300, 12)])


def function_call_body(usage: dict[str, Any]) -> dict[str, Any]:
    """A Responses reply asking for the ``get_weather`` tool."""
    body = responses_body(usage, model=RESP_MODEL)
    body["output"] = [
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"location": "Paris"}',
            "status": "completed",
        }
    ]
    return body


def test_runner_run_with_a_tool_is_one_call_per_model_request(llm_server: Any, instrumented: None, spans: Any) -> None:
    @function_tool
    def get_weather(location: str) -> str:
        """The weather at a location."""
        return "sunny"

    llm_server.json(function_call_body(responses_usage(210, 18)))
    llm_server.json(responses_body(responses_usage(260, 7), model=RESP_MODEL))

    async def main() -> Any:
        async with client(llm_server) as c, costtrace.task("agents-tool"):
            agent = responses_agent(c)
            agent.tools = [get_weather]
            return await Runner.run(agent, "Weather in Paris?")

    with capture() as got:
        result = asyncio.run(main())
    assert result.final_output == "Hi team."
    assert llm_server.requests[1].body["input"][-1]["type"] == "function_call_output"
    assert_exact(got, spans, llm_server, "agents-tool", [(RESP_MODEL, 210, 18), (RESP_MODEL, 260, 7)])


def test_runner_retry_settings_are_task_retries(llm_server: Any, instrumented: None, spans: Any) -> None:
    """``ModelSettings(retry=...)``: the runner sends the request again; the failed one is a failed attempt."""
    llm_server.json({"error": {"message": "The server had an error", "type": "server_error"}}, status=500)
    llm_server.json(responses_body(responses_usage(500, 20), model=RESP_MODEL))
    retry = ModelRetrySettings(
        max_retries=1,
        backoff={"initial_delay": 0, "max_delay": 0, "jitter": False},
        policy=retry_policies.http_status([500]),
    )
    with capture() as got, costtrace.task("agents-retry"):
        result = run_sync(responses_agent(c := client(llm_server), retry=retry), c)
    assert result.final_output == "Hi team."
    assert len(llm_server.requests) == 2
    failed, ok = got.calls
    assert failed.error_type is not None and ok.error_type is None
    assert (ok.usage.input_tokens, ok.usage.output_tokens) == (500, 20)
    summary = got.task("agents-retry")
    assert (summary.llm_calls, summary.failed_calls, summary.attempts, summary.retries) == (2, 1, 2, 1)
    assert summary.first_pass is False
    assert summary.known_cost_usd == ok.cost_usd
    # costtrace's rule for an error reply: its usage is unknown, so the call is flagged unpriced (never $0)
    assert failed.cost_usd is None and summary.unpriced_calls == 1


# --- streams ------------------------------------------------------------------------------------------------


def _without_clock(data: Any) -> Any:
    """The Agents SDK stamps the responses it builds from a chat stream with ``time.time()``: not comparable."""
    if isinstance(data, dict):
        return {k: "<time>" if k == "created_at" else _without_clock(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_without_clock(v) for v in data]
    return data


def _streamed_run(server: Any, make_agent: Any, task: str | None = None) -> list[Any]:
    """``Runner.run_streamed`` (inside ``task`` if given): what the app sees of it, as plain data."""

    async def consume() -> list[Any]:
        out: list[Any] = []
        async with client(server) as c:
            result = Runner.run_streamed(make_agent(c), "Say hello")
            events = [e async for e in result.stream_events()]
        for event in events:
            if event.type == "raw_response_event":
                out.append(("raw", _without_clock(event.data.model_dump())))
            elif event.type == "run_item_stream_event":
                raw = event.item.raw_item
                out.append(("item", event.name, raw.model_dump() if hasattr(raw, "model_dump") else raw))
            else:
                out.append(("agent", event.new_agent.name))
        out.append(("final", result.final_output))
        return out

    async def main() -> list[Any]:
        if task is None:
            return await consume()
        async with costtrace.task(task):
            return await consume()

    return asyncio.run(main())


def test_run_streamed_responses_usage_exact_and_events_unchanged(llm_server: Any, spans: Any) -> None:
    """Responses streams through ``with_streaming_response.create(...)``: the usage is in ``response.completed``."""
    events = responses_events(PARTS, responses_usage(1200, 300), model=RESP_MODEL)
    llm_server.sse(events, named=True)
    plain = _streamed_run(llm_server, responses_agent)
    costtrace.instrument()
    try:
        llm_server.sse(events, named=True)
        with capture() as got:
            seen = _streamed_run(llm_server, responses_agent, "agents-stream")
    finally:
        costtrace.uninstrument()
    assert seen[-1] == ("final", "Hi team.")
    assert seen == plain
    del llm_server.requests[0]  # the run without costtrace
    assert_exact(got, spans, llm_server, "agents-stream", [(RESP_MODEL, 1200, 300)])


def test_run_streamed_chat_completions_usage_exact_and_events_unchanged(llm_server: Any, spans: Any) -> None:
    """A non-OpenAI base URL: the Agents SDK asks for no stream usage; costtrace asks and hides the extra chunk."""
    llm_server.sse(chat_chunks(PARTS), done=True)  # asked for no usage: a real server sends none
    plain = _streamed_run(llm_server, chat_agent)
    costtrace.instrument()
    try:
        llm_server.sse(chat_chunks(PARTS, usage=usage_body(800, 90)), done=True)
        with capture() as got:
            seen = _streamed_run(llm_server, chat_agent, "agents-chat-stream")
    finally:
        costtrace.uninstrument()
    assert seen[-1] == ("final", "Hi team.")
    assert "stream_options" not in llm_server.requests[0].body
    assert llm_server.requests[1].body["stream_options"] == {"include_usage": True}
    assert seen == plain
    del llm_server.requests[0]
    assert_exact(got, spans, llm_server, "agents-chat-stream", [(RESP_MODEL, 800, 90)])
