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
from costtrace.instrumentation.http import HTTPInstrumentor

httpx = pytest.importorskip("httpx")
httpx2 = pytest.importorskip("httpx2")

LIBS = [httpx, httpx2]
LIB_IDS = ["httpx", "httpx2"]


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
