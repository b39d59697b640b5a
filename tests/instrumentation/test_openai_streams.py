"""Every OpenAI stream shape: the app receives exactly what it gets without costtrace, and usage is exact.

Each shape runs twice against the local server: bare (nothing instrumented) and with costtrace's
defaults (``costtrace.instrument()``: the OpenAI SDK and the HTTP layer, ``include_usage`` asked for).
The server answers like OpenAI's API: a chat stream carries its usage chunk only when the request
asks for it (``FakeLLMServer.chat_stream``). The items, lines or bytes the app reads are compared
object by object (``model_dump()``) or byte by byte; the one call recorded has the server's usage
and genai-prices' cost.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import costtrace
from costtrace.testing import capture

openai = pytest.importorskip("openai")

from tests.instrumentation.test_openai import (  # noqa: E402
    MODEL,
    MSGS,
    RESP_MODEL,
    chat_chunks,
    chunk,
    make_client,
    needs_responses,
    ref_price,
    responses_events,
    responses_usage,
    usage_body,
)

CHAT_USAGE = usage_body(1200, 300, cached=1000)
CHAT_COST = ref_price(RESP_MODEL, input_tokens=1200, cache_read_tokens=1000, output_tokens=300)
RESP_USAGE = responses_usage(500, 80, cached=100, reasoning=20)
RESP_MODEL_ID = "o4-mini-2025-04-16"
RESP_COST = ref_price(RESP_MODEL_ID, input_tokens=500, cache_read_tokens=100, output_tokens=80)
CHAT = {"model": MODEL, "messages": MSGS}
RESP = {"model": "o4-mini", "input": "Say hi to the team."}


def d(obj: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic warns serialising the SDK's generic parsed models
        return obj.model_dump() if hasattr(obj, "model_dump") else obj


def script_chat(server: Any) -> None:
    server.chat_stream(chat_chunks(["Hello", ", team", "!"]), chunk(choices=[], usage=CHAT_USAGE))


def script_responses(server: Any) -> None:
    server.sse(responses_events(["Hi ", "team."], RESP_USAGE), named=True)


# --- the shapes: (script, read) where read(server) returns what the app saw ---------------------------


def chat_create(server: Any) -> Any:
    with make_client(server) as c:
        return [d(x) for x in c.chat.completions.create(**CHAT, stream=True)]


async def chat_create_async(server: Any) -> Any:
    async with make_client(server, is_async=True) as c:
        return [d(x) async for x in await c.chat.completions.create(**CHAT, stream=True)]


def chat_user_usage_on(server: Any) -> Any:
    with make_client(server) as c:
        return [d(x) for x in c.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})]


def _helper_api(c: Any) -> Any:
    """``chat.completions.stream`` (newer SDKs) or ``beta.chat.completions.stream`` (older, e.g. 1.55)."""
    return c.chat.completions if hasattr(c.chat.completions, "stream") else c.beta.chat.completions


def chat_helper(server: Any) -> Any:
    with make_client(server) as c, _helper_api(c).stream(**CHAT) as s:
        events = [d(e) for e in s]
        return events, d(s.get_final_completion())


async def chat_helper_async(server: Any) -> Any:
    async with make_client(server, is_async=True) as c, _helper_api(c).stream(**CHAT) as s:
        events = [d(e) async for e in s]
        return events, d(await s.get_final_completion())


def chat_raw_stream(server: Any) -> Any:
    with make_client(server) as c:
        raw = c.chat.completions.with_raw_response.create(**CHAT, stream=True)
        return [d(x) for x in raw.parse()]


def _read_sync(resp: Any, how: str) -> Any:
    if how == "parse":
        return [d(x) for x in resp.parse()]
    if how == "iter_lines":
        return list(resp.iter_lines())
    if how == "iter_text":
        return "".join(resp.iter_text())
    return b"".join(resp.iter_bytes())


async def _read_async(resp: Any, how: str) -> Any:
    if how == "parse":
        return [d(x) async for x in await resp.parse()]
    if how == "iter_lines":
        return [line async for line in resp.iter_lines()]
    if how == "iter_text":
        return "".join([t async for t in resp.iter_text()])
    return b"".join([b async for b in resp.iter_bytes()])


def _request(api: str, include_usage: bool) -> dict[str, Any]:
    if api == "responses":
        return RESP
    return {**CHAT, "stream_options": {"include_usage": True}} if include_usage else CHAT


def streaming_response(api: str, how: str, *, include_usage: bool = True) -> Callable[[Any], Any]:
    def read(server: Any) -> Any:
        with make_client(server) as c:
            resource = c.chat.completions if api == "chat" else c.responses
            with resource.with_streaming_response.create(**_request(api, include_usage), stream=True) as resp:
                return _read_sync(resp, how)

    return read


def async_streaming_response(api: str, how: str, *, include_usage: bool = True) -> Callable[[Any], Any]:
    async def read(server: Any) -> Any:
        async with make_client(server, is_async=True) as c:
            resource = c.chat.completions if api == "chat" else c.responses
            async with resource.with_streaming_response.create(**_request(api, include_usage), stream=True) as resp:
                return await _read_async(resp, how)

    return read


def responses_create(server: Any) -> Any:
    with make_client(server) as c:
        return [d(x) for x in c.responses.create(**RESP, stream=True)]


async def responses_create_async(server: Any) -> Any:
    async with make_client(server, is_async=True) as c:
        return [d(x) async for x in await c.responses.create(**RESP, stream=True)]


def responses_helper(server: Any) -> Any:
    with make_client(server) as c, c.responses.stream(**RESP) as s:
        events = [d(e) for e in s]
        return events, d(s.get_final_response())


async def responses_helper_async(server: Any) -> Any:
    async with make_client(server, is_async=True) as c, c.responses.stream(**RESP) as s:
        events = [d(e) async for e in s]
        return events, d(await s.get_final_response())


def chat_next_and_loops(server: Any) -> Any:
    """``next()`` and ``for`` loops mixed on one stream, a loop left by ``break`` and resumed."""
    with make_client(server) as c:
        stream = c.chat.completions.create(**CHAT, stream=True)
        seen = [d(next(stream))]
        for x in stream:
            seen.append(d(x))
            break
        seen += [d(x) for x in stream]
        return seen


async def chat_next_and_loops_async(server: Any) -> Any:
    async with make_client(server, is_async=True) as c:
        stream = await c.chat.completions.create(**CHAT, stream=True)
        seen = [d(await stream.__anext__())]
        async for x in stream:
            seen.append(d(x))
            break
        seen += [d(x) async for x in stream]
        return seen


CHAT_SHAPES: dict[str, Callable[[Any], Any]] = {
    "next-and-loops": chat_next_and_loops,
    "next-and-loops-async": chat_next_and_loops_async,
    "create": chat_create,
    "create-async": chat_create_async,
    "user-include_usage-on": chat_user_usage_on,
    "stream-helper": chat_helper,
    "stream-helper-async": chat_helper_async,
    "with_raw_response": chat_raw_stream,
}
RESPONSES_SHAPES: dict[str, Callable[[Any], Any]] = {
    "create": responses_create,
    "create-async": responses_create_async,
    "stream-helper": responses_helper,
    "stream-helper-async": responses_helper_async,
}
for _how in ("parse", "iter_lines", "iter_bytes", "iter_text"):
    CHAT_SHAPES[f"with_streaming_response-{_how}"] = streaming_response("chat", _how)
    CHAT_SHAPES[f"with_streaming_response-{_how}-async"] = async_streaming_response("chat", _how)
    RESPONSES_SHAPES[f"with_streaming_response-{_how}"] = streaming_response("responses", _how)
    RESPONSES_SHAPES[f"with_streaming_response-{_how}-async"] = async_streaming_response("responses", _how)


def observe(server: Any, script: Callable[[Any], None], read: Callable[[Any], Any], *, instrumented: bool) -> Any:
    """(what the app saw, the call records, the task summaries)."""
    script(server)
    if instrumented:
        costtrace.instrument("openai", "http")
    try:
        with capture() as got, costtrace.task("t"):
            seen = asyncio.run(read(server)) if inspect.iscoroutinefunction(read) else read(server)
    finally:
        costtrace.uninstrument("openai", "http")
    return seen, got


def _assert_same_and_exact(server: Any, script: Any, read: Any, usage: tuple[int, ...], cost: Any) -> Any:
    bare, bare_got = observe(server, script, read, instrumented=False)
    assert bare_got.calls == []
    seen, got = observe(server, script, read, instrumented=True)
    assert seen == bare
    assert len(server.requests) == 2  # one request per run: recorded once, never twice
    (rec,) = got.calls
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.cache_read_input_tokens) == usage[:3]
    assert rec.usage.source == "provider"
    assert rec.cost_usd == cost
    assert got.tasks[0].cost_complete
    return rec


@pytest.mark.parametrize("shape", list(CHAT_SHAPES))
def test_chat_stream_shape_is_unchanged_for_the_app_and_exact(llm_server: Any, shape: str) -> None:
    _assert_same_and_exact(llm_server, script_chat, CHAT_SHAPES[shape], (1200, 300, 1000), CHAT_COST)
    sent = llm_server.requests[1].body
    assert sent["stream_options"] == {"include_usage": True}  # asked for by costtrace, or by the app
    if not shape.startswith(("user-include_usage-on", "with_streaming_response")):
        assert "stream_options" not in llm_server.requests[0].body  # costtrace asked


@needs_responses
@pytest.mark.parametrize("shape", list(RESPONSES_SHAPES))
def test_responses_stream_shape_is_unchanged_for_the_app_and_exact(llm_server: Any, shape: str) -> None:
    rec = _assert_same_and_exact(llm_server, script_responses, RESPONSES_SHAPES[shape], (500, 80, 100), RESP_COST)
    assert rec.usage.reasoning_output_tokens == 20


@pytest.mark.parametrize("how", ["parse", "iter_lines", "iter_bytes", "iter_text"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_with_streaming_response_chat_without_include_usage_is_untouched_and_estimated(
    llm_server: Any, how: str, is_async: bool
) -> None:
    """The app reads the server's bytes: costtrace adds no stream_options there (the API would add
    ``"usage": null`` to every chunk); the usage is estimated from the streamed text."""
    maker = async_streaming_response if is_async else streaming_response
    read = maker("chat", how, include_usage=False)
    bare, _ = observe(llm_server, script_chat, read, instrumented=False)
    seen, got = observe(llm_server, script_chat, read, instrumented=True)
    assert seen == bare
    assert "stream_options" not in llm_server.requests[1].body
    (rec,) = got.calls
    assert rec.usage.source in ("estimated", "heuristic") and rec.usage.output_tokens > 0


def test_user_include_usage_off_is_respected_and_estimated(llm_server: Any) -> None:
    def read(server: Any) -> Any:
        with make_client(server) as c:
            stream = c.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": False})
            return [d(x) for x in stream]

    bare, _ = observe(llm_server, script_chat, read, instrumented=False)
    seen, got = observe(llm_server, script_chat, read, instrumented=True)
    assert seen == bare
    assert llm_server.requests[1].body["stream_options"] == {"include_usage": False}
    (rec,) = got.calls
    assert rec.usage.source in ("estimated", "heuristic")  # no usage from the provider: counted locally


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_early_close_gives_the_app_the_same_chunks(llm_server: Any, is_async: bool) -> None:
    def read(server: Any) -> Any:
        with make_client(server) as c:
            stream = c.chat.completions.create(**CHAT, stream=True)
            first = d(next(iter(stream)))
            stream.close()
            return first

    async def aread(server: Any) -> Any:
        async with make_client(server, is_async=True) as c:
            stream = await c.chat.completions.create(**CHAT, stream=True)
            first = d(await stream.__aiter__().__anext__())
            await stream.close()
            return first

    reader = aread if is_async else read
    bare, _ = observe(llm_server, script_chat, reader, instrumented=False)
    seen, got = observe(llm_server, script_chat, reader, instrumented=True)
    assert seen == bare
    (rec,) = got.calls
    assert rec.usage.source != "unknown"  # cut before its usage chunk: estimated, flagged


def test_with_streaming_response_closed_early_is_one_call(llm_server: Any) -> None:
    def read(server: Any) -> Any:
        with make_client(server) as c:
            with c.chat.completions.with_streaming_response.create(**CHAT, stream=True) as resp:
                return next(resp.iter_lines())

    bare, _ = observe(llm_server, script_chat, read, instrumented=False)
    seen, got = observe(llm_server, script_chat, read, instrumented=True)
    assert seen == bare
    assert len(got.calls) == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_accumulator_error_leaves_the_chunks_untouched(llm_server: Any, monkeypatch: Any, is_async: bool) -> None:
    from costtrace import _internal
    from costtrace.instrumentation import openai as ct_openai

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    def broken(self: Any, item: Any) -> bool:
        raise RuntimeError("costtrace bug")

    monkeypatch.setattr(ct_openai._ChatStream, "on_item", broken)
    read = chat_create_async if is_async else chat_create
    before = _internal.internal_error_counts().get("instrumentation.stream.item", 0)
    bare, _ = observe(llm_server, script_chat, chat_user_usage_on, instrumented=False)
    seen, got = observe(llm_server, script_chat, read, instrumented=True)
    assert seen == bare  # every chunk shown, the usage chunk too: nothing was read to hide it
    assert len(got.calls) == 1
    assert _internal.internal_error_counts()["instrumentation.stream.item"] - before == len(bare)
