"""The HTTP-level instrumentation (httpx and httpx2): requests counted on the current call, and LLM
requests no SDK instrumentation recorded, recorded from the HTTP exchange.

Everything talks to the local fake server with the real httpx / httpx2 clients and the real SDKs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import costtrace
from costtrace import semconv as sc
from costtrace.instrumentation.http import HTTPInstrumentor
from costtrace.testing import capture

httpx = pytest.importorskip("httpx")
try:
    import httpx2  # openai >= 3 and anthropic >= 2 send through it; absent with the lowest SDK versions
except ImportError:
    httpx2 = None

from tests.instrumentation import test_anthropic as ta  # noqa: E402  (their body builders; each needs its SDK)
from tests.instrumentation import test_google_genai as tg  # noqa: E402
from tests.instrumentation import test_openai as to  # noqa: E402

LIBS = [lib for lib in (httpx, httpx2) if lib is not None]
LIB_IDS = [lib.__name__ for lib in LIBS]


@pytest.fixture
def http_instrumented() -> Iterator[HTTPInstrumentor]:
    inst = HTTPInstrumentor()
    inst.instrument()
    yield inst
    inst.uninstrument()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- counting requests on the current call ----------------------------------------------------------


@pytest.mark.parametrize("lib", LIBS, ids=LIB_IDS)
def test_llm_request_is_counted_on_the_current_call(llm_server: Any, http_instrumented: Any, lib: Any) -> None:
    llm_server.json({"ok": True})
    llm_server.json({"ok": True})
    with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
        assert call.requests_sent == 0
        with lib.Client() as c:
            c.post(llm_server.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"})
            c.get(llm_server.url + "/v1/models")  # not an LLM call: not counted
        assert call.requests_sent == 1


@pytest.mark.parametrize("lib", LIBS, ids=LIB_IDS)
def test_async_llm_request_is_counted_on_the_current_call(llm_server: Any, http_instrumented: Any, lib: Any) -> None:
    llm_server.json({"ok": True})

    async def main() -> int:
        async with costtrace.llm_call(provider="anthropic", model="claude-sonnet-4-5") as call:
            async with lib.AsyncClient() as c:
                await c.post(llm_server.url + "/v1/messages", json={"model": "claude-sonnet-4-5"})
            return call.requests_sent

    assert run(main()) == 1


def test_no_request_sent_leaves_the_count_at_zero(http_instrumented: Any) -> None:
    with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
        pass
    assert call.requests_sent == 0


# --- recording LLM requests no instrumentation saw -----------------------------------------------------

MSGS = to.MSGS
CHAT_USAGE = to.usage_body(1200, 300, cached=1000)
CHAT_COST = to.ref_price(to.RESP_MODEL, input_tokens=1200, cache_read_tokens=1000, output_tokens=300)


def chat_request(stream: bool = False, include_usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": to.MODEL, "messages": MSGS}
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _one_call(got: Any) -> Any:
    assert len(got.calls) == 1, [c.request_model for c in got.calls]
    return got.calls[0]


def _assert_chat_exact(rec: Any) -> None:
    assert (rec.provider, rec.request_model, rec.response_model) == ("openai", to.MODEL, to.RESP_MODEL)
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.cache_read_input_tokens) == (1200, 300, 1000)
    assert rec.usage.source == "provider"
    assert rec.cost_usd == CHAT_COST
    assert rec.task_name == "t"


@pytest.mark.parametrize("lib", LIBS, ids=LIB_IDS)
def test_raw_json_post_inside_a_task_is_one_exact_call(
    llm_server: Any, http_instrumented: Any, lib: Any, spans: Any
) -> None:
    llm_server.json(to.chat_body(CHAT_USAGE))
    with capture() as got, costtrace.task("t"):
        with lib.Client() as c:
            r = c.post(llm_server.url + "/v1/chat/completions", json=chat_request())
        assert r.json()["usage"] == CHAT_USAGE  # the app's response is untouched
    _assert_chat_exact(_one_call(got))
    (summary,) = got.tasks
    assert summary.cost_complete and summary.cost_usd == CHAT_COST
    (span,) = spans.calls()
    assert span.attributes[sc.CALL_RECORDED_FROM] == "http"
    assert span.attributes[sc.SERVER_PORT] == int(llm_server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("lib", LIBS, ids=LIB_IDS)
def test_async_raw_json_post_inside_a_task_is_one_exact_call(llm_server: Any, http_instrumented: Any, lib: Any) -> None:
    llm_server.json(to.chat_body(CHAT_USAGE))

    async def main() -> None:
        async with costtrace.task("t"), lib.AsyncClient() as c:
            await c.post(llm_server.url + "/v1/chat/completions", json=chat_request())

    with capture() as got:
        run(main())
    _assert_chat_exact(_one_call(got))


def _sse_bytes(lib: Any, server: Any, how: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> Any:
    """Stream a POST and read it the app's way: the bytes (or lines) the app got."""
    with lib.Client() as c, c.stream("POST", server.url + path, json=body) as r:
        if how == "iter_bytes":
            return b"".join(r.iter_bytes())
        if how == "iter_lines":
            return list(r.iter_lines())
        if how == "iter_text":
            return "".join(r.iter_text())
        return r.read()


def _script_chat_stream(server: Any) -> None:
    server.sse(to.chat_chunks(["Hel", "lo"], usage=CHAT_USAGE), done=True)


@pytest.mark.parametrize("how", ["iter_bytes", "iter_lines", "iter_text", "read"])
@pytest.mark.parametrize("lib", LIBS, ids=LIB_IDS)
def test_raw_sse_stream_inside_a_task_is_one_exact_call_and_bytes_unchanged(
    llm_server: Any, lib: Any, how: str
) -> None:
    _script_chat_stream(llm_server)
    bare = _sse_bytes(lib, llm_server, how, chat_request(stream=True))
    inst = HTTPInstrumentor()
    inst.instrument()
    try:
        _script_chat_stream(llm_server)
        with capture() as got, costtrace.task("t"):
            seen = _sse_bytes(lib, llm_server, how, chat_request(stream=True))
    finally:
        inst.uninstrument()
    assert seen == bare
    rec = _one_call(got)
    _assert_chat_exact(rec)
    assert got.tasks[0].cost_complete


@pytest.mark.parametrize("lib", LIBS, ids=LIB_IDS)
def test_async_raw_sse_stream_is_exact(llm_server: Any, http_instrumented: Any, lib: Any) -> None:
    _script_chat_stream(llm_server)

    async def main() -> list[str]:
        async with costtrace.task("t"), lib.AsyncClient() as c:
            async with c.stream("POST", llm_server.url + "/v1/chat/completions", json=chat_request(True)) as r:
                return [line async for line in r.aiter_lines()]

    with capture() as got:
        lines = run(main())
    assert "data: [DONE]" in lines
    _assert_chat_exact(_one_call(got))


RESP_COST = to.ref_price("o4-mini-2025-04-16", input_tokens=500, cache_read_tokens=100, output_tokens=80)


@pytest.mark.parametrize("stream", [False, True])
def test_raw_responses_api_is_exact(llm_server: Any, http_instrumented: Any, stream: bool) -> None:
    usage = to.responses_usage(500, 80, cached=100, reasoning=20)
    if stream:
        llm_server.sse(to.responses_events(["Hi ", "team."], usage), named=True)
    else:
        llm_server.json(to.responses_body(usage))
    body = {"model": "o4-mini", "input": "hi", "stream": stream}
    with capture() as got, costtrace.task("t"):
        _sse_bytes(httpx, llm_server, "iter_bytes", body, "/v1/responses")
    rec = _one_call(got)
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.reasoning_output_tokens) == (500, 80, 20)
    assert rec.cost_usd == RESP_COST


def test_raw_embeddings_are_exact(llm_server: Any, http_instrumented: Any) -> None:
    llm_server.json(to.embeddings_body(8))
    with capture() as got, costtrace.task("t"):
        LIBS[-1].post(llm_server.url + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    rec = _one_call(got)
    assert (rec.operation, rec.usage.input_tokens) == ("embeddings", 8)
    assert rec.cost_usd == to.ref_price("text-embedding-3-small", input_tokens=8)


ANTH_USAGE = ta.usage_body(25, 12, cache_read=100, cache_write_5m=50)


@pytest.mark.parametrize("stream", [False, True])
def test_raw_anthropic_messages_are_exact(llm_server: Any, http_instrumented: Any, stream: bool) -> None:
    message = ta.message_body(ANTH_USAGE)
    if stream:
        llm_server.sse(ta.stream_events(message), named=True)
    else:
        llm_server.json(message)
    body = {"model": ta.MODEL, "max_tokens": 100, "messages": ta.PROMPT, "stream": stream}
    with capture() as got, costtrace.task("t"):
        _sse_bytes(httpx, llm_server, "iter_lines", body, "/v1/messages")
    rec = _one_call(got)
    assert rec.provider == "anthropic"
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (175, 12)
    assert (rec.usage.cache_read_input_tokens, rec.usage.cache_write_input_tokens) == (100, 50)
    ta.assert_priced_like_genai_prices(rec)


GEM_PATH = f"/v1beta/models/{tg.MODEL}"


@pytest.mark.parametrize("stream", [False, True])
def test_raw_gemini_generate_content_is_exact(llm_server: Any, http_instrumented: Any, stream: bool) -> None:
    usage = tg.usage(25, 12, cached=10)
    if stream:
        llm_server.sse(tg.stream_chunks(["Customer ", "wants a refund."], usage))
        path = GEM_PATH + ":streamGenerateContent?alt=sse"
    else:
        llm_server.json(tg.response_body(usage_metadata=usage))
        path = GEM_PATH + ":generateContent"
    with capture() as got, costtrace.task("t"):
        _sse_bytes(httpx, llm_server, "iter_bytes", {"contents": [{"parts": [{"text": tg.PROMPT}]}]}, path)
    rec = _one_call(got)
    assert (rec.provider, rec.request_model, rec.operation) == ("gcp.gemini", tg.MODEL, "generate_content")
    assert (rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.cache_read_input_tokens) == (25, 12, 10)
    assert rec.cost_usd == tg.ref_price(input_tokens=25, cache_read_tokens=10, output_tokens=12)


def test_outside_a_task_nothing_is_recorded(llm_server: Any, http_instrumented: Any) -> None:
    llm_server.json(to.chat_body(CHAT_USAGE))
    with capture() as got:
        httpx.post(llm_server.url + "/v1/chat/completions", json=chat_request())
    assert got.calls == []


def test_non_llm_requests_are_untouched(llm_server: Any, http_instrumented: Any) -> None:
    llm_server.json(to.chat_body(CHAT_USAGE))
    llm_server.json({"data": []})
    llm_server.json({"id": "msg_1"})
    with capture() as got, costtrace.task("t"):
        httpx.get(llm_server.url + "/v1/chat/completions")  # not a POST
        httpx.post(llm_server.url + "/v1/files", json={})
        httpx.post(llm_server.url + "/v1/threads/thread_1/messages", json={"role": "user", "content": "x"})
    assert got.calls == []
    assert got.tasks[0].cost_complete


def test_a_post_to_another_services_llm_like_path_without_a_model_is_untouched(
    llm_server: Any, http_instrumented: Any
) -> None:
    for _ in range(3):
        llm_server.json({"ok": True})
    with capture() as got, costtrace.task("t"):
        httpx.post(llm_server.url + "/api/chat/messages", json={"channel": "support", "text": "hi"})
        httpx.post(llm_server.url + "/hooks/completions", json={"job": 7})
        httpx.post(llm_server.url + "/api/messages", content=b"plain text")
    assert len(llm_server.requests) == 3
    assert got.calls == []
    assert got.tasks[0].cost_complete


def _unpriced(got: Any) -> str:
    rec = _one_call(got)
    assert not rec.cost.priced and rec.cost_usd is None
    (summary,) = got.tasks
    assert not summary.cost_complete and summary.unpriced_calls == 1
    return str(rec.cost.unpriced_reason)


def test_a_body_that_is_not_json_flags_the_task_incomplete(llm_server: Any, http_instrumented: Any) -> None:
    from tests.instrumentation.fake_server import Scripted

    llm_server._script.append(Scripted(200, b"<html>gateway page</html>", content_type="text/html"))
    with capture() as got, costtrace.task("t"):
        httpx.post(llm_server.url + "/v1/chat/completions", json=chat_request())
    assert "not JSON" in _unpriced(got)


def test_a_body_never_read_flags_the_task_incomplete(llm_server: Any, http_instrumented: Any) -> None:
    _script_chat_stream(llm_server)
    with capture() as got, costtrace.task("t"):
        with httpx.Client() as c:
            r = c.send(
                c.build_request("POST", llm_server.url + "/v1/chat/completions", json=chat_request(True)), stream=True
            )
            r.close()
    assert "never read" in _unpriced(got)


def test_a_response_dropped_unread_ends_its_call(llm_server: Any, http_instrumented: Any) -> None:
    import gc

    _script_chat_stream(llm_server)
    with capture() as got, costtrace.task("t"):
        with httpx.Client() as c:
            r = c.send(
                c.build_request("POST", llm_server.url + "/v1/chat/completions", json=chat_request(True)), stream=True
            )
            del r
            gc.collect()
            assert len(got.calls) == 1  # ended when collected, not at the task's end
    assert "never read" in _unpriced(got)


def test_a_stream_without_usage_flags_the_task_incomplete(llm_server: Any, http_instrumented: Any) -> None:
    llm_server.sse(to.chat_chunks(["Hel", "lo"]), done=True)
    with capture() as got, costtrace.task("t"):
        _sse_bytes(httpx, llm_server, "iter_bytes", chat_request(stream=True, include_usage=False))
    assert "include_usage" in _unpriced(got)


def test_a_stream_closed_early_is_unpriced_and_incomplete(llm_server: Any, http_instrumented: Any, spans: Any) -> None:
    llm_server.sse(to.chat_chunks(["Hel", "lo"], usage=CHAT_USAGE), done=True, stall_after=2)
    with capture() as got, costtrace.task("t"):
        with (
            httpx.Client() as c,
            c.stream("POST", llm_server.url + "/v1/chat/completions", json=chat_request(True)) as r,
        ):
            next(r.iter_lines())
    assert "not read to its end" in _unpriced(got)
    (span,) = spans.calls()
    assert span.attributes[sc.CALL_INCOMPLETE] is True


def test_an_error_reply_is_a_failed_attempt(llm_server: Any, http_instrumented: Any) -> None:
    llm_server.json(to.ERROR_400, status=429)
    llm_server.json(to.chat_body(CHAT_USAGE))
    with capture() as got, costtrace.task("t"):
        with httpx.Client() as c:
            assert c.post(llm_server.url + "/v1/chat/completions", json=chat_request()).status_code == 429
            c.post(llm_server.url + "/v1/chat/completions", json=chat_request())
    failed, ok = got.calls
    assert failed.error_type == "429" and ok.error_type is None
    (summary,) = got.tasks
    assert (summary.llm_calls, summary.retries, summary.first_pass) == (2, 1, False)
    assert ok.cost_usd == CHAT_COST


def test_the_call_span_is_current_while_the_request_is_sent(
    llm_server: Any, http_instrumented: Any, spans: Any
) -> None:
    from opentelemetry import trace

    seen: list[Any] = []

    def hook(request: Any) -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    llm_server.json(to.chat_body(CHAT_USAGE))
    with costtrace.task("t"), httpx.Client(event_hooks={"request": [hook]}) as c:
        c.post(llm_server.url + "/v1/chat/completions", json=chat_request())
    (span,) = spans.calls()
    assert seen == [span.context.span_id]


# --- SDKs: recorded once -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk_instrumented", [True, False], ids=["sdk-instrumented", "http-only"])
def test_openai_sdk_call_is_recorded_once(llm_server: Any, http_instrumented: Any, sdk_instrumented: bool) -> None:
    if sdk_instrumented:
        costtrace.instrument("openai")
    try:
        llm_server.json(to.chat_body(CHAT_USAGE))
        _script_chat_stream(llm_server)
        with capture() as got, costtrace.task("t"), to.make_client(llm_server) as client:
            client.chat.completions.create(model=to.MODEL, messages=MSGS)
            list(
                client.chat.completions.create(
                    model=to.MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True}
                )
            )
    finally:
        costtrace.uninstrument("openai")
    assert len(llm_server.requests) == len(got.calls) == 2
    for rec in got.calls:
        _assert_chat_exact(rec)


@pytest.mark.parametrize("sdk_instrumented", [True, False], ids=["sdk-instrumented", "http-only"])
def test_anthropic_sdk_call_is_recorded_once(llm_server: Any, http_instrumented: Any, sdk_instrumented: bool) -> None:
    if sdk_instrumented:
        costtrace.instrument("anthropic")
    try:
        message = ta.message_body(ANTH_USAGE)
        llm_server.json(message)
        llm_server.sse(ta.stream_events(message), named=True)
        with capture() as got, costtrace.task("t"):
            client = ta.sync_client(llm_server)
            client.messages.create(**ta.create_kwargs())
            with client.messages.stream(**ta.create_kwargs()) as s:
                s.get_final_message()
    finally:
        costtrace.uninstrument("anthropic")
    assert len(llm_server.requests) == len(got.calls) == 2
    for rec in got.calls:
        assert (rec.usage.input_tokens, rec.usage.output_tokens) == (175, 12)
        ta.assert_priced_like_genai_prices(rec)


@pytest.mark.parametrize("sdk_instrumented", [True, False], ids=["sdk-instrumented", "http-only"])
def test_google_genai_sdk_call_is_recorded_once(
    llm_server: Any, http_instrumented: Any, sdk_instrumented: bool
) -> None:
    if sdk_instrumented:
        costtrace.instrument("google_genai")
    try:
        usage = tg.usage(25, 12)
        llm_server.json(tg.response_body(usage_metadata=usage))
        llm_server.sse(tg.stream_chunks(["Customer ", "wants a refund."], usage))
        with capture() as got, costtrace.task("t"):
            client = tg.make_client(llm_server.url)
            client.models.generate_content(model=tg.MODEL, contents=tg.PROMPT)
            list(client.models.generate_content_stream(model=tg.MODEL, contents=tg.PROMPT))
    finally:
        costtrace.uninstrument("google_genai")
    assert len(llm_server.requests) == len(got.calls) == 2
    for rec in got.calls:
        assert (rec.usage.input_tokens, rec.usage.output_tokens) == (25, 12)
        assert rec.cost_usd == tg.ref_price(input_tokens=25, output_tokens=12)


# --- costtrace's own failures never reach the app -----------------------------------------------------


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("costtrace bug")


@pytest.mark.parametrize("where", ["_event", "_begin", "_on_response", "_llm_request"])
def test_costtrace_failure_leaves_the_request_untouched(
    llm_server: Any, http_instrumented: Any, spans: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from costtrace import _internal
    from costtrace.instrumentation import _bodytap
    from costtrace.instrumentation import http as ct_http

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    if where == "_event":
        monkeypatch.setattr(_bodytap.SSEReader, "_event", _boom)
    else:
        monkeypatch.setattr(ct_http, where, _boom)
    _script_chat_stream(llm_server)
    with capture() as got, costtrace.task("t"):
        seen = _sse_bytes(httpx, llm_server, "iter_bytes", chat_request(stream=True))
    assert seen.startswith(b"data: ") and seen.endswith(b"data: [DONE]\n\n")
    assert sum(_internal.internal_error_counts().values()) >= 1
    if where in ("_event", "_on_response"):
        (rec,) = got.calls  # the call started, so it ended: never a leaked span
        assert rec.cost_usd is None and not got.tasks[0].cost_complete
    else:
        assert got.calls == []
