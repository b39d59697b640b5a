"""instructor (current release) through the real OpenAI SDK to the local server: a re-ask after a
``response_model`` validation error is a retry of the task, with no code from the user.

Each test checks the requests the server saw against the call records, the attempt lineage (attempts,
retries, first_pass, wasted cost == the failed call's genai-prices price) and the retry event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.frameworks.conftest import need

need("instructor")

import instructor  # noqa: E402
import openai  # noqa: E402
from instructor.core.exceptions import InstructorRetryException  # noqa: E402
from pydantic import BaseModel, field_validator  # noqa: E402

import costtrace  # noqa: E402
from costtrace import _internal  # noqa: E402
from costtrace import semconv as sc  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from tests.instrumentation.test_openai import MODEL, SECRET, chat_body, chunk, ref_price, usage_body  # noqa: E402

FIRST = usage_body(120, 30)
SECOND = usage_body(180, 25)


class User(BaseModel):
    name: str
    age: int

    @field_validator("name")
    @classmethod
    def upper(cls, v: str) -> str:
        if v != v.upper():
            raise ValueError("name must be uppercase")
        return v


def tool_reply(args: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """A chat completion calling instructor's response-model tool (Mode.TOOLS) with ``args``."""
    call = {"id": "call_1", "type": "function", "function": {"name": "User", "arguments": json.dumps(args)}}
    return chat_body(usage, content=None, finish="tool_calls", tool_calls=[call])


def price(usage: dict[str, Any]) -> Decimal:
    return ref_price(MODEL, input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"])


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    assert set(costtrace.instrument()) >= {"openai", "instructor"}
    yield
    costtrace.uninstrument()


_open: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        c = _open.pop()
        if isinstance(c, openai.AsyncOpenAI):
            asyncio.run(c.close())
        else:
            c.close()


def client(server: Any, *, is_async: bool = False) -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    sdk = cls(api_key=SECRET, base_url=server.url + "/v1", max_retries=0)
    _open.append(sdk)
    return instructor.from_openai(sdk)


def ask(c: Any, **kw: Any) -> Any:
    return c.chat.completions.create(
        model=MODEL, response_model=User, messages=[{"role": "user", "content": "Extract: jason is 25"}], **kw
    )


def retry_events(spans: Any) -> list[dict[str, Any]]:
    task = spans.one_task()
    return [dict(e.attributes) for e in task.events if e.name == sc.EVENT_RETRY]


def assert_one_validation_retry(got: Any, server: Any, spans: Any) -> None:
    assert len(server.requests) == 2
    assert len(got.calls) == 2
    (s,) = got.tasks
    assert (s.llm_calls, s.attempts, s.retries, s.first_pass) == (2, 2, 1, False)
    assert s.wasted_cost_usd == price(FIRST)
    assert s.cost_usd == price(FIRST) + price(SECOND)
    assert (s.input_tokens, s.output_tokens) == (300, 55)
    assert [c.attempt for c in got.calls] == [1, 2]
    (event,) = retry_events(spans)
    assert event[sc.EVENT_ATTR_REASON] == "validation_failed"
    assert event[sc.EVENT_ATTR_ATTEMPT] == 1
    assert "name: Value error, name must be uppercase" in event[sc.EVENT_ATTR_DETAILS]
    # instructor sent the validation error back to the model: the second request is the re-ask.
    assert "name must be uppercase" in json.dumps(server.requests[1].body["messages"])


def test_validation_error_then_success_is_one_retry_of_the_task(llm_server: Any, spans: Any) -> None:
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, SECOND))
    with capture() as got, costtrace.task("extract_user"):
        user = ask(client(llm_server), max_retries=2)
    assert user.name == "JASON"
    assert_one_validation_retry(got, llm_server, spans)


def test_async_validation_error_then_success_is_one_retry_of_the_task(llm_server: Any, spans: Any) -> None:
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, SECOND))

    async def main() -> User:
        c = client(llm_server, is_async=True)
        try:
            with costtrace.task("extract_user"):
                return await ask(c, max_retries=2)  # type: ignore[no-any-return]
        finally:
            await _open.pop().close()

    with capture() as got:
        user = asyncio.run(main())
    assert user.name == "JASON"
    assert_one_validation_retry(got, llm_server, spans)


def test_valid_first_answer_is_first_pass(llm_server: Any, spans: Any) -> None:
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, FIRST))
    with capture() as got, costtrace.task("extract_user"):
        ask(client(llm_server), max_retries=2)
    assert len(llm_server.requests) == len(got.calls) == 1
    (s,) = got.tasks
    assert (s.attempts, s.retries, s.first_pass, s.wasted_cost_usd) == (1, 0, True, Decimal(0))
    assert retry_events(spans) == []


def test_retries_exhausted_records_each_reask_not_the_final_failure(llm_server: Any, spans: Any) -> None:
    """max_retries=1: two answers fail, instructor raises. One re-ask was sent, so one retry; the last
    failure is the task's failure (the exception), not a retry."""
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "still lower", "age": 25}, SECOND))
    with capture() as got, pytest.raises(InstructorRetryException):
        with costtrace.task("extract_user"):
            ask(client(llm_server), max_retries=1)
    assert len(llm_server.requests) == len(got.calls) == 2
    (s,) = got.tasks
    assert (s.outcome, s.attempts, s.retries, s.first_pass) == ("failure", 2, 1, False)
    # The first attempt was retried, the second is the failed task's last attempt: all of it wasted.
    assert s.wasted_cost_usd == price(FIRST) + price(SECOND)
    assert len(retry_events(spans)) == 1


def test_retry_the_user_records_in_a_parse_error_hook_is_counted_once(llm_server: Any, spans: Any) -> None:
    """The README's manual pattern (a ``parse:error`` hook calling ``Task.retry``) keeps working, and the
    user's own hook still runs: the re-ask is one retry, with the user's reason."""
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, SECOND))
    seen: list[str] = []

    def on_parse_error(error: Exception) -> None:
        seen.append(type(error).__name__)
        task = costtrace.current_task()
        assert task is not None
        task.retry("schema_error", str(error))

    c = client(llm_server)
    c.on("parse:error", on_parse_error)
    with capture() as got, costtrace.task("extract_user"):
        ask(c, max_retries=2)
    assert seen == ["ValidationError"]
    (s,) = got.tasks
    assert (s.attempts, s.retries, s.first_pass, s.wasted_cost_usd) == (2, 1, False, price(FIRST))
    (event,) = retry_events(spans)
    assert event[sc.EVENT_ATTR_REASON] == "schema_error"


def tool_stream(args: dict[str, Any], usage: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a streamed tool call to instructor's response-model tool, then the usage chunk."""
    raw = json.dumps(args)

    def call(arguments: str, first: bool) -> list[dict[str, Any]]:
        head = {"id": "call_1", "type": "function"} if first else {}
        fn = {"name": "User", "arguments": arguments} if first else {"arguments": arguments}
        return [{"index": 0, **head, "function": fn}]

    return [
        chunk(role="assistant", tool_calls=call("", True), usage=None),
        chunk(tool_calls=call(raw[:8], False), usage=None),
        chunk(tool_calls=call(raw[8:], False), usage=None),
        chunk(finish="tool_calls", usage=None),
        chunk(choices=[], usage=usage),
    ]


def test_create_partial_reask_ends_the_dropped_stream_in_the_failed_attempt(llm_server: Any, spans: Any) -> None:
    """A streamed answer that fails validation: instructor re-asks without reading the rest of the stream
    (its usage chunk). Its call still ends in attempt 1 (usage estimated, flagged), before the retry:
    2 requests, 2 calls, 1 retry, the dropped call's cost wasted. The re-asked stream is exact."""
    llm_server.sse(tool_stream({"name": "jason", "age": 25}, FIRST), done=True)
    llm_server.sse(tool_stream({"name": "JASON", "age": 25}, SECOND), done=True)
    with capture() as got, costtrace.task("extract_user"):
        partials = list(
            client(llm_server).chat.completions.create_partial(
                model=MODEL,
                response_model=User,
                max_retries=2,
                messages=[{"role": "user", "content": "Extract: jason is 25"}],
                stream_options={"include_usage": True},
            )
        )
    assert partials[-1].name == "JASON"
    assert len(llm_server.requests) == len(got.calls) == 2
    first, second = got.calls
    assert (first.attempt, first.usage.source) == (1, "estimated")
    assert (second.attempt, second.usage.source) == (2, "provider")
    assert (second.usage.input_tokens, second.usage.output_tokens) == (180, 25)
    (s,) = got.tasks
    assert (s.attempts, s.retries, s.first_pass, s.estimated_calls) == (2, 1, False, 1)
    assert s.wasted_cost_usd == first.cost.total_usd > 0
    (event,) = retry_events(spans)
    assert "name must be uppercase" in event[sc.EVENT_ATTR_DETAILS]


def test_user_hooks_see_every_event_unchanged(llm_server: Any) -> None:
    """costtrace wraps the hook emitters: the user's handlers get the same events, arguments included."""
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, SECOND))
    events: list[tuple[str, Any]] = []
    c = client(llm_server)
    c.on("completion:kwargs", lambda *a, **kw: events.append(("kwargs", kw["model"])))
    c.on("parse:error", lambda e, **kw: events.append(("parse:error", kw.get("attempt_number"))))
    c.on("completion:response", lambda r: events.append(("response", r.usage.prompt_tokens)))
    with costtrace.task("extract_user"):
        ask(c, max_retries=2)
    assert events == [
        ("kwargs", MODEL),
        ("response", 120),
        ("parse:error", 1),
        ("kwargs", MODEL),
        ("response", 180),
    ]


def test_outside_a_task_nothing_is_recorded_and_the_call_works(llm_server: Any) -> None:
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, SECOND))
    with capture() as got:
        user = ask(client(llm_server), max_retries=2)
    assert user.name == "JASON"
    assert len(got.calls) == 2
    assert got.tasks == []


def test_an_internal_error_does_not_reach_instructor(llm_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """costtrace's own failure while noting the validation error is reported, never raised into the
    retry loop: the re-ask and its result are unchanged."""
    from costtrace.instrumentation import _retries

    def broken(*args: Any) -> None:
        raise RuntimeError("costtrace bug")

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(_retries, "snapshot", broken)
    monkeypatch.setattr("costtrace.instrumentation.instructor.snapshot", broken)
    llm_server.json(tool_reply({"name": "jason", "age": 25}, FIRST))
    llm_server.json(tool_reply({"name": "JASON", "age": 25}, SECOND))
    with capture() as got, costtrace.task("extract_user"):
        user = ask(client(llm_server), max_retries=2)
    assert user.name == "JASON"
    assert len(got.calls) == 2
    assert _internal.internal_error_counts().get("instructor.parse_error") == 1
