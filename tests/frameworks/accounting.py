"""The accounting every framework test checks: the server's requests against costtrace's records.

One call record per request that reached the server (SDK re-sends aside: those are ``http.request.resend_count``
on one call span), tokens equal to the usage the server sent, cost equal to genai-prices, and every call span
on the task's trace, under the task's span.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import costtrace
from costtrace import semconv as sc
from costtrace.testing import Captured, capture
from tests.instrumentation.test_openai import chat_chunks, ref_price

Expected = tuple[str, int, int]
"""(response model, input tokens, output tokens) the server reported for one request."""


def assert_exact(
    got: Captured, spans: Any, server: Any, task: str, expected: list[Expected], *, request_model: str = "gpt-4o-mini"
) -> None:
    """``expected``: one entry per call, in any order (frameworks may send concurrently)."""
    assert len(server.requests) == len(expected), [r.path for r in server.requests]
    calls = [c for c in got.calls if c.task_name == task]
    assert len(calls) == len(got.calls) == len(expected), [(c.request_model, c.task_name) for c in got.calls]
    seen = sorted((c.response_model or "", c.usage.input_tokens, c.usage.output_tokens) for c in calls)
    assert seen == sorted(expected)
    for rec in calls:
        assert (rec.provider, rec.request_model) == ("openai", request_model)
        assert rec.usage.source == "provider", rec.usage
        assert rec.error_type is None
        model = rec.response_model or ""
        assert rec.cost.priced, rec.cost.unpriced_reason
        assert rec.cost_usd == ref_price(
            model, input_tokens=rec.usage.input_tokens, output_tokens=rec.usage.output_tokens
        ), model
    summary = got.task(task)
    assert summary.llm_calls == len(expected)
    assert summary.cost_complete
    assert summary.estimated_calls == 0
    total = sum((ref_price(m, input_tokens=i, output_tokens=o) for m, i, o in expected), Decimal(0))
    assert summary.cost_usd == total
    assert (summary.input_tokens, summary.output_tokens) == (sum(e[1] for e in expected), sum(e[2] for e in expected))
    assert_on_task_trace(spans, task, len(expected))


def assert_on_task_trace(spans: Any, task: str, n_calls: int) -> None:
    task_span = spans.one_task(task)
    calls = [s for s in spans.calls() if s.instrumentation_scope.name == "costtrace"]
    assert len(calls) == n_calls
    for span in calls:
        assert span.context.trace_id == task_span.context.trace_id
        assert span.parent is not None and span.parent.span_id == task_span.context.span_id
        assert span.attributes[sc.TASK_NAME] == task


def stream_twice(
    server: Any, consume: Callable[[], Any], task: str, usage: dict[str, Any], parts: list[str]
) -> tuple[Any, Any, Captured]:
    """The same chat stream without costtrace, then with it (inside ``task``): what the app got each time.

    The server answers as a real one: the usage-only chunk only when the request asked for it.
    """
    server.sse(chat_chunks(parts), done=True)
    plain = consume()
    costtrace.instrument()
    try:
        server.sse(chat_chunks(parts, usage=usage), done=True)  # costtrace asks for the usage (checked below)
        with capture() as got, costtrace.task(task):
            seen = consume()
    finally:
        costtrace.uninstrument()
    assert "stream_options" not in server.requests[0].body
    assert server.requests[1].body["stream_options"] == {"include_usage": True}
    del server.requests[0]  # the baseline request is not the task's
    return plain, seen, got
