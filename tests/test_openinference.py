"""OpenInference attributes (span kind, task input/output, llm.cost.*) and task span status from outcomes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest
from opentelemetry.trace import StatusCode

import costtrace
from costtrace import semconv as sc
from costtrace import span_options
from costtrace.price import catalog as pricing

CHEAP = "gpt-4o-mini"
PRICED = "oi-test-model"
"""A model priced here with its own cache and reasoning rates, so every part of ``llm.cost.*`` is non-zero."""
OI_TASK_KEYS = (sc.OPENINFERENCE_SPAN_KIND, sc.INPUT_VALUE, sc.INPUT_MIME_TYPE, sc.OUTPUT_VALUE, sc.OUTPUT_MIME_TYPE)
LLM_COST_KEYS = (
    sc.LLM_COST_TOTAL,
    sc.LLM_COST_PROMPT,
    sc.LLM_COST_COMPLETION,
    sc.LLM_COST_PROMPT_DETAILS_INPUT,
    sc.LLM_COST_PROMPT_DETAILS_CACHE_READ,
    sc.LLM_COST_PROMPT_DETAILS_CACHE_WRITE,
    sc.LLM_COST_COMPLETION_DETAILS_OUTPUT,
    sc.LLM_COST_COMPLETION_DETAILS_REASONING,
)


@pytest.fixture
def priced_model() -> Iterator[str]:
    pricing._reset_default_catalog_for_tests()
    costtrace.set_price(
        PRICED,
        provider="openai",
        input_per_mtok=1,
        cache_read_per_mtok="0.1",
        cache_write_per_mtok="1.25",
        output_per_mtok=4,
        reasoning_per_mtok=8,
    )
    yield PRICED
    pricing._reset_default_catalog_for_tests()


def call(model: str = CHEAP, input_tokens: int = 1000, output_tokens: int = 100) -> costtrace.CallRecord:
    return costtrace.record_llm_call("openai", model, input_tokens, output_tokens)


# --- task span status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mark", "reason", "code", "description"),
    [
        ("succeed", None, StatusCode.UNSET, None),
        ("partial", "2 of 3 fields", StatusCode.UNSET, None),
        ("fail", "validation_failed", StatusCode.ERROR, "failure: validation_failed"),
        ("fail", None, StatusCode.ERROR, "failure"),
        ("escalate_to_human", "angry customer", StatusCode.ERROR, "escalated_to_human: angry customer"),
        ("escalate_to_human", None, StatusCode.ERROR, "escalated_to_human"),
    ],
)
def test_outcome_sets_task_span_status(spans, mark, reason, code, description):
    with costtrace.task("t") as t:
        call()
        getattr(t, mark)() if mark == "succeed" else getattr(t, mark)(reason)
    s = spans.one_task()
    assert s.status.status_code is code
    assert s.status.description == description
    assert sc.ERROR_TYPE not in s.attributes  # no exception: error.type stays the exception's


def test_a_task_that_returns_is_unset(spans):
    with costtrace.task("t"):
        call()
    assert spans.one_task().status.status_code is StatusCode.UNSET


def test_raised_body_is_error_with_outcome_and_exception_class(spans):
    with pytest.raises(KeyError):
        with costtrace.task("t"):
            call()
            raise KeyError("x")
    s = spans.one_task()
    assert (s.status.status_code, s.status.description) == (StatusCode.ERROR, "failure: KeyError")
    assert s.attributes[sc.ERROR_TYPE] == "KeyError"


def test_fail_then_raise_names_the_exception_and_keeps_the_reason(spans):
    with pytest.raises(ValueError):
        with costtrace.task("t") as t:
            t.fail("validation_failed")
            raise ValueError("bad")
    s = spans.one_task()
    assert (s.status.status_code, s.status.description) == (StatusCode.ERROR, "failure: ValueError")
    assert s.attributes[sc.TASK_OUTCOME_REASON] == "validation_failed"


def test_success_when_false_is_error(spans):
    @costtrace.track_task("t", success_when=lambda r: r == "ok")
    def work() -> str:
        return "nope"

    assert work() == "nope"
    s = spans.one_task()
    assert (s.status.status_code, s.status.description) == (StatusCode.ERROR, "failure: success_when returned False")


def test_generator_closed_early_is_partial_and_unset(spans):
    @costtrace.track_task("gen")
    def items() -> Iterator[int]:
        yield 1
        yield 2

    it = items()
    next(it)
    it.close()
    s = spans.one_task()
    assert s.attributes[sc.TASK_OUTCOME] == "partial"
    assert s.status.status_code is StatusCode.UNSET


def test_failure_status_off(spans):
    costtrace.configure_spans(task_status=False)
    with costtrace.task("failed") as t:
        t.fail("validation_failed")
    with pytest.raises(ValueError):
        with costtrace.task("raised"):
            raise ValueError
    assert spans.one_task("failed").status.status_code is StatusCode.UNSET
    raised = spans.one_task("raised").status
    assert (raised.status_code, raised.description) == (StatusCode.ERROR, "ValueError")  # as before the setting


def test_a_long_reason_is_cut_in_the_status_description(spans):
    with costtrace.task("t") as t:
        t.fail("x" * 5000)
    assert len(spans.one_task().status.description) == 1024


# --- task span: OpenInference ---------------------------------------------------------------------


def test_task_span_is_a_chain_with_its_dimensions_as_input(spans):
    with costtrace.task("resolve_ticket", feature="support", team="cx", customer="acme", user="u1", region="eu"):
        call()
    a = spans.one_task().attributes
    assert a[sc.OPENINFERENCE_SPAN_KIND] == "CHAIN"
    assert a[sc.INPUT_MIME_TYPE] == "application/json"
    assert json.loads(a[sc.INPUT_VALUE]) == {
        "task": "resolve_ticket",
        "feature": "support",
        "team": "cx",
        "customer": "acme",
        "user": "u1",
        "region": "eu",
    }
    assert a[sc.OUTPUT_MIME_TYPE] == "text/plain"


def test_input_value_keeps_a_dimension_named_like_a_built_in_apart(spans):
    with costtrace.task("t", feature="support") as t:
        t.set_dimensions(task="other", tier="gold")  # set while running: the input shows the final ones
    assert json.loads(spans.one_task().attributes[sc.INPUT_VALUE]) == {
        "task": "t",
        "feature": "support",
        "dimension.task": "other",
        "tier": "gold",
    }


def test_an_apps_own_span_kind_is_kept(spans):
    with costtrace.task("agent", attributes={sc.OPENINFERENCE_SPAN_KIND: "AGENT"}):
        pass
    assert spans.one_task().attributes[sc.OPENINFERENCE_SPAN_KIND] == "AGENT"


def test_output_value_of_a_first_pass_success(spans):
    with costtrace.task("t") as t:
        call()
        call()
    cost = t.summary.cost_usd
    assert cost == Decimal("0.00042")  # 2 x (1000 x 0.15 + 100 x 0.60) per Mtok
    assert spans.one_task().attributes[sc.OUTPUT_VALUE] == "success · $0.000420 · 2 LLM calls · first pass"


def test_output_value_of_a_failure_with_retry_and_escalation(spans):
    with costtrace.task("t") as t:
        call()
        t.retry(reason="validation_failed")
        call()
        t.escalate("gpt-4o", reason="still_invalid")
        call("gpt-4o", 1000, 100)
        t.fail("validation_failed")
    cost = t.summary.cost_usd
    assert cost == Decimal("0.00042") + Decimal("0.0035")
    assert spans.one_task().attributes[sc.OUTPUT_VALUE] == (
        "failure (validation_failed) · $0.00392 · 3 LLM calls · 3 attempts · 1 retry · 1 escalation"
    )


def test_output_value_of_nested_tasks_counts_the_subtasks_cost_and_calls(spans):
    with costtrace.task("parent") as parent:
        call()
        with costtrace.task("child"):
            call()
            with costtrace.task("grandchild"):
                call()
    assert parent.summary.cost_usd == Decimal("0.00063")
    assert spans.one_task("parent").attributes[sc.OUTPUT_VALUE] == "success · $0.000630 · 3 LLM calls · first pass"
    assert spans.one_task("child").attributes[sc.OUTPUT_VALUE] == "success · $0.000420 · 2 LLM calls · first pass"
    # The span's own rollup still counts its own calls only: sums over task spans count each call once.
    assert spans.one_task("parent").attributes[sc.TASK_COST_USD] == pytest.approx(0.00021)


def test_output_value_of_an_unpriced_subtask_is_a_lower_bound(spans):
    with costtrace.task("parent"):
        call()
        with costtrace.task("child"):
            call("no-such-model-xyz")
            call("no-such-model-xyz")
    assert spans.one_task("parent").attributes[sc.OUTPUT_VALUE] == (
        "success · >=$0.000210 (2 unpriced calls) · 3 LLM calls · first pass"
    )
    assert spans.one_task("child").attributes[sc.OUTPUT_VALUE] == (
        "success · >=$0 (2 unpriced calls) · 2 LLM calls · first pass"
    )


def test_output_value_puts_a_long_reason_on_one_short_line(spans):
    with costtrace.task("t") as t:
        t.fail("line one\nline two " + "x" * 500)
    out = spans.one_task().attributes[sc.OUTPUT_VALUE]
    assert "\n" not in out
    assert out.startswith("failure (line one line two xxx")
    assert out.endswith("…) · $0 · 0 LLM calls")


def test_task_spans_never_carry_costs_or_tokens_a_backend_would_sum(spans, priced_model):
    with costtrace.task("parent"):
        costtrace.record_llm_call("openai", priced_model, 3000, 500, cache_read_input_tokens=1000)
        with costtrace.task("child"):
            call()
    for s in spans.tasks():
        assert not [k for k in s.attributes if k.startswith(("llm.token_count", "llm.cost", "gen_ai.usage"))]


def test_openinference_off_leaves_task_spans_as_before(spans):
    costtrace.configure_spans(openinference=False)
    with costtrace.task("t", feature="support"):
        call()
    a = spans.one_task().attributes
    assert not [k for k in OI_TASK_KEYS if k in a]
    assert not [k for k in spans.calls()[0].attributes if k.startswith(("llm.", "openinference."))]


# --- call spans -------------------------------------------------------------------------------------


def test_priced_call_carries_llm_cost_equal_to_costtraces(spans, priced_model):
    rec = costtrace.record_llm_call(
        "openai",
        priced_model,
        10_000,
        2_000,
        cache_read_input_tokens=4_000,
        cache_write_input_tokens=1_000,
        reasoning_output_tokens=500,
    )
    c = rec.cost
    # Every part is non-zero, so every attribute is there to compare.
    assert all((c.input_usd, c.cache_read_usd, c.cache_write_usd, c.output_usd, c.reasoning_usd))
    (span,) = spans.calls()
    a = span.attributes
    assert a[sc.OPENINFERENCE_SPAN_KIND] == "LLM"
    assert a[sc.LLM_COST_TOTAL] == a[sc.CALL_COST_USD] == float(c.total_usd)
    assert a[sc.LLM_COST_PROMPT_DETAILS_INPUT] == a[sc.CALL_INPUT_COST_USD]
    assert a[sc.LLM_COST_PROMPT_DETAILS_CACHE_READ] == a[sc.CALL_CACHE_READ_COST_USD]
    assert a[sc.LLM_COST_PROMPT_DETAILS_CACHE_WRITE] == a[sc.CALL_CACHE_WRITE_COST_USD]
    assert a[sc.LLM_COST_COMPLETION_DETAILS_OUTPUT] == a[sc.CALL_OUTPUT_COST_USD]
    assert a[sc.LLM_COST_COMPLETION_DETAILS_REASONING] == a[sc.CALL_REASONING_COST_USD]
    assert a[sc.LLM_COST_PROMPT] == float(c.input_usd + c.cache_read_usd + c.cache_write_usd)
    assert a[sc.LLM_COST_COMPLETION] == float(c.output_usd + c.reasoning_usd)
    # By hand, per Mtok: 5000 uncached x 1 + 4000 x 0.1 + 1000 x 1.25; 1500 output x 4 + 500 reasoning x 8.
    assert (c.input_usd, c.cache_read_usd, c.cache_write_usd) == (
        Decimal("0.005"),
        Decimal("0.0004"),
        Decimal("0.00125"),
    )
    assert (c.output_usd, c.reasoning_usd) == (Decimal("0.006"), Decimal("0.004"))
    assert a[sc.LLM_COST_TOTAL] == float(Decimal("0.01665"))


def test_zero_parts_are_left_out_like_costtraces(spans):
    call()
    a = spans.calls()[0].attributes
    assert a[sc.LLM_COST_PROMPT] == a[sc.LLM_COST_PROMPT_DETAILS_INPUT] == a[sc.CALL_INPUT_COST_USD]
    assert a[sc.LLM_COST_COMPLETION] == a[sc.LLM_COST_COMPLETION_DETAILS_OUTPUT] == a[sc.CALL_OUTPUT_COST_USD]
    for key in (
        sc.LLM_COST_PROMPT_DETAILS_CACHE_READ,
        sc.LLM_COST_PROMPT_DETAILS_CACHE_WRITE,
        sc.LLM_COST_COMPLETION_DETAILS_REASONING,
    ):
        assert key not in a


def test_unpriced_call_has_no_llm_cost_never_zero(spans):
    call("no-such-model-xyz")
    with costtrace.llm_call("openai", CHEAP):  # no usage: unknown, unpriced
        pass
    for span in spans.calls():
        a = span.attributes
        assert a[sc.CALL_PRICED] is False
        assert a[sc.OPENINFERENCE_SPAN_KIND] == "LLM"
        assert not [k for k in a if k.startswith("llm.cost")]


def test_embeddings_call_is_an_embedding_span(spans):
    costtrace.record_llm_call("openai", "text-embedding-3-small", 1000, 0, operation="embeddings")
    assert spans.calls()[0].attributes[sc.OPENINFERENCE_SPAN_KIND] == "EMBEDDING"


def test_llm_cost_off(spans, priced_model):
    costtrace.configure_spans(openinference=False)
    costtrace.record_llm_call("openai", priced_model, 1000, 100)
    a = spans.calls()[0].attributes
    assert sc.CALL_COST_USD in a
    assert not [k for k in a if k.startswith(("llm.", "openinference."))]


def test_a_bug_in_the_openinference_cost_never_loses_the_call(spans, monkeypatch):
    from costtrace import call_attributes

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(
        call_attributes, "_add_openinference_cost", call_attributes.guarded("calls.openinference")(broken)
    )
    with costtrace.task("t") as t:
        call()
    assert t.summary.llm_calls == 1
    assert t.summary.cost_usd == Decimal("0.00021")
    assert spans.calls()[0].attributes[sc.CALL_COST_USD] == pytest.approx(0.00021)
    assert costtrace._internal.internal_error_counts()["calls.openinference"] == 1


def test_a_bug_in_the_task_summary_never_loses_the_task(spans, monkeypatch):
    from costtrace import task_attributes

    def broken(*args: object) -> str:
        raise RuntimeError("bug")

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(task_attributes, "output_summary", broken)
    with costtrace.collect_tasks() as finished:
        with costtrace.task("t") as t:
            call()
            t.fail("x")
    s = spans.one_task()
    assert s.status.status_code is StatusCode.ERROR  # the rest of the span is written
    assert s.attributes[sc.TASK_OUTCOME] == "failure"
    assert [f.name for f in finished] == ["t"]
    assert costtrace._internal.internal_error_counts()["tasks.openinference"] == 1


# --- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("", True),
    ],
)
def test_env_vars_are_parsed(monkeypatch, raw, expected):
    monkeypatch.setenv(span_options.ENV_TASK_STATUS, raw)
    monkeypatch.setenv(span_options.ENV_OPENINFERENCE, raw)
    span_options._reset_for_tests()
    assert span_options.options() == span_options.SpanOptions(task_status=expected, openinference=expected)


def test_a_bad_env_value_warns_and_keeps_the_default(monkeypatch, caplog, spans):
    monkeypatch.setenv(span_options.ENV_OPENINFERENCE, "off-please")
    monkeypatch.setenv(span_options.ENV_TASK_STATUS, "nein")
    span_options._reset_for_tests()
    with caplog.at_level(logging.WARNING, logger="costtrace"):
        with costtrace.task("t") as t:
            t.fail("x")
    s = spans.one_task()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[sc.OPENINFERENCE_SPAN_KIND] == "CHAIN"
    messages = [r.getMessage() for r in caplog.records]
    assert any("COSTTRACE_OPENINFERENCE='off-please'" in m and "default (true)" in m for m in messages)
    assert any("COSTTRACE_TASK_STATUS='nein'" in m for m in messages)


def test_env_vars_turn_both_off_for_an_app_that_never_calls_configure(monkeypatch, spans):
    monkeypatch.setenv(span_options.ENV_OPENINFERENCE, "false")
    monkeypatch.setenv(span_options.ENV_TASK_STATUS, "0")
    span_options._reset_for_tests()
    with costtrace.task("t") as t:
        call()
        t.fail("x")
    s = spans.one_task()
    assert s.status.status_code is StatusCode.UNSET
    assert not [k for k in s.attributes if k.startswith(("openinference.", "input.", "output."))]


def test_code_wins_over_the_environment_and_none_keeps_the_setting(monkeypatch):
    monkeypatch.setenv(span_options.ENV_OPENINFERENCE, "false")
    span_options._reset_for_tests()
    assert span_options.options().openinference is False
    costtrace.configure_spans(openinference=True)
    assert span_options.options().openinference is True
    costtrace.configure_spans(task_status=False)
    assert span_options.options() == span_options.SpanOptions(task_status=False, openinference=True)


def test_options_are_read_once_then_cached(monkeypatch):
    span_options._reset_for_tests()
    first = span_options.options()
    monkeypatch.setenv(span_options.ENV_OPENINFERENCE, "false")
    assert span_options.options() is first  # the hot path does not read the environment again


@pytest.mark.parametrize("bad", [1, "false", 0.0, "yes"])
def test_a_bad_setting_in_code_is_a_config_error(bad):
    with pytest.raises(costtrace.ConfigError, match=r"configure_spans\(openinference="):
        costtrace.configure_spans(openinference=bad)
    with pytest.raises(costtrace.ConfigError, match=r"configure\(task_status="):
        costtrace.configure(task_status=bad)
    assert span_options.options() == span_options.SpanOptions()  # nothing changed


def test_a_configure_call_that_raises_changes_no_setting():
    with pytest.raises(costtrace.ConfigError, match="otlp_endpoint"):
        costtrace.configure(openinference=False, task_status=False, otlp_endpoint="not a url")
    assert span_options.options() == span_options.SpanOptions(task_status=True, openinference=True)


def test_a_task_in_flight_keeps_the_settings_it_started_with(spans):
    with costtrace.task("t") as t:
        costtrace.configure_spans(task_status=False, openinference=False)
        t.fail("x")
    s = spans.one_task()
    assert s.status.status_code is StatusCode.ERROR
    assert s.attributes[sc.OUTPUT_VALUE] == "failure (x) · $0 · 0 LLM calls"
