"""What costtrace records for each framework call shape, against the local server's truth (issue 11's figures).

Each shape runs once against tests/instrumentation/fake_server.py with ``costtrace.instrument()`` on, inside a
task; the server answers like OpenAI's API (a chat stream carries its usage chunk only when the request asks
for it). Prints one line per shape: requests on the wire, call records, tokens in/out the server reported and
the ones recorded (with their source), cost from genai-prices and the cost recorded.

Run it in a framework environment (``bash .ci/frameworks/run`` builds them), from the repository root:

    .venv-fw-openai3/bin/python benchmarks/frameworks_accuracy.py      # langchain-openai, openai-agents
    .venv-fw-llamaindex/bin/python benchmarks/frameworks_accuracy.py   # llama-index-llms-openai

To measure another costtrace (e.g. main): ``PYTHONPATH=/path/to/that/src`` in front.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())

from tests.instrumentation.fake_server import FakeLLMServer  # noqa: E402
from tests.instrumentation.test_openai import (  # noqa: E402
    MODEL,
    RESP_MODEL,
    SECRET,
    TOOL_CALL,
    chat_body,
    chat_chunks,
    chunk,
    ref_price,
    responses_body,
    responses_events,
    responses_usage,
    usage_body,
)

import costtrace  # noqa: E402
from costtrace.testing import capture  # noqa: E402

PARTS = ["Hello", ", team", "!"]
Truth = list[tuple[int, int]]  # (input, output) tokens the server reported, per billed reply


def stream(server: FakeLLMServer, inp: int, out: int, parts: list[str] = PARTS) -> tuple[int, int]:
    server.chat_stream(chat_chunks(parts), chunk(choices=[], usage=usage_body(inp, out)))
    return inp, out


def reply(server: FakeLLMServer, inp: int, out: int, **kw: Any) -> tuple[int, int]:
    server.json(chat_body(usage_body(inp, out), **kw))
    return inp, out


def resp(server: FakeLLMServer, inp: int, out: int) -> tuple[int, int]:
    server.json(responses_body(responses_usage(inp, out), model=RESP_MODEL))
    return inp, out


def resp_stream(server: FakeLLMServer, inp: int, out: int) -> tuple[int, int]:
    server.sse(responses_events(["Hi", " team", "."], responses_usage(inp, out), model=RESP_MODEL), named=True)
    return inp, out


def error(server: FakeLLMServer, status: int) -> None:
    headers = {"retry-after-ms": "1", "retry-after": "0"}
    server.json({"error": {"message": "try again", "type": "server_error"}}, status=status, headers=headers)


def langchain_shapes() -> dict[str, Callable[[FakeLLMServer], tuple[Truth, Callable[[], Any]]]]:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Ticket(BaseModel):
        priority: str
        team: str

    def model(s: FakeLLMServer, **kw: Any) -> Any:
        kw.setdefault("max_retries", 0)
        return ChatOpenAI(model=MODEL, base_url=s.url + "/v1", api_key=SECRET, **kw)

    def get_weather(location: str) -> str:
        """The weather at a location."""
        return "sunny"

    ticket = json.dumps({"priority": "high", "team": "billing"})

    return {
        "langchain invoke": lambda s: ([reply(s, 1200, 150)], lambda: model(s).invoke("hi")),
        "langchain ainvoke": lambda s: ([reply(s, 900, 80)], lambda: asyncio.run(model(s).ainvoke("hi"))),
        "langchain batch x3": lambda s: (
            [reply(s, 100, 10), reply(s, 100, 10), reply(s, 100, 10)],
            lambda: model(s).batch(["a", "b", "c"]),
        ),
        "langchain with_structured_output": lambda s: (
            [reply(s, 310, 12, content=ticket)],
            lambda: model(s).with_structured_output(Ticket).invoke("route"),
        ),
        "langchain bind_tools (tool call)": lambda s: (
            [reply(s, 82, 17, content=None, finish="tool_calls", tool_calls=[TOOL_CALL])],
            lambda: model(s).bind_tools([get_weather]).invoke("weather?"),
        ),
        "langchain stream": lambda s: ([stream(s, 1200, 300)], lambda: list(model(s).stream("hi"))),
        "langchain astream": lambda s: (
            [stream(s, 700, 90)],
            lambda: asyncio.run(_alist(model(s).astream("hi"))),
        ),
        "langchain stream, include_response_headers": lambda s: (
            [stream(s, 90, 9)],
            lambda: list(model(s, include_response_headers=True).stream("hi")),
        ),
        "langchain structured stream": lambda s: (
            [stream(s, 310, 12, [ticket[:10], ticket[10:]])],
            lambda: list(model(s).with_structured_output(Ticket, method="json_schema").stream("route")),
        ),
        "langchain use_responses_api invoke": lambda s: (
            [resp(s, 500, 25)],
            lambda: model(s, use_responses_api=True).invoke("hi"),
        ),
        "langchain use_responses_api stream": lambda s: (
            [resp_stream(s, 600, 35)],
            lambda: list(model(s, use_responses_api=True).stream("hi")),
        ),
        "langchain max_retries=2 (429 then 200)": lambda s: (
            [error(s, 429), reply(s, 400, 40)][1:],
            lambda: model(s, max_retries=2).invoke("hi"),
        ),
        "langchain .with_retry() (500 then 200)": lambda s: (
            [error(s, 500), reply(s, 400, 40)][1:],
            lambda: model(s).with_retry(stop_after_attempt=2, wait_exponential_jitter=False).invoke("hi"),
        ),
    }


async def _alist(it: Any) -> list[Any]:
    return [x async for x in it]


def agents_shapes() -> dict[str, Callable[[FakeLLMServer], tuple[Truth, Callable[[], Any]]]]:
    import openai
    from agents import (
        Agent,
        ModelRetrySettings,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        retry_policies,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)

    def agent(s: FakeLLMServer, chat: bool = False, **settings: Any) -> Any:
        c = openai.AsyncOpenAI(api_key=SECRET, base_url=s.url + "/v1", max_retries=0)
        m = OpenAIChatCompletionsModel(MODEL, c) if chat else OpenAIResponsesModel(MODEL, c)
        return Agent(name="a", instructions="terse", model=m, model_settings=ModelSettings(**settings))

    async def streamed(a: Any) -> Any:
        result = Runner.run_streamed(a, "hi")
        async for _ in result.stream_events():
            pass
        return result.final_output

    retry = ModelRetrySettings(
        max_retries=1, backoff={"initial_delay": 0, "max_delay": 0}, policy=retry_policies.http_status([500])
    )
    return {
        "agents Runner.run (Responses)": lambda s: (
            [resp(s, 1200, 150)],
            lambda: asyncio.run(Runner.run(agent(s), "hi")),
        ),
        "agents Runner.run_sync (Responses)": lambda s: ([resp(s, 640, 32)], lambda: Runner.run_sync(agent(s), "hi")),
        "agents Runner.run (chat completions)": lambda s: (
            [reply(s, 300, 12, content="Hi team.")],
            lambda: asyncio.run(Runner.run(agent(s, chat=True), "hi")),
        ),
        "agents run_streamed (Responses, with_streaming_response)": lambda s: (
            [resp_stream(s, 1200, 300)],
            lambda: asyncio.run(streamed(agent(s))),
        ),
        "agents run_streamed (chat completions)": lambda s: (
            [stream(s, 800, 90)],
            lambda: asyncio.run(streamed(agent(s, chat=True))),
        ),
        "agents ModelSettings(retry=...) (500 then 200)": lambda s: (
            [error(s, 500), resp(s, 500, 20)][1:],
            lambda: asyncio.run(Runner.run(agent(s, retry=retry), "hi")),
        ),
    }


def llamaindex_shapes() -> dict[str, Callable[[FakeLLMServer], tuple[Truth, Callable[[], Any]]]]:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    msgs = [ChatMessage(role="user", content="Say hello.")]

    def llm(s: FakeLLMServer, retries: int = 0) -> Any:
        return OpenAI(model=MODEL, api_base=s.url + "/v1", api_key=SECRET, max_retries=retries)

    async def astream(s: FakeLLMServer) -> Any:
        return [r async for r in await llm(s).astream_chat(msgs)]

    return {
        "llama-index chat": lambda s: ([reply(s, 1200, 150)], lambda: llm(s).chat(msgs)),
        "llama-index achat": lambda s: ([reply(s, 900, 80)], lambda: asyncio.run(llm(s).achat(msgs))),
        "llama-index complete": lambda s: ([reply(s, 40, 5)], lambda: llm(s).complete("hi")),
        "llama-index stream_chat": lambda s: ([stream(s, 1200, 300)], lambda: list(llm(s).stream_chat(msgs))),
        "llama-index astream_chat": lambda s: ([stream(s, 700, 90)], lambda: asyncio.run(astream(s))),
        "llama-index stream_complete": lambda s: ([stream(s, 30, 4)], lambda: list(llm(s).stream_complete("hi"))),
        "llama-index max_retries=2 (429 x3 then 200)": lambda s: (
            [error(s, 429), error(s, 429), error(s, 429), reply(s, 400, 40)][3:],
            lambda: llm(s, retries=2).chat(msgs),
        ),
    }


def measure(name: str, build: Callable[[FakeLLMServer], tuple[Truth, Callable[[], Any]]]) -> str:
    server = FakeLLMServer()
    try:
        truth, run = build(server)
        with capture() as got, costtrace.task("measure"):
            run()
        summary = got.task("measure")
        true_in, true_out = sum(t[0] for t in truth), sum(t[1] for t in truth)
        true_cost = sum((ref_price(RESP_MODEL, input_tokens=i, output_tokens=o) for i, o in truth), Decimal(0))
        sources = sorted({c.usage.source for c in got.calls if c.error_type is None})
        cost = summary.known_cost_usd
        exact = (summary.input_tokens, summary.output_tokens) == (true_in, true_out) and cost == true_cost
        return (
            f"| {name} | {len(server.requests)} | {len(got.calls)} | {true_in}/{true_out} | "
            f"{summary.input_tokens}/{summary.output_tokens} ({','.join(sources) or '-'}) | {true_cost:f} | "
            f"{cost.normalize():f} | {summary.unpriced_calls} | {summary.retries} | {'yes' if exact else 'NO'} |"
        )
    finally:
        server.close()


def main() -> None:
    warnings.simplefilter("ignore")
    costtrace.instrument()
    shapes: dict[str, Any] = {}
    if importlib.util.find_spec("langchain_openai"):
        shapes.update(langchain_shapes())
    if importlib.util.find_spec("agents"):
        shapes.update(agents_shapes())
    if importlib.util.find_spec("llama_index") and importlib.util.find_spec("llama_index.llms.openai"):
        shapes.update(llamaindex_shapes())
    print(f"costtrace from {Path(costtrace.__file__).parent}")
    print(
        "| shape | requests | calls | tokens in/out (server) | recorded (source) | cost (genai-prices) "
        "| recorded cost (priced calls) | unpriced calls | task retries | exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, build in shapes.items():
        print(measure(name, build))


if __name__ == "__main__":
    main()
