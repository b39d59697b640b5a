"""costtrace's cost per stream chunk, per provider: parsed SDK items iterated bare vs through costtrace.

Run: python benchmarks/bench_streams.py [--streams N] [--repeats R] [--chunks A B] [--async]

No SDK parsing and no HTTP: each provider's stream items are built once (the SDK's own model classes,
the way its stream constructs them) and iterated per stream, bare and through the stream proxy and
accumulator costtrace wraps that SDK's stream in (``SyncStreamProxy`` / ``AsyncStreamProxy`` and
the provider's accumulator). Rounds are interleaved (bare, costtrace, bare, ...) and the median
taken, so a shared machine's drift hits both alike. Printed per provider:

- per chunk: the slope of costtrace's overhead between streams of A and of B chunks: what each
  further chunk costs, the call's start/end excluded;
- per stream: the intercept (accumulator, proxy creation, the ``finish`` reading of usage, the call's
  end of an unstarted call: no span), for orientation only.

The target (issue 15): at most 1 µs of costtrace per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def openai_chat(n: int) -> list[Any]:
    from openai.types.chat import ChatCompletionChunk

    def chunk(choices: list[Any], usage: Any = None) -> Any:
        body: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        body["choices"] = choices
        body["usage"] = usage
        return ChatCompletionChunk.construct(**body)

    usage = {"prompt_tokens": 1200, "completion_tokens": 150, "total_tokens": 1350}
    items = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    items += [chunk([{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]) for _ in range(n)]
    items.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    items.append(chunk([], usage))
    return items


def openai_responses(n: int) -> list[Any]:
    from openai._models import construct_type
    from openai.types.responses import ResponseStreamEvent

    response = {"id": "r", "object": "response", "created_at": 1, "model": MODEL, "status": "in_progress"}
    response |= {"output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    done = response | {"status": "completed", "usage": {"input_tokens": 12, "output_tokens": n}}
    events: list[dict[str, Any]] = [{"type": "response.created", "sequence_number": 0, "response": response}]
    for i in range(n):
        events.append(
            {
                "type": "response.output_text.delta",
                "sequence_number": i + 1,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "delta": "tok ",
                "logprobs": [],
            }
        )
    events.append({"type": "response.completed", "sequence_number": n + 1, "response": done})
    return [construct_type(type_=ResponseStreamEvent, value=e) for e in events]


def anthropic_events(n: int) -> list[Any]:
    from anthropic._models import construct_type
    from anthropic.types import RawMessageStreamEvent

    message: dict[str, Any] = {"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5"}
    message["content"] = []
    message |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    events.append({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "tok "}}] * n
    events.append({"type": "content_block_stop", "index": 0})
    events.append({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n}})
    events.append({"type": "message_stop"})
    return [construct_type(type_=RawMessageStreamEvent, value=e) for e in events]


def google_chunks(n: int) -> list[Any]:
    from google.genai import types

    def chunk(text: str, i: int, last: bool) -> Any:
        body: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": i + 1, "totalTokenCount": 13 + i},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "g",
        }
        if last:
            body["candidates"][0]["finishReason"] = "STOP"
        return types.GenerateContentResponse._from_response(response=body, kwargs={})

    return [chunk("tok ", i, i == n - 1) for i in range(n)]


def make_proxy(provider: str, is_async: bool) -> Callable[[Any], Any]:
    """A function wrapping a bare iterable the way costtrace wraps ``provider``'s SDK stream."""
    from costtrace.calls import LLMCall

    if provider.startswith("openai"):
        from costtrace.instrumentation._base import AsyncStreamProxy, SyncStreamProxy
        from costtrace.instrumentation.openai import _ChatStream, _Request, _ResponsesStream

        proxy_cls: Any = AsyncStreamProxy if is_async else SyncStreamProxy
        kind = "responses" if provider == "openai.responses" else "chat"

        def wrap(stream: Any) -> Any:
            call = LLMCall("openai", MODEL)
            req = _Request(call, kind, MODEL, MESSAGES, True)
            acc = _ResponsesStream(req) if kind == "responses" else _ChatStream(req, hide_usage_chunk=False)
            return proxy_cls(stream, call, acc)

        return wrap
    if provider == "anthropic":
        from costtrace.instrumentation import anthropic as ca

        cls: Any = ca._AsyncStream if is_async else ca._SyncStream
        req = ca._Request("anthropic", "claude-sonnet-4-5", None, None, 1024, True, None, MESSAGES, None)

        def wrap_anthropic(stream: Any) -> Any:
            return cls(stream, LLMCall("anthropic", "claude-sonnet-4-5"), ca._StreamUsage(req))

        return wrap_anthropic
    from costtrace.instrumentation import google_genai as cg

    gcls: Any = cg._AsyncStream if is_async else cg._SyncStream
    kwargs = {"model": "gemini-2.5-flash", "contents": "Say hello."}

    def wrap_google(stream: Any) -> Any:
        return gcls(stream, LLMCall("gcp.gemini", "gemini-2.5-flash"), cg._StreamAccumulator(kwargs))

    return wrap_google


PROVIDERS: dict[str, Callable[[int], list[Any]]] = {
    "openai.chat": openai_chat,
    "openai.responses": openai_responses,
    "anthropic": anthropic_events,
    "google_genai": google_chunks,
}


class Items:
    """A stream's items, iterable the way the SDK's stream is (a fresh generator per ``iter()``)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        yield from self.items

    async def __aiter__(self) -> Any:
        for item in self.items:
            yield item

    def close(self) -> None:
        pass


def source(provider: str, items: list[Any], is_async: bool) -> Callable[[], Any]:
    """A new bare stream of ``items``: a generator for Google (its SDK returns one), else an SDK-like object."""
    if provider == "google_genai":
        if is_async:

            async def agen() -> Any:
                for item in items:
                    yield item

            return agen
        return lambda: (x for x in items)
    return lambda: Items(items)


def loops(provider: str, items: list[Any], is_async: bool) -> dict[str, Callable[[int], None]]:
    new = source(provider, items, is_async)
    wrap = make_proxy(provider, is_async)
    if not is_async:

        def bare(streams: int) -> None:
            for _ in range(streams):
                for _item in new():
                    pass

        def proxied(streams: int) -> None:
            for _ in range(streams):
                for _item in wrap(new()):
                    pass

        return {"bare": bare, "costtrace": proxied}

    async def abare(streams: int) -> None:
        for _ in range(streams):
            async for _item in new():
                pass

    async def aproxied(streams: int) -> None:
        for _ in range(streams):
            async for _item in wrap(new()):
                pass

    return {"bare": lambda s: asyncio.run(abare(s)), "costtrace": lambda s: asyncio.run(aproxied(s))}


def measure(provider: str, n_chunks: tuple[int, int], streams: int, repeats: int, is_async: bool) -> None:
    a, b = n_chunks
    variants: dict[str, Callable[[int], None]] = {}
    counts: dict[int, int] = {}
    for n in (a, b):
        items = PROVIDERS[provider](n)
        counts[n] = len(items)
        for name, loop in loops(provider, items, is_async).items():
            variants[f"{name}{n}"] = loop
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, loop in variants.items():
            gc.collect()
            start = time.process_time()
            loop(streams)
            samples[name].append((time.process_time() - start) / streams * 1e6)
    t = {name: statistics.median(v) for name, v in samples.items()}
    ov_a, ov_b = t[f"costtrace{a}"] - t[f"bare{a}"], t[f"costtrace{b}"] - t[f"bare{b}"]
    per_chunk = (ov_b - ov_a) / (counts[b] - counts[a])
    per_stream = ov_a - per_chunk * counts[a]
    bare_chunk = (t[f"bare{b}"] - t[f"bare{a}"]) / (counts[b] - counts[a])
    print(
        f"{provider:17} {'async' if is_async else 'sync ':5}  per chunk +{per_chunk:.3f} µs "
        f"(bare iteration {bare_chunk:.3f} µs), per stream +{per_stream:.2f} µs, "
        f"{counts[b]} items through costtrace: {t[f'costtrace{b}'] / counts[b]:.3f} µs/item"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=300, help="streams per round and variant")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunks", type=int, nargs=2, default=(10, 200), metavar=("A", "B"))
    parser.add_argument("--async", dest="is_async", action="store_true", help="async streams too")
    parser.add_argument("--only", choices=list(PROVIDERS), nargs="*", default=list(PROVIDERS))
    args = parser.parse_args()
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    for provider in args.only:
        for is_async in (False, True) if args.is_async else (False,):
            measure(provider, tuple(args.chunks), args.streams, args.repeats, is_async)


if __name__ == "__main__":
    main()
