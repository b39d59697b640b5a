"""costtrace.analysis.report: figures over task summaries and call records."""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import costtrace
from costtrace.analysis.report import (
    UNSET,
    CallStats,
    Latency,
    TaskStats,
    by_model,
    dimension_value,
    group_by,
    group_calls_by,
    summarize,
    summarize_calls,
)
from costtrace.records import TaskSummary
from costtrace.testing import capture

D = Decimal


def summary(
    outcome: str | None = "success",
    cost: str = "0.01",
    *,
    wasted: str = "0",
    subtasks: str = "0",
    first_pass: bool | None = None,
    retries: int = 0,
    escalations: int = 0,
    attempts: int | None = None,
    llm_calls: int = 1,
    unpriced: int = 0,
    input_tokens: int = 1000,
    output_tokens: int = 100,
    dimensions: dict[str, str] | None = None,
    parent_id: str | None = None,
    duration_s: float | None = 0.1,
) -> TaskSummary:
    """A finished task's summary, built by hand."""
    if first_pass is None:
        first_pass = outcome == "success" and retries == 0 and escalations == 0
    return TaskSummary(
        task_id="t",
        name="resolve_ticket",
        parent_id=parent_id,
        outcome=outcome,
        outcome_reason=None,
        first_pass=first_pass if outcome is not None else None,
        own_known_cost_usd=D(cost),
        wasted_cost_usd=D(wasted),
        cache_savings_usd=D(0),
        subtasks_cost_usd=D(subtasks),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=0,
        cache_write_input_tokens=0,
        reasoning_output_tokens=0,
        llm_calls=llm_calls,
        failed_calls=0,
        attempts=attempts if attempts is not None else 1 + retries + escalations,
        retries=retries,
        escalations=escalations,
        unpriced_calls=unpriced,
        estimated_calls=0,
        duration_s=duration_s,
        dimensions=dimensions or {},
    )


def test_cost_per_successful_task_charges_all_spend_to_the_successes():
    tasks = [
        summary("success", "0.01"),
        summary("success", "0.03", wasted="0.02", retries=1),
        summary("failure", "0.05", wasted="0.05", retries=2),
        summary("escalated_to_human", "0.01"),
    ]
    s = summarize(tasks)
    assert s.cost_usd == D("0.10")
    assert s.cost_per_task_usd == D("0.025")
    assert s.cost_per_successful_task_usd == D("0.05")  # all 0.10 of spend over 2 successes
    assert s.wasted_cost_usd == D("0.07")
    assert s.retry_tax == pytest.approx(0.7)


def test_no_success_gives_no_cost_per_successful_task_rather_than_zero_or_an_error():
    s = summarize([summary("failure", "0.02"), summary("partial", "0.01")], rework_cost_usd=D(3))
    assert s.successes == 0
    assert s.cost_per_successful_task_usd is None
    assert s.tco_per_successful_task_usd is None
    assert s.success_rate == 0.0
    assert s.cost_per_task_usd == D("0.015")


def test_an_empty_group_has_no_rates_and_no_cost():
    s = summarize([])
    assert s == TaskStats()
    assert s.cost_usd == 0
    for figure in (
        s.success_rate,
        s.first_pass_rate,
        s.escalation_rate,
        s.unsuccessful_rate,
        s.retry_tax,
        s.cost_per_task_usd,
        s.cost_per_successful_task_usd,
        s.cost_per_mtok_usd,
        s.tco_per_task_usd,
        s.tco_per_successful_task_usd,
    ):
        assert figure is None


def test_an_unpriced_call_makes_the_cost_incomplete():
    assert summarize([summary(), summary()]).cost_complete
    s = summarize([summary(), summary(unpriced=1)])
    assert not s.cost_complete
    assert s.unpriced_calls == 1


def test_tco_adds_the_rework_cost_of_every_unsuccessful_task():
    tasks = [summary("success", "0.01")] * 3 + [summary("failure", "0.01")]
    s = summarize(tasks, rework_cost_usd=D("2.00"))
    assert s.unsuccessful == 1
    assert s.unsuccessful_rate == 0.25
    assert s.rework_total_usd == D("2.00")
    assert s.tco_usd == D("2.04")
    # cost per task + P(fail) x L = 0.01 + 0.25 x 2
    assert s.tco_per_task_usd == D("0.51")
    assert s.tco_per_successful_task_usd == D("0.68")


def test_without_a_rework_cost_tco_is_the_token_spend():
    s = summarize([summary("success", "0.01"), summary("failure", "0.03")])
    assert s.tco_usd == s.cost_usd
    assert s.tco_per_successful_task_usd == s.cost_per_successful_task_usd == D("0.04")


@given(
    outcomes=st.lists(
        st.tuples(
            st.sampled_from(["success", "failure", "partial", "escalated_to_human", None]),
            st.decimals(min_value=0, max_value=10, places=6),
        ),
        max_size=30,
    ),
    rework=st.decimals(min_value=0, max_value=100, places=2),
)
def test_tco_per_task_is_cost_per_task_plus_p_fail_times_rework(outcomes, rework):
    tasks = [summary(outcome, str(cost)) for outcome, cost in outcomes]
    s = summarize(tasks, rework_cost_usd=rework)
    assert s.cost_usd == sum((c for _, c in outcomes), D(0))
    assert s.successes + s.failures + s.partials + s.escalated_to_human + s.unfinished == s.tasks
    if not tasks:
        return
    p_fail = D(s.tasks - s.successes) / s.tasks
    assert s.tco_per_task_usd is not None and s.cost_per_task_usd is not None
    assert abs(s.tco_per_task_usd - (s.cost_per_task_usd + p_fail * rework)) < D("1e-20")
    if s.successes:
        assert s.tco_per_successful_task_usd is not None
        assert abs(s.tco_per_successful_task_usd * s.successes - s.tco_usd) < D("1e-20")
    else:
        assert s.tco_per_successful_task_usd is None


def test_subtask_costs_are_not_counted_twice():
    parent = summary("success", "0.01", subtasks="0.02")
    children = [summary("success", "0.01", parent_id="t"), summary("success", "0.01", parent_id="t")]
    assert summarize([parent, *children]).cost_usd == D("0.03")


def test_outcome_counts_and_rates():
    tasks = [
        summary("success"),
        summary("success", retries=1),
        summary("success", escalations=1),
        summary("failure", retries=2),
        summary("partial"),
        summary("escalated_to_human", escalations=2),
        summary(None),
    ]
    s = summarize(tasks)
    counts = (s.tasks, s.successes, s.failures, s.partials, s.escalated_to_human, s.unfinished)
    assert counts == (7, 3, 1, 1, 1, 1)
    assert s.first_pass == 1
    assert s.first_pass_rate == pytest.approx(1 / 7)
    assert (s.retries, s.escalations, s.tasks_escalated) == (3, 3, 2)
    # The share of tasks with an escalation, not escalations / tasks.
    assert s.escalation_rate == pytest.approx(2 / 7)
    assert s.attempts == 7 + 3 + 3
    assert s.success_rate == pytest.approx(3 / 7)


def test_cost_per_million_tokens_blends_input_and_output():
    s = summarize([summary(cost="0.5", input_tokens=900_000, output_tokens=100_000)])
    assert s.total_tokens == 1_000_000
    assert s.cost_per_mtok_usd == D("0.5")
    assert summarize([summary(input_tokens=0, output_tokens=0)]).cost_per_mtok_usd is None


@pytest.mark.parametrize("bad", [2.5, "2.50", True])
def test_a_rework_cost_that_is_not_a_decimal_or_int_is_refused(bad):
    with pytest.raises(TypeError, match="Decimal"):
        summarize([], rework_cost_usd=bad)


@pytest.mark.parametrize("bad", [D(-1), D("NaN"), D("Infinity")])
def test_a_negative_or_infinite_rework_cost_is_refused(bad):
    with pytest.raises(ValueError, match="rework_cost_usd"):
        group_by([], "feature", rework_cost_usd=bad)


def test_money_stays_exact():
    s = summarize([summary(cost="0.1")] * 3)
    assert s.cost_usd == D("0.3")
    assert isinstance(s.cost_per_successful_task_usd, Decimal)


def test_every_task_stats_field_is_summed_from_the_summaries():
    """No TaskStats field may silently stay at its default because nothing adds to it."""
    from costtrace.analysis.report import _task_counts

    produced = set()
    for outcome in ("success", "failure", "partial", "escalated_to_human", None):
        for duration in (0.1, None):
            produced |= set(_task_counts(summary(outcome, duration_s=duration)))
    assert produced == {f.name for f in fields(TaskStats) if f.name != "rework_cost_usd"}


# --- latency -----------------------------------------------------------------------------------


def test_latency_to_success_and_of_failures_are_nearest_rank_with_unknown_durations_counted():
    # The ledger test's route gpt-4o-mini (tests/ledger/test_analytics.py LATENCY_TASKS), as summaries.
    tasks = [
        *(summary("success", duration_s=d, retries=2 if d == 8.0 else 0) for d in (2.0, 0.5, 8.0, 1.25, 3.5, None)),
        summary("failure", duration_s=4.0),
        summary("escalated_to_human", duration_s=6.0),
        summary("failure", duration_s=None),
        summary("partial", duration_s=100.0),  # in neither class
        summary(None, duration_s=50.0),  # unfinished: in neither class
    ]
    stats = summarize(tasks)
    assert stats.latency_success_s == Latency(tasks=5, p50=D("2.0"), p95=D("8.0"), no_duration=1)
    assert stats.latency_failed_s == Latency(tasks=2, p50=D("4.0"), p95=D("6.0"), no_duration=1)
    assert summarize([summary("success", duration_s=0.1)]).latency_failed_s == Latency()
    assert summarize([]).latency_success_s.p50 is None


@pytest.mark.parametrize(
    ("n", "p50", "p95"), [(1, 1, 1), (2, 1, 2), (4, 2, 4), (20, 10, 19), (21, 11, 20), (40, 20, 38)]
)
def test_latency_percentiles_are_nearest_rank(n, p50, p95):
    latency = Latency.of([float(i) for i in range(n, 0, -1)])
    assert latency == Latency(n, D(f"{p50}.0"), D(f"{p95}.0"), 0)


def test_latency_per_group_keeps_each_groups_durations():
    tasks = [
        summary("success", duration_s=1.0, dimensions={"costtrace.feature": "a"}),
        summary("success", duration_s=0.1, dimensions={"costtrace.feature": "b"}),
        summary("success", duration_s=3.0, dimensions={"costtrace.feature": "a"}),
    ]
    groups = group_by(tasks, "feature")
    assert groups["a"].latency_success_s == Latency(2, D("1.0"), D("3.0"), 0)
    assert groups["b"].latency_success_s == Latency(1, D("0.1"), D("0.1"), 0)


# --- group_by ----------------------------------------------------------------------------------


def test_group_by_a_dimension_keeps_first_seen_order_and_an_unset_group():
    tasks = [
        summary("success", "0.01", dimensions={"costtrace.dimension.routing": "b"}),
        summary("failure", "0.02", dimensions={"costtrace.dimension.routing": "a"}),
        summary("success", "0.03", dimensions={"costtrace.dimension.routing": "b"}),
        summary("success", "0.04"),
    ]
    groups = group_by(tasks, "routing", rework_cost_usd=1)
    assert list(groups) == ["b", "a", UNSET]
    assert groups["b"].tasks == 2
    assert groups["b"].cost_per_successful_task_usd == D("0.02")
    assert groups["a"].cost_per_successful_task_usd is None
    assert groups["a"].tco_usd == D("1.02")
    assert groups[UNSET].cost_usd == D("0.04")
    assert sum((g.cost_usd for g in groups.values()), D(0)) == summarize(tasks).cost_usd


def test_group_by_accepts_standard_dimensions_full_keys_and_functions():
    tasks = [
        summary(dimensions={"costtrace.feature": "support", "costtrace.customer": "acme"}),
        summary(dimensions={"costtrace.feature": "billing", "costtrace.customer": "acme"}),
    ]
    assert list(group_by(tasks, "feature")) == ["support", "billing"]
    assert list(group_by(tasks, "costtrace.feature")) == ["support", "billing"]
    assert list(group_by(tasks, "customer")) == ["acme"]
    assert list(group_by(tasks, lambda t: t.name)) == ["resolve_ticket"]
    assert list(group_by(tasks, lambda t: None)) == [UNSET]


def test_dimension_value_prefers_the_exact_key():
    dims = {"feature": "raw", "costtrace.feature": "support", "costtrace.dimension.tier": "gold"}
    assert dimension_value(dims, "feature") == "raw"
    assert dimension_value(dims, "tier") == "gold"
    assert dimension_value(dims, "region") is None


# --- from real tasks and calls -----------------------------------------------------------------


def test_summarize_agrees_with_the_calls_recorded_by_real_tasks():
    with capture() as got:
        with costtrace.task("resolve_ticket", feature="support") as t:
            costtrace.record_llm_call("openai", "gpt-4o-mini", 2000, 300)
            t.retry(reason="validation_failed")
            costtrace.record_llm_call("openai", "gpt-4o-mini", 2400, 300)
            t.escalate(to_model="gpt-4o")
            costtrace.record_llm_call("openai", "gpt-4o", 2000, 300)
        with costtrace.task("resolve_ticket", feature="support") as t:
            costtrace.record_llm_call("openai", "gpt-4o-mini", 2000, 300)
            t.fail("validation_failed")
    costs = [c.cost_usd for c in got.calls]
    assert all(c is not None for c in costs)
    s = summarize(got.tasks, rework_cost_usd=D(2))
    assert s.cost_usd == sum(costs, D(0))
    assert s.wasted_cost_usd == costs[0] + costs[1] + costs[3]
    assert (s.successes, s.failures, s.retries, s.escalations, s.tasks_escalated) == (1, 1, 1, 1, 1)
    assert s.cost_per_successful_task_usd == sum(costs, D(0))
    assert s.tco_per_successful_task_usd == sum(costs, D(0)) + 2
    assert group_by(got.tasks, "feature", rework_cost_usd=D(2)) == {"support": s}


def test_call_stats_per_model_flag_unpriced_calls():
    with capture() as got:
        costtrace.record_llm_call("openai", "gpt-4o-mini", 1000, 100)
        costtrace.record_llm_call("openai", "gpt-4o", 1000, 100)
        costtrace.record_llm_call("openai", "gpt-4o-mini", 3000, 100, cache_read_input_tokens=2048)
        costtrace.record_llm_call("openai", "no-such-model-for-tests", 1000, 100)
    per_model = group_calls_by(got.calls, by_model)
    assert list(per_model) == ["gpt-4o-mini", "gpt-4o", "no-such-model-for-tests"]
    mini = per_model["gpt-4o-mini"]
    assert (mini.calls, mini.input_tokens, mini.output_tokens) == (2, 4000, 200)
    assert mini.cache_read_input_tokens == 2048
    assert mini.cost_usd == got.calls[0].cost_usd + got.calls[2].cost_usd
    assert mini.cost_complete and mini.cache_savings_usd > 0
    assert mini.price_sources and mini.price_sources[0].startswith("genai-prices")
    unknown = per_model["no-such-model-for-tests"]
    assert (unknown.calls, unknown.unpriced_calls, unknown.cost_usd) == (1, 1, 0)
    assert not unknown.cost_complete
    assert not summarize_calls(got.calls).cost_complete
    four_o = per_model["gpt-4o"]
    assert four_o.cost_per_call_usd == four_o.cost_usd
    assert four_o.cost_per_mtok_usd == four_o.cost_usd * 1_000_000 / 1100


def test_call_stats_of_nothing():
    assert summarize_calls([]) == CallStats()
    assert summarize_calls([]).cost_per_call_usd is None
