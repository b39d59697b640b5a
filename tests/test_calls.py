"""One LLM call: span per the GenAI conventions, usage and cost, failure handling, metrics."""

from __future__ import annotations

import logging
from decimal import Decimal
from types import SimpleNamespace

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

import costtrace
from costtrace import _internal
from costtrace import semconv as sc


def ref_price(model: str, provider: str, **usage: int) -> Decimal:
    return calc_price(GPUsage(**usage), model, provider_id=provider).total_price


def test_call_span_follows_genai_conventions(spans):
    with costtrace.task("t", feature="support"):
        with costtrace.llm_call("openai", "gpt-4o-mini", server_address="api.openai.com", max_tokens=256) as call:
            call.record_response(
                {
                    "id": "chatcmpl-1",
                    "model": "gpt-4o-mini-2024-07-18",
                    "choices": [{"finish_reason": "stop"}],
                    "usage": {
                        "prompt_tokens": 1200,
                        "completion_tokens": 300,
                        "prompt_tokens_details": {"cached_tokens": 1024},
                        "completion_tokens_details": {"reasoning_tokens": 0},
                    },
                }
            )
    (span,) = spans.calls()
    assert span.name == "chat gpt-4o-mini"
    a = span.attributes
    assert a[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert a[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert a[sc.GEN_AI_RESPONSE_ID] == "chatcmpl-1"
    assert a[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert a[sc.SERVER_ADDRESS] == "api.openai.com"
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1200
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1024
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 300
    assert a[sc.USAGE_SOURCE] == "provider"
    assert a[sc.CALL_PRICED] is True
    assert a[sc.PRICE_SOURCE].startswith("genai-prices")
    assert a[sc.CALL_ATTEMPT] == 1
    assert a[sc.FEATURE] == "support"
    expected = ref_price(
        "gpt-4o-mini-2024-07-18", "openai", input_tokens=1200, cache_read_tokens=1024, output_tokens=300
    )
    assert a[sc.CALL_COST_USD] == pytest.approx(float(expected))
    parts = [
        sc.CALL_INPUT_COST_USD,
        sc.CALL_CACHE_READ_COST_USD,
        sc.CALL_CACHE_WRITE_COST_USD,
        sc.CALL_OUTPUT_COST_USD,
    ]
    assert sum(a.get(k, 0.0) for k in parts) == pytest.approx(a[sc.CALL_COST_USD])
    assert sc.CALL_CACHE_WRITE_COST_USD not in a  # zero parts are not written
    assert a[sc.CALL_CACHE_SAVINGS_USD] > 0


def test_record_response_reads_sdk_like_objects():
    resp = SimpleNamespace(
        id="msg_1",
        model="claude-3-5-haiku-20241022",
        type="message",
        stop_reason="end_turn",
        usage=SimpleNamespace(
            input_tokens=100, output_tokens=50, cache_read_input_tokens=2000, cache_creation_input_tokens=500
        ),
    )
    with costtrace.llm_call("anthropic", "claude-3-5-haiku-latest") as call:
        call.record_response(resp)
    rec = call.record
    assert rec.usage.input_tokens == 2600  # Anthropic's input_tokens excludes cache: normalised to the total
    assert rec.usage.cache_read_input_tokens == 2000
    assert rec.usage.cache_write_input_tokens == 500
    expected = ref_price(
        "claude-3-5-haiku-20241022",
        "anthropic",
        input_tokens=2600,
        cache_read_tokens=2000,
        cache_write_tokens=500,
        output_tokens=50,
    )
    assert rec.cost_usd == expected


def test_streamed_and_plain_calls_with_equal_usage_cost_the_same():
    plain = costtrace.record_llm_call("openai", "gpt-4o", 5000, 700, cache_read_input_tokens=4096)
    with costtrace.llm_call("openai", "gpt-4o", stream=True) as call:
        call.set_usage(5000, 700, cache_read_input_tokens=4096)
    assert plain.cost_usd == call.record.cost_usd


def test_body_exception_passes_through_and_span_is_error(spans):
    err = ValueError("bad request")
    with pytest.raises(ValueError) as info:
        with costtrace.llm_call("openai", "gpt-4o-mini"):
            raise err
    assert info.value is err
    (span,) = spans.calls()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes[sc.ERROR_TYPE] == "ValueError"
    assert span.attributes[sc.USAGE_SOURCE] == "unknown"
    assert span.attributes[sc.CALL_PRICED] is False


def test_no_usage_is_unknown_and_unpriced_never_zero(spans):
    with costtrace.llm_call("openai", "gpt-4o-mini") as call:
        call.record_response({"model": "gpt-4o-mini", "usage": None})
    rec = call.record
    assert rec.usage.source == "unknown"
    assert rec.cost_usd is None
    a = spans.calls()[0].attributes
    assert sc.CALL_COST_USD not in a
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in a
    assert "usage unknown" in a[sc.CALL_UNPRICED_REASON]


def test_unknown_model_is_flagged_unpriced_with_one_warning(spans, caplog):
    caplog.set_level(logging.WARNING, logger="costtrace")
    for _ in range(3):
        rec = costtrace.record_llm_call("openai", "acme-finetune-xyz-123", 100, 10)
        assert rec.cost_usd is None
        assert rec.cost.priced is False
    warnings = [r for r in caplog.records if "acme-finetune-xyz-123" in r.getMessage()]
    assert len(warnings) == 1
    a = spans.calls()[0].attributes
    assert a[sc.CALL_PRICED] is False
    assert sc.CALL_COST_USD not in a


def test_response_model_unpriced_falls_back_to_request_model():
    rec_call = costtrace.llm_call("azure.ai.openai", "gpt-4o-mini")
    with rec_call as call:
        call.set_usage(1000, 100)
        call.set_response_model("my-deployment-name")
    assert call.record.cost.priced is True


def test_estimate_usage_is_flagged_estimated(spans):
    with costtrace.llm_call("openai", "gpt-4") as call:
        call.estimate_usage(input=[{"role": "user", "content": "hello there"}], output="hi!")
    rec = call.record
    assert rec.usage.source in ("estimated", "heuristic")
    assert rec.usage.input_tokens > 0 and rec.usage.output_tokens > 0
    assert spans.calls()[0].attributes[sc.USAGE_SOURCE] == rec.usage.source


INVALID_COUNTS = [None, -1, float("nan"), float("inf"), "100", True, 10**30, 2.5, Decimal("100")]


@pytest.mark.parametrize("bad", INVALID_COUNTS, ids=repr)
def test_invalid_counts_make_the_call_unknown_never_zero(bad, caplog, spans):
    """A count that is not a count is never read as 0 tokens (a $0 call): the usage is unknown, the
    call unpriced with the reason, and its task's cost incomplete."""
    with costtrace.task("t") as t:
        with costtrace.llm_call("openai", "gpt-4o-mini") as call:
            call.set_usage(bad, bad)  # type: ignore[arg-type]
    rec = call.record
    assert rec.usage.source == "unknown"
    assert rec.cost.priced is False and rec.cost_usd is None
    assert rec.cost.unpriced_reason.startswith("invalid usage: input_tokens=")
    assert "invalid usage" in caplog.text
    a = spans.calls()[0].attributes
    assert a[sc.CALL_PRICED] is False and a[sc.USAGE_SOURCE] == "unknown"
    assert sc.CALL_COST_USD not in a and sc.GEN_AI_USAGE_INPUT_TOKENS not in a
    assert a[sc.CALL_UNPRICED_REASON] == rec.cost.unpriced_reason
    assert t.summary.unpriced_calls == 1 and t.summary.cost_complete is False
    assert t.summary.cost_usd is None


@pytest.mark.parametrize("bad", INVALID_COUNTS, ids=repr)
def test_record_llm_call_with_invalid_counts_is_unpriced(bad):
    rec = costtrace.record_llm_call("openai", "gpt-4o-mini", 100, bad)  # type: ignore[arg-type]
    assert rec.usage.source == "unknown" and rec.cost_usd is None
    assert "output_tokens=" in rec.cost.unpriced_reason


@pytest.mark.parametrize("field", ["cache_read_input_tokens", "reasoning_output_tokens", "cache_write_input_tokens"])
def test_an_invalid_subset_makes_the_usage_unknown(field):
    rec = costtrace.record_llm_call("openai", "gpt-4o-mini", 100, 10, **{field: -3})
    assert rec.usage.source == "unknown" and rec.cost_usd is None
    assert rec.cost.unpriced_reason == f"invalid usage: {field}=-3 is negative"


def test_make_usage_validates_and_clamps_like_the_conventions():
    from costtrace.caller_usage import make_usage

    assert make_usage(input_tokens=None, output_tokens=5).source == "unknown"
    assert make_usage(input_tokens=10**30).source == "unknown"
    # A subset above its total is a provider glitch, clamped to the total as costtrace.usage does.
    u = make_usage(input_tokens=100, output_tokens=10, cache_read_input_tokens=500, reasoning_output_tokens=50)
    assert (u.source, u.cache_read_input_tokens, u.reasoning_output_tokens) == ("provider", 100, 10)
    # Integral floats (as JSON gives) are counts; subsets left as None are "none reported".
    u = make_usage(input_tokens=100.0, output_tokens=10, cache_read_input_tokens=None)
    assert (u.source, u.input_tokens, u.cache_read_input_tokens) == ("provider", 100, 0)


def test_valid_usage_after_an_invalid_one_prices_the_call():
    with costtrace.llm_call("openai", "gpt-4o-mini") as call:
        call.set_usage(-1, 10)
        call.record_response({"usage": {"prompt_tokens": 100, "completion_tokens": 10}})
    assert call.record.cost.priced is True and call.record.cost_usd > 0


def test_internal_error_never_reaches_the_caller(monkeypatch, spans):
    """costtrace's own failure is logged and counted; the user's value and exceptions are untouched."""
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    from costtrace.price import catalog as pricing

    def broken_cost(*args, **kwargs):
        raise ZeroDivisionError("bug in costtrace")

    monkeypatch.setattr(pricing.PriceCatalog, "cost", broken_cost)
    with costtrace.task("t") as t:
        with costtrace.llm_call("openai", "gpt-4o-mini") as call:
            call.set_usage(10, 10)
            value = "user result"
        with pytest.raises(KeyError):
            with costtrace.llm_call("openai", "gpt-4o-mini") as call2:
                call2.set_usage(5, 0)
                raise KeyError("user error")
    assert value == "user result"
    assert _internal.internal_error_counts()["calls.price"] == 2
    flagged = [s for s in spans.calls() if s.attributes.get(sc.INTERNAL_ERROR)]
    assert len(flagged) == 2
    # The calls still count in the task, flagged unpriced rather than dropped or priced at $0.
    assert (t.summary.llm_calls, t.summary.unpriced_calls) == (2, 2)
    assert spans.one_task().attributes[sc.TASK_OUTCOME] == "success"


def test_internal_error_raises_under_the_test_suite(monkeypatch):
    from costtrace.price import catalog as pricing

    monkeypatch.setattr(pricing.PriceCatalog, "cost", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1, 1)


def test_internal_error_in_a_listener_is_contained(monkeypatch):
    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    from costtrace import records

    class Bad:
        def on_call(self, record):
            raise RuntimeError("listener bug")

        def on_task(self, summary):
            raise RuntimeError("listener bug")

    bad = Bad()
    records.add_listener(bad)
    try:
        with costtrace.task("t"):
            rec = costtrace.record_llm_call("openai", "gpt-4o-mini", 1, 1)
    finally:
        records.remove_listener(bad)
    assert rec is not None
    counts = _internal.internal_error_counts()
    assert counts["records.listener.on_call"] == 1
    assert counts["records.listener.on_task"] == 1


def test_metrics_follow_conventions_and_stay_bounded(metric_points):
    with costtrace.task("resolve_bounded_metrics", feature="support", customer="cust-123", user="u-9"):
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 200, duration_s=0.5)
    m = metric_points.collect()
    usage_points = m["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: p for p in usage_points}
    assert by_type["input"].sum == 1000 and by_type["output"].sum == 200
    assert by_type["input"].attributes["gen_ai.provider.name"] == "openai"
    (duration,) = m["gen_ai.client.operation.duration"]
    assert duration.sum == pytest.approx(0.5, abs=0.01)
    (tasks,) = m["costtrace.tasks"]
    assert tasks.value == 1
    assert tasks.attributes == {
        "costtrace.task.name": "resolve_bounded_metrics",
        "costtrace.task.outcome": "success",
        "costtrace.feature": "support",
        "costtrace.task.first_pass": True,
    }
    # An observable counter: cumulative, so this test's task name is its own.
    (cost,) = [
        p for p in m["costtrace.llm.cost"] if p.attributes.get("costtrace.task.name") == "resolve_bounded_metrics"
    ]
    assert cost.attributes == {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "costtrace.feature": "support",
        "costtrace.task.name": "resolve_bounded_metrics",
    }
    assert cost.value == pytest.approx(float(ref_price("gpt-4o-mini", "openai", input_tokens=1000, output_tokens=200)))
    for points in m.values():
        for p in points:
            assert "costtrace.customer" not in p.attributes
            assert "costtrace.user" not in p.attributes


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -3.0, "slow"])
def test_record_llm_call_with_a_bad_duration_still_records_the_cost(bad):
    rec = costtrace.record_llm_call("openai", "gpt-4o-mini", 100, 10, duration_s=bad)
    assert rec is not None
    assert rec.duration_s == 0.0
    assert rec.cost_usd == ref_price("gpt-4o-mini", "openai", input_tokens=100, output_tokens=10)
