"""Hypothesis fuzzing of Anthropic Message bodies and stream events (the real SDK, a local server).

For every generated body or event sequence: the instrumented call returns what the bare SDK returns
(compared with ``model_dump()``), raises only what the bare call raises, and costtrace records exactly
one call whose token counts are non-negative ints, or whose usage is flagged unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import costtrace
from costtrace.testing import capture
from tests.instrumentation.fake_server import FakeLLMServer

MODEL = "claude-haiku-4-5"
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# None / missing / negative / huge / wrong-type token counts
valid_counts = st.integers(min_value=0, max_value=5000)
counts = st.one_of(
    valid_counts,
    valid_counts,
    valid_counts,
    valid_counts,
    valid_counts,
    st.none(),
    st.integers(min_value=-(10**6), max_value=-1),
    st.integers(min_value=10**12, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", "", "many"]),
    st.booleans(),
)
unknown_fields = st.dictionaries(
    st.sampled_from(["zz_new_field", "server_tool_use", "service_tier"]), counts, max_size=2
)


def usage_objects() -> st.SearchStrategy[Any]:
    optional = {
        "cache_read_input_tokens": counts,
        "cache_creation_input_tokens": counts,
        "cache_creation": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {}, optional={"ephemeral_5m_input_tokens": counts, "ephemeral_1h_input_tokens": counts}
            ),
        ),
        "output_tokens_details": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"thinking_tokens": counts})),
    }
    documented = st.fixed_dictionaries({"input_tokens": counts, "output_tokens": counts}, optional=optional)
    anything = st.fixed_dictionaries({}, optional={"input_tokens": counts, "output_tokens": counts, **optional})
    documented_usage = st.builds(lambda f, u: {**f, **u}, documented, unknown_fields)
    return st.one_of(
        documented_usage,
        documented_usage,
        documented_usage,
        st.builds(lambda f, u: {**f, **u}, anything, unknown_fields),
        st.none(),
    )


texts = st.text(alphabet="abc xyz", max_size=12)


def message_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda usage, text, stop, extra, drop_usage: {
            "id": "msg_fuzz",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            **({} if drop_usage else {"usage": usage}),
            **extra,
        },
        usage_objects(),
        texts,
        st.sampled_from(["end_turn", "max_tokens", None, 7]),
        unknown_fields,
        st.sampled_from([False, False, False, True]),
    )


def _events(
    start: Any, has_start: bool, deltas: list[str], unknown: bool, delta_usage: Any, has_delta: bool, stop: bool
) -> list[tuple[str, dict[str, Any]]]:
    """One stream: message_start (maybe without usage, maybe absent), text deltas, an unknown event,
    message_delta (cumulative usage, maybe absent), message_stop (maybe absent)."""
    events: list[tuple[str, dict[str, Any]]] = []
    if has_start:
        message: dict[str, Any] = {
            "id": "msg_fuzz",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if start is not None:
            message["usage"] = start
        events.append(("message_start", {"type": "message_start", "message": message}))
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
    for text in deltas:
        delta = {"type": "text_delta", "text": text}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    if unknown:
        events.append(("brand_new_event", {"type": "brand_new_event", "payload": {"x": 1}}))
    if has_start:
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if has_delta:
        body: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        }
        if delta_usage is not None:
            body["usage"] = delta_usage
        events.append(("message_delta", body))
    if stop:
        events.append(("message_stop", {"type": "message_stop"}))
    return events


def event_sequences() -> st.SearchStrategy[list[tuple[str, dict[str, Any]]]]:
    return st.builds(
        _events,
        usage_objects(),
        st.booleans(),
        st.lists(texts, max_size=3),
        st.booleans(),
        usage_objects(),
        st.booleans(),
        st.booleans(),
    )


def _dump(obj: Any) -> Any:
    # warnings=False: pydantic warns when serialising fields of unexpected types (both runs alike)
    return obj.model_dump(warnings=False) if hasattr(obj, "model_dump") else obj


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What the app sees: the result, or the exception's type and message."""
    try:
        return "ok", fn()
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (a body may carry NaN counts)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _compare(server: FakeLLMServer, script: Callable[[], None], run: Callable[[anthropic.Anthropic], Any]) -> None:
    script()
    with anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0) as client:
        bare = _outcome(lambda: run(client))
    script()
    costtrace.instrument("anthropic")
    try:
        with capture() as got, anthropic.Anthropic(base_url=server.url, api_key="test-key", max_retries=0) as client:
            instrumented = _outcome(lambda: run(client))
    finally:
        costtrace.uninstrument("anthropic")
    assert _same(instrumented, bare), (instrumented, bare)
    assert len(got.calls) == 1
    u = got.calls[0].usage
    event(f"{bare[0]}, usage {u.source}")
    if u.source != "unknown":
        for n in (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_write_input_tokens,
            u.cache_write_1h_input_tokens,
            u.reasoning_output_tokens,
        ):
            assert type(n) is int and n >= 0
        assert u.cache_read_input_tokens + u.cache_write_input_tokens <= u.input_tokens
    cost = got.calls[0].cost_usd
    assert cost is None or cost >= 0


@pytest.fixture(scope="module")
def server() -> Any:
    s = FakeLLMServer()
    yield s
    s.close()


def _body(usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_fuzz",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


@EXAMPLES
@given(body=message_bodies())
@example(
    body=_body(
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 7,
            "cache_creation_input_tokens": 3,
            "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2},
        }
    )
)
@example(body=_body({"input_tokens": -5, "output_tokens": 5, "cache_read_input_tokens": None}))
@example(body=_body({"input_tokens": 2**70, "output_tokens": 10**15, "cache_creation_input_tokens": 2**71}))
@example(body=_body({"input_tokens": "12", "output_tokens": float("nan"), "cache_read_input_tokens": True}))
@example(body=_body(None))
def test_fuzz_message_bodies(server: FakeLLMServer, body: dict[str, Any]) -> None:
    def run(client: anthropic.Anthropic) -> Any:
        return _dump(client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]))

    _compare(server, lambda: server.json(body), run)


def _stream_examples(f: Any) -> Any:
    """The hand-picked event sequences every stream fuzz test also runs."""
    f = example(
        events=_events(
            {
                "input_tokens": 10,
                "output_tokens": 1,
                "cache_read_input_tokens": 4,
                "cache_creation_input_tokens": 3,
                "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2},
            },
            True,
            ["a", "b"],
            False,
            {"output_tokens": 9},
            True,
            True,
        )
    )(f)
    f = example(
        events=_events(
            {
                "input_tokens": 10,
                "output_tokens": 1,
                "cache_read_input_tokens": 4,
                "cache_creation_input_tokens": 3,
                "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 2},
            },
            True,
            ["a"],
            True,
            {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 9},
            True,
            True,
        )
    )(f)
    f = example(events=_events(None, True, ["a"], False, {"output_tokens": -1}, True, False))(f)
    f = example(events=_events({"input_tokens": 5}, False, ["a"], True, None, True, True))(f)
    return f


@EXAMPLES
@given(events=event_sequences())
@_stream_examples
def test_fuzz_stream_events(server: FakeLLMServer, events: list[tuple[str, dict[str, Any]]]) -> None:
    def run(client: anthropic.Anthropic) -> Any:
        got: list[Any] = []
        stream = client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        try:
            for event in stream:
                got.append(_dump(event))
        finally:
            stream.close()
        return got

    _compare(server, lambda: server.sse(events, named=True), run)


@EXAMPLES
@given(events=event_sequences())
@_stream_examples
def test_fuzz_message_stream_helper(server: FakeLLMServer, events: list[tuple[str, dict[str, Any]]]) -> None:
    def run(client: anthropic.Anthropic) -> Any:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
            return _dump(s.get_final_message())

    _compare(server, lambda: server.sse(events, named=True), run)
