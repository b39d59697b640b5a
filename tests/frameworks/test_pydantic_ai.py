"""pydantic-ai (current release) through the real OpenAI and Anthropic SDKs to the local server: a
re-ask after a rejected response (an output validator's or a tool's ``ModelRetry``, output that fails
``output_type`` validation) is a retry of the task, with no code from the user.

Each test checks the requests the server saw against the call records, the attempt lineage (attempts,
retries, first_pass, wasted cost == the rejected call's genai-prices price) and the retry event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.frameworks.conftest import need

need("pydantic_ai")

import openai  # noqa: E402
from pydantic import BaseModel, field_validator  # noqa: E402
from pydantic_ai import Agent, ModelRetry, RunContext  # noqa: E402
from pydantic_ai import _utils as pydantic_ai_utils  # noqa: E402
from pydantic_ai.exceptions import UnexpectedModelBehavior  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

import costtrace  # noqa: E402
from costtrace import semconv as sc  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from tests.instrumentation.test_openai import (  # noqa: E402
    MODEL,
    SECRET,
    chat_body,
    chat_chunks,
    ref_price,
    usage_body,
)

FIRST = usage_body(120, 30)
SECOND = usage_body(180, 25)
THIRD = usage_body(210, 8)


def price(*usages: dict[str, Any]) -> Decimal:
    return sum(
        (ref_price(MODEL, input_tokens=u["prompt_tokens"], output_tokens=u["completion_tokens"]) for u in usages),
        Decimal(0),
    )


def tool_call(name: str, args: dict[str, Any], usage: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return chat_body(usage, content=None, finish="tool_calls", tool_calls=[call])


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    assert set(costtrace.instrument()) >= {"openai", "pydantic_ai"}
    yield
    costtrace.uninstrument()


@pytest.fixture
def model(llm_server: Any) -> Iterator[OpenAIChatModel]:
    client = openai.AsyncOpenAI(base_url=llm_server.url + "/v1", api_key=SECRET, max_retries=0)
    yield OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    close_sync_run_loop(client)


def close_sync_run_loop(client: Any) -> None:
    """``run_sync`` runs on an event loop pydantic-ai sets as the thread's and leaves open: the client's
    connections live there. Close them in it, then the loop (async tests close the client themselves)."""
    loop = pydantic_ai_utils.get_event_loop()
    if not client.is_closed():
        loop.run_until_complete(client.close())
    loop.close()
    asyncio.set_event_loop(None)


def retry_events(spans: Any) -> list[dict[str, Any]]:
    return [dict(e.attributes) for e in spans.one_task().events if e.name == sc.EVENT_RETRY]


def greeting_agent(model: Any, *, retries: int = 1) -> Agent[None, str]:
    agent = Agent(model, retries={"output": retries})

    @agent.output_validator
    def greets_the_team(output: str) -> str:
        if "team" not in output:
            raise ModelRetry("the answer must greet the team")
        return output

    return agent


def assert_one_retry(got: Any, server: Any, spans: Any, *, calls: int, wasted: Decimal, message: str) -> None:
    assert len(server.requests) == calls
    assert len(got.calls) == calls
    (s,) = got.tasks
    assert (s.llm_calls, s.attempts, s.retries, s.first_pass) == (calls, 2, 1, False)
    assert s.wasted_cost_usd == wasted
    assert s.cost_usd == sum((c.cost.total_usd for c in got.calls), Decimal(0))
    (event,) = retry_events(spans)
    assert event[sc.EVENT_ATTR_REASON] == "validation_failed"
    assert event[sc.EVENT_ATTR_ATTEMPT] == 1
    assert message in event[sc.EVENT_ATTR_DETAILS]


# --- output validators -------------------------------------------------------------------------------


def test_output_validator_model_retry_once_is_one_retry_of_the_task(llm_server: Any, model: Any, spans: Any) -> None:
    llm_server.json(chat_body(FIRST, content="Hello."))
    llm_server.json(chat_body(SECOND, content="Hello, team!"))
    with capture() as got, costtrace.task("greet"):
        result = greeting_agent(model).run_sync("Greet the team.")
    assert result.output == "Hello, team!"
    assert_one_retry(got, llm_server, spans, calls=2, wasted=price(FIRST), message="the answer must greet the team")
    assert [c.attempt for c in got.calls] == [1, 2]
    assert (got.tasks[0].input_tokens, got.tasks[0].output_tokens) == (300, 55)
    # pydantic-ai sent the validator's message back: the second request is the re-ask.
    assert "the answer must greet the team" in json.dumps(llm_server.requests[1].body["messages"])


def test_async_output_validator_retry(llm_server: Any, model: Any, spans: Any) -> None:
    llm_server.json(chat_body(FIRST, content="Hello."))
    llm_server.json(chat_body(SECOND, content="Hello, team!"))

    async def main() -> str:
        async with model.client:
            with costtrace.task("greet"):
                return (await greeting_agent(model).run("Greet the team.")).output

    with capture() as got:
        assert asyncio.run(main()) == "Hello, team!"
    assert_one_retry(got, llm_server, spans, calls=2, wasted=price(FIRST), message="the answer must greet the team")


def test_streamed_run_output_validator_retry(llm_server: Any, model: Any, spans: Any) -> None:
    """Streamed model responses (``run`` with an ``event_stream_handler``: the graph streams each request;
    ``run_stream`` itself refuses to retry output validation) and the re-ask; usage from the streams."""
    llm_server.sse(chat_chunks(["Hel", "lo."], usage=FIRST), done=True)
    llm_server.sse(chat_chunks(["Hello, ", "team!"], usage=SECOND), done=True)
    kinds: list[str] = []

    async def handler(ctx: Any, events: Any) -> None:
        async for event in events:
            kinds.append(event.event_kind)

    async def main() -> str:
        async with model.client:
            with costtrace.task("greet"):
                return (await greeting_agent(model).run("Greet the team.", event_stream_handler=handler)).output

    with capture() as got:
        assert asyncio.run(main()) == "Hello, team!"
    assert "part_delta" in kinds
    assert all(r.body["stream"] for r in llm_server.requests)
    assert_one_retry(got, llm_server, spans, calls=2, wasted=price(FIRST), message="the answer must greet the team")
    assert [c.usage.source for c in got.calls] == ["provider", "provider"]


def test_no_failure_is_first_pass(llm_server: Any, model: Any, spans: Any) -> None:
    llm_server.json(chat_body(FIRST, content="Hello, team!"))
    with capture() as got, costtrace.task("greet"):
        greeting_agent(model).run_sync("Greet the team.")
    assert len(llm_server.requests) == len(got.calls) == 1
    (s,) = got.tasks
    assert (s.attempts, s.retries, s.first_pass, s.wasted_cost_usd) == (1, 0, True, Decimal(0))
    assert s.cost_usd == price(FIRST)
    assert retry_events(spans) == []


def test_retries_exhausted_is_a_failed_task_not_another_retry(llm_server: Any, model: Any, spans: Any) -> None:
    """output_retries=1 and two rejected answers: one re-ask was sent (one retry), then pydantic-ai gives
    up with UnexpectedModelBehavior, which fails the task; all of it is wasted."""
    llm_server.json(chat_body(FIRST, content="Hello."))
    llm_server.json(chat_body(SECOND, content="Hi."))
    with capture() as got, pytest.raises(UnexpectedModelBehavior):
        with costtrace.task("greet"):
            greeting_agent(model, retries=1).run_sync("Greet the team.")
    assert len(llm_server.requests) == len(got.calls) == 2
    (s,) = got.tasks
    assert (s.outcome, s.attempts, s.retries, s.first_pass) == ("failure", 2, 1, False)
    assert s.wasted_cost_usd == price(FIRST, SECOND)
    assert len(retry_events(spans)) == 1


def test_retry_the_user_records_in_the_validator_is_counted_once(llm_server: Any, model: Any, spans: Any) -> None:
    llm_server.json(chat_body(FIRST, content="Hello."))
    llm_server.json(chat_body(SECOND, content="Hello, team!"))
    agent = Agent(model, retries={"output": 1})

    @agent.output_validator
    def greets_the_team(output: str) -> str:
        if "team" not in output:
            task = costtrace.current_task()
            assert task is not None
            task.retry("missing_greeting", output)
            raise ModelRetry("the answer must greet the team")
        return output

    with capture() as got, costtrace.task("greet"):
        agent.run_sync("Greet the team.")
    (s,) = got.tasks
    assert (s.attempts, s.retries, s.first_pass, s.wasted_cost_usd) == (2, 1, False, price(FIRST))
    (event,) = retry_events(spans)
    assert event[sc.EVENT_ATTR_REASON] == "missing_greeting"


# --- structured output -------------------------------------------------------------------------------


class City(BaseModel):
    name: str
    population: int

    @field_validator("name")
    @classmethod
    def capitalised(cls, v: str) -> str:
        if not v[:1].isupper():
            raise ValueError("name must be capitalised")
        return v


def test_output_type_validation_failure_is_one_retry(llm_server: Any, model: Any, spans: Any) -> None:
    """The output tool's arguments fail ``output_type`` validation: pydantic-ai sends the errors back."""
    llm_server.json(tool_call("final_result", {"name": "paris", "population": 2_100_000}, FIRST))
    llm_server.json(tool_call("final_result", {"name": "Paris", "population": 2_100_000}, SECOND))
    agent = Agent(model, output_type=City)
    with capture() as got, costtrace.task("city"):
        assert agent.run_sync("The capital of France?").output.name == "Paris"
    assert_one_retry(
        got, llm_server, spans, calls=2, wasted=price(FIRST), message="name: Value error, name must be capitalised"
    )
    assert "final_result" in retry_events(spans)[0][sc.EVENT_ATTR_DETAILS]


# --- tools -------------------------------------------------------------------------------------------


def test_tool_model_retry_once_is_one_retry(llm_server: Any, model: Any, spans: Any) -> None:
    """A tool raising ``ModelRetry`` rejects the response that called it: that call's cost is wasted, and
    the model's corrected call and the final answer are attempt 2 (3 requests, 1 retry)."""
    llm_server.json(tool_call("weather", {"city": "paris"}, FIRST))
    llm_server.json(tool_call("weather", {"city": "Paris"}, SECOND, call_id="call_2"))
    llm_server.json(chat_body(THIRD, content="Sunny in Paris."))
    agent = Agent(model)
    asked: list[str] = []

    @agent.tool
    def weather(ctx: RunContext[None], city: str) -> str:
        asked.append(city)
        if not city[:1].isupper():
            raise ModelRetry("city names are capitalised")
        return "sunny"

    with capture() as got, costtrace.task("weather"):
        assert agent.run_sync("Weather in Paris?").output == "Sunny in Paris."
    assert asked == ["paris", "Paris"]
    assert_one_retry(got, llm_server, spans, calls=3, wasted=price(FIRST), message="city names are capitalised")
    assert [c.attempt for c in got.calls] == [1, 2, 2]
    assert retry_events(spans)[0][sc.EVENT_ATTR_DETAILS] == "tool 'weather': city names are capitalised"


def test_tool_use_without_retry_is_first_pass(llm_server: Any, model: Any, spans: Any) -> None:
    llm_server.json(tool_call("weather", {"city": "Paris"}, FIRST))
    llm_server.json(chat_body(SECOND, content="Sunny in Paris."))
    agent = Agent(model)

    @agent.tool_plain
    def weather(city: str) -> str:
        return "sunny"

    with capture() as got, costtrace.task("weather"):
        agent.run_sync("Weather in Paris?")
    assert len(llm_server.requests) == len(got.calls) == 2
    (s,) = got.tasks
    assert (s.attempts, s.retries, s.first_pass, s.wasted_cost_usd) == (1, 0, True, Decimal(0))


def test_an_internal_error_does_not_reach_the_agent(
    llm_server: Any, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """costtrace's own failure before a request is reported, never raised into the agent graph."""
    from costtrace import _internal
    from costtrace.instrumentation import pydantic_ai as ct_pydantic_ai

    def broken() -> None:
        raise RuntimeError("costtrace bug")

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(ct_pydantic_ai, "snapshot", broken)
    llm_server.json(chat_body(FIRST, content="Hello."))
    llm_server.json(chat_body(SECOND, content="Hello, team!"))
    with capture() as got, costtrace.task("greet"):
        assert greeting_agent(model).run_sync("Greet the team.").output == "Hello, team!"
    assert len(got.calls) == 2
    assert _internal.internal_error_counts().get("pydantic_ai.request") == 2


# --- Anthropic: a request the SDK refuses before sending is no call -----------------------------------


def test_anthropic_default_max_tokens_refused_then_streamed_is_one_first_pass_call(llm_server: Any, spans: Any) -> None:
    """pydantic-ai's ``AnthropicModel`` asks for a large default ``max_tokens``: the Anthropic SDK refuses
    the non-streaming request before sending it (``ValueError("Streaming is required ...")``) and
    pydantic-ai sends it again as a stream. One request on the wire: one call, first pass, priced."""
    need("anthropic")
    import anthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    from tests.instrumentation.test_anthropic import MODEL as CLAUDE
    from tests.instrumentation.test_anthropic import RESPONSE_MODEL, message_body, stream_events
    from tests.instrumentation.test_anthropic import usage_body as claude_usage

    llm_server.sse(stream_events(message_body(claude_usage(1200, 300))), named=True)
    client = anthropic.AsyncAnthropic(base_url=llm_server.url, api_key=SECRET, max_retries=0)
    agent = Agent(AnthropicModel(CLAUDE, provider=AnthropicProvider(anthropic_client=client)))
    with capture() as got, costtrace.task("summarise"):
        agent.run_sync("Summarise ticket T-1 in one line.")
    close_sync_run_loop(client)
    assert len(llm_server.requests) == 1
    assert llm_server.requests[0].body["stream"] is True
    assert [c.error_type for c in got.calls] == [None]  # no phantom failed call for the refused request
    (call,) = got.calls
    assert (call.usage.input_tokens, call.usage.output_tokens) == (1200, 300)
    assert call.cost.total_usd == ref_price(RESPONSE_MODEL, "anthropic", input_tokens=1200, output_tokens=300)
    (s,) = got.tasks
    assert (s.llm_calls, s.failed_calls, s.attempts, s.retries, s.first_pass) == (1, 0, 1, 0, True)
    assert s.cost_complete
    assert s.cost_usd == call.cost.total_usd


def test_anthropic_model_output_validator_retry(llm_server: Any, spans: Any) -> None:
    """The same re-ask through ``AnthropicModel`` (a ``max_tokens`` the SDK sends without streaming)."""
    need("anthropic")
    import anthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    from tests.instrumentation.test_anthropic import MODEL as CLAUDE
    from tests.instrumentation.test_anthropic import RESPONSE_MODEL, message_body
    from tests.instrumentation.test_anthropic import usage_body as claude_usage

    first, second = claude_usage(1200, 300), claude_usage(1600, 40)
    llm_server.json(message_body(first, content=[{"type": "text", "text": "Hello."}]))
    llm_server.json(message_body(second, content=[{"type": "text", "text": "Hello, team!"}]))
    client = anthropic.AsyncAnthropic(base_url=llm_server.url, api_key=SECRET, max_retries=0)
    agent = greeting_agent(AnthropicModel(CLAUDE, provider=AnthropicProvider(anthropic_client=client)))
    with capture() as got, costtrace.task("greet"):
        result = agent.run_sync("Greet the team.", model_settings={"max_tokens": 1024})
    close_sync_run_loop(client)
    assert result.output == "Hello, team!"
    wasted = ref_price(RESPONSE_MODEL, "anthropic", input_tokens=1200, output_tokens=300)
    assert_one_retry(got, llm_server, spans, calls=2, wasted=wasted, message="the answer must greet the team")
    assert got.tasks[0].cost_complete
