"""Overhead of costtrace's HTTP instrumentation (httpx / httpx2 ``Client.send``), per request.

Run: python benchmarks/bench_http.py [--requests N] [--repeats R]

A real ``httpx`` and ``httpx2`` client with an in-process ``MockTransport`` returning canned bytes, so
no network time is measured: only httpx's own work and what costtrace adds to it. Printed per library:

- non-LLM request:      a POST to ``/v1/files`` inside a task, bare vs instrumented: the path check
                        every request pays;
- LLM request, counted: a POST to ``/v1/chat/completions`` inside a manual ``llm_call`` (an SDK call
                        in flight): the request is counted on the call, nothing else;
- LLM request, recorded: the same POST inside a task with no call current: recorded from the HTTP
                        exchange (call span, usage from the JSON body, pricing, task rollup), compared
                        with the bare request;
- LLM stream, recorded: a chat completion SSE stream of 20 chunks read with ``iter_lines``.

No OpenTelemetry SDK is installed (the API's no-op tracer), as in an app that has not configured one.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import time
from collections.abc import Callable
from typing import Any

import costtrace
from costtrace.instrumentation.http import HTTPInstrumentor

USAGE = {"prompt_tokens": 1200, "completion_tokens": 150, "prompt_tokens_details": {"cached_tokens": 1024}}
BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
).encode()
CHUNK = {"id": "c", "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {"content": "word "}}]}
SSE = b"".join(
    [f"data: {json.dumps(CHUNK)}\n\n".encode()] * 20
    + [f"data: {json.dumps({**CHUNK, 'choices': [], 'usage': USAGE})}\n\n".encode(), b"data: [DONE]\n\n"]
)
REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


def _client(lib: Any) -> Any:
    def handler(request: Any) -> Any:
        if request.url.path.endswith("/files"):
            return lib.Response(200, content=b"{}", headers={"content-type": "application/json"})
        if b'"stream"' in request.content:
            return lib.Response(200, content=SSE, headers={"content-type": "text/event-stream"})
        return lib.Response(200, content=BODY, headers={"content-type": "application/json"})

    return lib.Client(transport=lib.MockTransport(handler), base_url="http://bench.local")


def _time(fn: Callable[[], None], n: int) -> float:
    """µs per call over one loop of ``n`` calls."""
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def _compare(fn: Callable[[], None], n: int, repeats: int) -> tuple[float, float]:
    """(bare, instrumented) µs per call: loops alternate between the two, the fastest loop of each counts."""
    inst = HTTPInstrumentor()
    bare, timed = [], []
    for _ in range(repeats):
        bare.append(_time(fn, n))
        inst.instrument()
        try:
            timed.append(_time(fn, n))
        finally:
            inst.uninstrument()
    return min(bare), min(timed)


def bench(lib_name: str, n: int, repeats: int) -> None:
    lib = importlib.import_module(lib_name)
    client = _client(lib)

    def other() -> None:
        client.post("/v1/files", json={})

    def llm() -> None:
        client.post("/v1/chat/completions", json=REQUEST)

    def stream() -> None:
        with client.stream("POST", "/v1/chat/completions", json={**REQUEST, "stream": True}) as r:
            for _ in r.iter_lines():
                pass

    def in_task(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with costtrace.task("bench"):
                fn()

        return run

    def in_call(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with costtrace.task("bench"), costtrace.llm_call(provider="openai", model="gpt-4o-mini"):
                fn()

        return run

    shapes = {
        "non-LLM request, no task": other,
        "non-LLM request, in a task": in_task(other),
        "LLM request, outside a task": llm,
        "LLM request, counted on the current call": in_call(llm),
        "LLM request, recorded from HTTP": in_task(llm),
        "LLM stream (20 chunks), recorded from HTTP": in_task(stream),
    }
    print(f"\n{lib_name} {lib.__version__}: µs per request (fastest of {repeats} loops of {n})")
    print(f"  {'shape':<46}{'bare':>10}{'costtrace':>12}{'added':>10}")
    for name, fn in shapes.items():
        bare, timed = _compare(fn, n, repeats)
        print(f"  {name:<46}{bare:>10.1f}{timed:>12.1f}{timed - bare:>10.1f}")
    client.close()


def bench_wrapper(lib_name: str, n: int) -> None:
    """The wrapper alone around a no-op ``send``: what every request pays, free of httpx's own noise."""
    from costtrace.instrumentation.http import _send

    lib = importlib.import_module(lib_name)
    other = lib.Request("POST", "http://bench.local/v1/files", json={})
    llm = lib.Request("POST", "http://bench.local/v1/chat/completions", json=REQUEST)
    get = lib.Request("GET", "http://bench.local/v1/models")

    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    def loop(request: Any) -> float:
        args = (request,)
        kwargs: dict[str, Any] = {}
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(n):
                _send(noop, None, args, kwargs)
            best = min(best, (time.perf_counter_ns() - start) / n / 1000)
        return best

    def base() -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(n):
                noop(other)
            best = min(best, (time.perf_counter_ns() - start) / n / 1000)
        return best

    floor = base()
    print(f"\n{lib_name}: the wrapper alone around a no-op send, µs added per request (fastest of 5 x {n})")
    print(f"  GET (any path):                          {loop(get) - floor:6.2f}")
    print(f"  POST to a non-LLM path:                  {loop(other) - floor:6.2f}")
    print(f"  POST to an LLM path, outside a task:     {loop(llm) - floor:6.2f}")
    with costtrace.task("bench"), costtrace.llm_call(provider="openai", model="gpt-4o-mini"):
        print(f"  POST to an LLM path, counted on a call:  {loop(llm) - floor:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for lib_name in ("httpx", "httpx2"):
        try:
            bench_wrapper(lib_name, 100_000)
            bench(lib_name, args.requests, args.repeats)
        except ImportError:
            print(f"\n{lib_name}: not installed")


if __name__ == "__main__":
    main()
