"""analytics.scope_stats / model_costs against hand-computed fixtures, on SQLite and PostgreSQL.

Rows are inserted directly with known integer nano-USD costs, so every figure below is computed by
hand in the comments; one test goes through the real API to check the ledger's own rows agree.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

import costtrace
from costtrace.analysis.report import summarize
from costtrace.analysis.stats import (
    GROUP_KEYS,
    Filters,
    Latency,
    ModelCost,
    ScopeStats,
    model_costs,
    parse_since,
    scope_stats,
)
from costtrace.errors import ConfigError
from costtrace.spend import schema
from costtrace.spend.engine import make_engine

NANO = Decimal("0.000000001")
MINI, BIG = "gpt-4o-mini", "gpt-4o"
ESC = f"{MINI}->{BIG}"


def D(x: int | str) -> Decimal:
    return Decimal(x)


def usd(nanos: int) -> Decimal:
    return Decimal(nanos) * NANO


def task_row(task_id: str, ended_at: datetime, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": task_id,
        "name": "resolve_ticket",
        "feature": "support",
        "route": MINI,
        "outcome": "success",
        "first_pass": False,
        "cost_nano_usd": 0,
        "wasted_nano_usd": 0,
        "cache_savings_nano_usd": 0,
        "subtasks_cost_nano_usd": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "llm_calls": 1,
        "failed_calls": 0,
        "attempts": 1,
        "retries": 0,
        "escalations": 0,
        "unpriced_calls": 0,
        "estimated_calls": 0,
        "started_at": ended_at - timedelta(seconds=1),
        "ended_at": ended_at,
    }
    row.update(kw)
    return row


def call_row(call_id: str, task_id: str | None, model: str, attempt: int | None, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "call_id": call_id,
        "task_id": task_id,
        "task_name": "resolve_ticket" if task_id else None,
        "feature": "support",
        "provider": "openai",
        "operation": "chat",
        "request_model": model,
        "attempt": attempt,
        "usage_source": "provider",
        "priced": True,
        "cost_nano_usd": 0,
        "input_nano_usd": 0,
        "cache_read_nano_usd": 0,
        "cache_write_nano_usd": 0,
        "output_nano_usd": 0,
        "reasoning_nano_usd": 0,
        "other_nano_usd": 0,
        "cache_savings_nano_usd": 0,
        "started_at": datetime(2024, 5, 6, 10),
    }
    row.update(kw)
    return row


# Monday 6 May 2024 ... Saturday 1 June 2024 (UTC).
TASKS = [
    # feature support, route gpt-4o-mini
    task_row("A", datetime(2024, 5, 6, 10, 15), first_pass=True, cost_nano_usd=100,
             input_tokens=1000, output_tokens=100),
    task_row("B", datetime(2024, 5, 6, 11, 30), cost_nano_usd=300, wasted_nano_usd=200,
             input_tokens=3000, output_tokens=300, llm_calls=3, failed_calls=1, attempts=2, retries=1),
    task_row("C", datetime(2024, 5, 7, 9), outcome="failure", cost_nano_usd=200, wasted_nano_usd=200,
             input_tokens=2000, output_tokens=200, llm_calls=2, attempts=2, retries=1),
    task_row("D", datetime(2024, 5, 12, 23, 59), first_pass=True, cost_nano_usd=50, cache_savings_nano_usd=30,
             input_tokens=500, output_tokens=50, estimated_calls=1),  # a Sunday: still the week of 6 May
    # feature support, escalated from gpt-4o-mini to gpt-4o
    task_row("E", datetime(2024, 5, 13), route=ESC, cost_nano_usd=1000, wasted_nano_usd=100,
             input_tokens=1200, output_tokens=150, llm_calls=2, attempts=2, escalations=1),
    task_row("F", datetime(2024, 6, 1, 8), route=ESC, outcome="escalated_to_human", original_outcome="success",
             cost_nano_usd=900, wasted_nano_usd=900, rework_nano_usd=2_000_000_000,
             input_tokens=800, output_tokens=80, llm_calls=2, attempts=2, escalations=1),
    # feature billing: one unpriced call
    task_row("G", datetime(2024, 6, 1, 12), name="extract_refund", feature="billing", route=BIG,
             outcome="partial", input_tokens=10, output_tokens=0, unpriced_calls=1),
    # no feature
    task_row("H", datetime(2024, 6, 1, 12), name="extract_refund", feature=None, team="x", first_pass=True,
             cost_nano_usd=10, input_tokens=100, output_tokens=10),
]  # fmt: skip

CALLS = [
    call_row("a1", "A", MINI, 1, input_tokens=1000, output_tokens=100, cost_nano_usd=100),
    call_row("b1", "B", MINI, 1, input_tokens=1500, output_tokens=150, cost_nano_usd=150),
    call_row("b2", "B", MINI, 2, input_tokens=1500, output_tokens=150, cost_nano_usd=150),
    call_row("c1", "C", MINI, 1, input_tokens=1000, output_tokens=100, cost_nano_usd=100),
    call_row("c2", "C", MINI, 2, input_tokens=1000, output_tokens=100, cost_nano_usd=100),
    call_row("e1", "E", MINI, 1, input_tokens=200, output_tokens=50, cost_nano_usd=100),
    call_row("e2", "E", BIG, 2, input_tokens=1000, output_tokens=100, cost_nano_usd=900,
             started_at=datetime(2024, 5, 13)),
    call_row("z1", None, MINI, None, feature=None, input_tokens=100, output_tokens=0, cost_nano_usd=10),
    call_row("u1", "G", "mystery-model", 1, feature="billing", priced=False, cost_nano_usd=None,
             input_tokens=10, output_tokens=1, started_at=datetime(2024, 6, 1, 12)),
]  # fmt: skip


def insert(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``; keys missing from some rows are NULL (an executemany takes every row's keys)."""
    keys = {k for row in rows for k in row}
    with engine.begin() as conn:
        conn.execute(table.insert(), [{k: row.get(k) for k in keys} for row in rows])


@pytest.fixture
def ledger(ledger_engine: sa.Engine) -> sa.Engine:
    insert(ledger_engine, schema.tasks, TASKS)
    insert(ledger_engine, schema.calls, CALLS)
    return ledger_engine


def by_key(stats: list[ScopeStats]) -> dict[tuple[str | None, ...], ScopeStats]:
    return {tuple(s.key.values()): s for s in stats}


# --- scope_stats ------------------------------------------------------------------------------------


def test_every_figure_of_a_feature_matches_the_hand_computed_one(ledger):
    support = by_key(scope_stats(ledger, by=("feature",)))[("support",)]
    # Tasks A-F: successes A, B, D, E; first pass A, D; attempts 1+2+2+1+2+2 = 10.
    assert (support.tasks, support.successes, support.first_pass_tasks) == (6, 4, 2)
    assert support.success_rate == D(4) / D(6)
    assert support.first_pass_rate == D(2) / D(6)
    assert support.mean_attempts == D(10) / D(6)
    # Spend 100+300+200+50+1000+900 = 2550 nano, failures (C, F) included: / 4 successes.
    assert support.total_cost_usd == usd(2550)
    assert support.cost_per_successful_task_usd == usd(2550) / 4 == Decimal("0.0000006375")
    # Wasted 200+200+100+900 = 1400 of 2550.
    assert support.wasted_cost_usd == usd(1400)
    assert support.retry_tax == D(1400) / D(2550)
    # Escalated E, F: mean 1900/2 = 950; others A-D: mean 650/4 = 162.5; premium 787.5 nano.
    assert support.escalated_tasks == 2
    assert support.escalation_rate == D(2) / D(6)
    assert support.escalation_premium_usd == Decimal("0.0000007875")
    assert support.cache_savings_usd == usd(30)
    assert support.rework_cost_usd == Decimal(2)
    assert (support.llm_calls, support.estimated_calls, support.unpriced_calls) == (11, 1, 0)
    assert support.estimated_call_share == D(1) / D(11)
    assert support.cost_complete is True


def test_means_and_nearest_rank_percentiles_per_task(ledger):
    support = by_key(scope_stats(ledger, by=("feature",), exact=True))[("support",)]
    # Costs sorted 50, 100, 200, 300, 900, 1000: p50 = rank ceil(3) = 3rd, p95 = rank ceil(5.7) = 6th.
    cost = support.cost_per_task_usd
    assert (cost.mean, cost.p50, cost.p95) == (usd(2550) / 6, usd(200), usd(1000))
    # Input 500, 800, 1000, 1200, 2000, 3000 (sum 8500); output 50, 80, 100, 150, 200, 300 (sum 880).
    tin, tout = support.input_tokens_per_task, support.output_tokens_per_task
    assert (tin.mean, tin.p50, tin.p95) == (D(8500) / 6, D(1000), D(3000))
    assert (tout.mean, tout.p50, tout.p95) == (D(880) / 6, D(100), D(300))
    # From the rollups (the default): the same means, percentiles within the sketches' 1%.
    fast = by_key(scope_stats(ledger, by=("feature",)))[("support",)].cost_per_task_usd
    assert fast.mean == cost.mean
    assert abs(fast.p50 - cost.p50) <= cost.p50 / 100 and abs(fast.p95 - cost.p95) <= cost.p95 / 100


@pytest.mark.parametrize(
    ("n", "p50", "p95"),
    [(1, 1, 1), (2, 1, 2), (4, 2, 4), (20, 10, 19), (21, 11, 20), (40, 20, 38)],
)
def test_percentiles_are_nearest_rank(ledger_engine, n, p50, p95):
    # Values 1..n inserted in reverse: p = the value ranked ceil(p * n).
    rows = [
        task_row(f"t{i}", datetime(2024, 5, 6), feature="pct", input_tokens=i, cost_nano_usd=i) for i in range(n, 0, -1)
    ]
    insert(ledger_engine, schema.tasks, rows)
    (stats,) = scope_stats(ledger_engine, by=(), exact=True)
    assert (stats.input_tokens_per_task.p50, stats.input_tokens_per_task.p95) == (D(p50), D(p95))
    assert (stats.cost_per_task_usd.p50, stats.cost_per_task_usd.p95) == (usd(p50), usd(p95))
    assert stats.input_tokens_per_task.mean == D(n * (n + 1) // 2) / n


@pytest.mark.parametrize(
    ("values", "p50", "p95"),
    [([1, 1, 1, 2], 1, 2), ([2, 1, 1, 1], 1, 2), ([5] * 7, 5, 5), ([3, 3, 1, 9, 9, 9], 3, 9), ([0, 0, 7], 0, 7)],
)
def test_percentiles_with_ties_are_nearest_rank(ledger_engine, values, p50, p95):
    rows = [task_row(f"t{i}", datetime(2024, 5, 6), output_tokens=v) for i, v in enumerate(values)]
    insert(ledger_engine, schema.tasks, rows)
    (stats,) = scope_stats(ledger_engine, by=("day",), exact=True)
    assert (stats.output_tokens_per_task.p50, stats.output_tokens_per_task.p95) == (D(p50), D(p95))


def timed_task(task_id: str, route: str, outcome: str | None, duration: float | None, **kw: Any) -> dict[str, Any]:
    return task_row(task_id, datetime(2024, 5, 6, 12), feature="lat", route=route, outcome=outcome,
                    duration_s=duration, **kw)  # fmt: skip


LATENCY_TASKS = [
    # route mini: successes 0.5, 1.25, 2, 3.5, 8 (the 8 s one retried twice), one without a duration;
    # failures 4 (failure), 6 (escalated to a human), one failure without a duration; a partial of
    # 100 s and an unfinished task of 50 s are in neither class.
    timed_task("s1", MINI, "success", 2.0),
    timed_task("s2", MINI, "success", 0.5),
    timed_task("s3", MINI, "success", 8.0, attempts=3, retries=2),
    timed_task("s4", MINI, "success", 1.25),
    timed_task("s5", MINI, "success", 3.5),
    timed_task("s6", MINI, "success", None),
    timed_task("f1", MINI, "failure", 4.0),
    timed_task("f2", MINI, "escalated_to_human", 6.0),
    timed_task("f3", MINI, "failure", None),
    timed_task("p1", MINI, "partial", 100.0),
    timed_task("u1", MINI, None, 50.0),
    # route esc: one escalated success of 0.1 s (a float with no exact binary form); no failure.
    timed_task("e1", ESC, "success", 0.1, escalations=1, attempts=2),
]


def test_latency_to_success_and_of_failures_are_nearest_rank_per_route(ledger_engine):
    insert(ledger_engine, schema.tasks, LATENCY_TASKS)
    routes = by_key(scope_stats(ledger_engine, by=("route",), exact=True))
    mini, esc = routes[(MINI,)], routes[(ESC,)]
    # Successes sorted 0.5, 1.25, 2, 3.5, 8 (n = 5): p50 = rank ceil(2.5) = 3rd, p95 = rank ceil(4.75) = 5th.
    assert mini.latency_success_s == Latency(tasks=5, p50=D("2.0"), p95=D("8.0"), no_duration=1)
    # Failed 4, 6 (n = 2): p50 = rank 1, p95 = rank 2; the partial's 100 s and the unfinished 50 s are not in it.
    assert mini.latency_failed_s == Latency(tasks=2, p50=D("4.0"), p95=D("6.0"), no_duration=1)
    assert esc.latency_success_s == Latency(tasks=1, p50=D("0.1"), p95=D("0.1"), no_duration=0)
    assert esc.latency_failed_s == Latency()  # no failed task: no percentile, not 0
    assert esc.latency_failed_s.p50 is None
    (everything,) = scope_stats(ledger_engine, by=(), exact=True)
    # All 6 timed successes: 0.1, 0.5, 1.25, 2, 3.5, 8: p50 = 3rd, p95 = rank ceil(5.7) = 6th.
    assert everything.latency_success_s == Latency(tasks=6, p50=D("1.25"), p95=D("8.0"), no_duration=1)


@pytest.mark.parametrize(
    ("n", "p50", "p95"),
    [(1, 1, 1), (2, 1, 2), (4, 2, 4), (20, 10, 19), (21, 11, 20)],
)
def test_latency_percentiles_are_nearest_rank(ledger_engine, n, p50, p95):
    rows = [timed_task(f"s{i}", MINI, "success", float(i)) for i in range(n, 0, -1)]
    rows += [timed_task(f"f{i}", MINI, "failure", float(100 + i)) for i in range(n, 0, -1)]
    insert(ledger_engine, schema.tasks, rows)
    (stats,) = scope_stats(ledger_engine, by=("feature", "day"), exact=True)
    assert stats.latency_success_s == Latency(n, D(p50), D(p95), 0)
    assert stats.latency_failed_s == Latency(n, D(100 + p50), D(100 + p95), 0)


def test_a_scope_without_durations_has_no_latency_and_says_how_many(ledger):
    support = by_key(scope_stats(ledger))[("support",)]  # TASKS have no duration_s
    assert support.latency_success_s == Latency(tasks=0, p50=None, p95=None, no_duration=4)
    assert support.latency_failed_s == Latency(tasks=0, p50=None, p95=None, no_duration=2)


def test_a_scope_without_success_or_spend_has_none_not_zero_or_infinity(ledger):
    billing = by_key(scope_stats(ledger))[("billing",)]
    assert (billing.tasks, billing.successes, billing.success_rate) == (1, 0, Decimal(0))
    assert billing.cost_per_successful_task_usd is None
    assert billing.retry_tax is None  # nothing spent (its only call is unpriced)
    assert billing.escalation_rate == 0 and billing.escalation_premium_usd is None
    assert billing.unpriced_calls == 1 and billing.cost_complete is False
    assert billing.cost_per_task_usd.p50 == 0 and billing.output_tokens_per_task.p95 == 0


def test_escalation_premium_needs_both_groups(ledger):
    esc = by_key(scope_stats(ledger, by=("route",)))[(ESC,)]
    assert esc.escalation_rate == 1 and esc.escalation_premium_usd is None


def test_groups_by_two_keys_sorted_with_missing_values_last(ledger):
    stats = scope_stats(ledger, by=("feature", "route"))
    assert [tuple(s.key.values()) for s in stats] == [
        ("billing", BIG),
        ("support", MINI),
        ("support", ESC),
        (None, MINI),
    ]
    assert stats[0].key == {"feature": "billing", "route": BIG}
    mini = stats[1]  # A-D: 650 nano over 3 successes
    assert (mini.tasks, mini.successes) == (4, 3)
    assert mini.cost_per_successful_task_usd == usd(650) / 3
    assert mini.retry_tax == D(400) / D(650)
    esc = stats[2]  # E, F: 1900 over 1 success, 1000 of it wasted
    assert esc.cost_per_successful_task_usd == usd(1900)
    assert esc.retry_tax == D(1000) / D(1900)
    assert stats[3].key == {"feature": None, "route": MINI} and stats[3].tasks == 1


def test_task_team_customer_keys(ledger):
    by_task = by_key(scope_stats(ledger, by=("task", "team")))
    assert set(by_task) == {("resolve_ticket", None), ("extract_refund", None), ("extract_refund", "x")}
    assert by_task[("resolve_ticket", None)].tasks == 6
    (everyone,) = scope_stats(ledger, by=("customer",))
    assert everyone.key == {"customer": None} and everyone.tasks == 8


def test_time_buckets_are_utc_text(ledger):
    only_support = Filters(feature="support")
    days = by_key(scope_stats(ledger, by=("day",), filters=only_support))
    assert {k: s.tasks for k, s in days.items()} == {
        ("2024-05-06",): 2,
        ("2024-05-07",): 1,
        ("2024-05-12",): 1,
        ("2024-05-13",): 1,
        ("2024-06-01",): 1,
    }
    weeks = scope_stats(ledger, by=("week",), filters=only_support)  # a week is named by its Monday
    assert [(s.key["week"], s.tasks) for s in weeks] == [("2024-05-06", 4), ("2024-05-13", 1), ("2024-05-27", 1)]
    assert weeks[0].cost_per_successful_task_usd == usd(650) / 3
    months = scope_stats(ledger, by=("month",))
    assert [(s.key["month"], s.tasks) for s in months] == [("2024-05", 5), ("2024-06", 3)]
    hours = scope_stats(ledger, by=("hour", "feature"), filters=Filters(until=datetime(2024, 5, 7)))
    assert [tuple(s.key.values()) for s in hours] == [("2024-05-06T10:00", "support"), ("2024-05-06T11:00", "support")]


def test_filters_on_ended_at_route_and_names(ledger):
    window = Filters(since=datetime(2024, 5, 7), until=datetime(2024, 5, 13))  # C and D; E ends at `until`
    (s,) = scope_stats(ledger, by=(), filters=window)
    assert (s.tasks, s.total_cost_usd) == (2, usd(250))
    aware = Filters(since=datetime(2024, 5, 7, 2, tzinfo=timezone(timedelta(hours=2))))  # 00:00 UTC
    assert scope_stats(ledger, by=(), filters=aware)[0].tasks == 6  # C, D, E, F, G, H
    (exact,) = scope_stats(ledger, by=(), filters=Filters(route=MINI))  # not the escalated route
    assert exact.tasks == 5
    (named,) = scope_stats(ledger, by=("feature",), filters=Filters(task="extract_refund", team="x"))
    assert named.key == {"feature": None} and named.tasks == 1
    assert scope_stats(ledger, filters=Filters(customer="nobody")) == []


def test_an_empty_ledger_has_no_scope(ledger_engine):
    assert scope_stats(ledger_engine, by=()) == []
    assert scope_stats(ledger_engine, by=("feature", "day")) == []
    assert model_costs(ledger_engine) == []


def test_progress_is_reported_after_each_statement(ledger):
    seen: list[tuple[int, int]] = []
    scope_stats(ledger, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 1), (1, 1)]  # from the rollups: one read
    seen.clear()
    scope_stats(ledger, exact=True, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]  # the raw rows: one statement after another
    seen.clear()
    model_costs(ledger, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 2), (1, 2), (2, 2)]


def test_bad_keys_and_filters_are_config_errors_naming_the_allowed_values(ledger):
    allowed = r"feature, task, route, final_model, team, customer, hour"
    with pytest.raises(ConfigError, match=rf"unknown group key 'model'.*{allowed}"):
        scope_stats(ledger, by=("model",))
    with pytest.raises(ConfigError, match="twice"):
        scope_stats(ledger, by=("day", "day"))
    with pytest.raises(ConfigError, match="since"):
        Filters(since="7d")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="before"):
        Filters(since=datetime(2024, 5, 2), until=datetime(2024, 5, 1))
    with pytest.raises(ConfigError, match="feature"):
        Filters(feature=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Filters"):
        scope_stats(ledger, filters={"feature": "support"})  # type: ignore[arg-type]
    assert scope_stats(ledger, by="feature") == scope_stats(ledger, by=("feature",))  # a lone key is fine
    assert GROUP_KEYS == ("feature", "task", "route", "final_model", "team", "customer", "hour", "day", "week", "month")


# --- model_costs ------------------------------------------------------------------------------------


def test_model_costs_effective_price_per_useful_token_next_to_list_price(ledger):
    big, mini, mystery = model_costs(ledger)  # by cost, highest first: 900, 710, unknown
    assert isinstance(big, ModelCost)
    assert (big.model, mini.model, mystery.model) == (BIG, MINI, "mystery-model")
    # gpt-4o-mini: a1, b1, b2, c1, c2, e1, z1. Useful: a1 (A's only attempt) and b2 (B's final attempt);
    # not b1 (retried), not C's calls (failed task), not e1 (escalated away), not z1 (no task).
    assert (mini.calls, mini.input_tokens, mini.output_tokens) == (7, 6300, 650)
    assert mini.cost_usd == usd(710)
    assert mini.useful_tokens == 1100 + 1650
    assert mini.blended_list_per_mtok == usd(710) * 1_000_000 / 6950
    assert mini.effective_per_mtok_useful == usd(710) * 1_000_000 / 2750
    assert (mini.list_input_per_mtok, mini.list_output_per_mtok) == (Decimal("0.15"), Decimal("0.60"))
    assert mini.cost_complete and mini.provider == "openai"
    # gpt-4o: e2 only, the final attempt of successful E: all its tokens are useful.
    assert big.useful_tokens == 1100 and big.cost_usd == usd(900)
    assert big.effective_per_mtok_useful == big.blended_list_per_mtok == usd(900) * 1_000_000 / 1100
    assert (big.list_input_per_mtok, big.list_output_per_mtok) == (Decimal("2.5"), Decimal("10"))
    # Unpriced: cost unknown, so no price per token (not 0); no catalog price either.
    assert (mystery.calls, mystery.unpriced_calls, mystery.cost_complete) == (1, 1, False)
    assert mystery.blended_list_per_mtok is None and mystery.effective_per_mtok_useful is None
    assert mystery.list_input_per_mtok is None and mystery.list_output_per_mtok is None


def test_model_costs_filters_apply_to_calls(ledger):
    by_route = {m.model: m for m in model_costs(ledger, filters=Filters(route=ESC))}  # E's calls only
    assert {m: (c.calls, c.useful_tokens) for m, c in by_route.items()} == {MINI: (1, 0), BIG: (1, 1100)}
    assert by_route[MINI].effective_per_mtok_useful is None  # all spend, no useful token
    (late,) = model_costs(ledger, filters=Filters(since=datetime(2024, 5, 13), until=datetime(2024, 6, 1)))
    assert (late.model, late.calls) == (BIG, 1)
    support = {m.model: m.calls for m in model_costs(ledger, filters=Filters(feature="support", task="resolve_ticket"))}
    assert support == {MINI: 6, BIG: 1}  # z1 has no feature and no task


# --- the real API -----------------------------------------------------------------------------------


def test_figures_from_a_real_ledger_match_the_task_summaries(ledger_url):
    costtrace.configure_ledger(ledger_url)
    try:
        with costtrace.task("extract_refund", feature="billing") as retried:
            costtrace.record_llm_call(provider="openai", model=MINI, input_tokens=1000, output_tokens=100)
            retried.retry(reason="validation_failed")
            costtrace.record_llm_call(provider="openai", model=MINI, input_tokens=1000, output_tokens=100)
            retried.escalate(to_model=BIG)
            costtrace.record_llm_call(provider="openai", model=BIG, input_tokens=1000, output_tokens=100)
        with costtrace.task("extract_refund", feature="billing") as failed:
            costtrace.record_llm_call(provider="openai", model=MINI, input_tokens=500, output_tokens=50)
            failed.fail("wrong amount")
        assert costtrace.flush_ledger(60)
    finally:
        costtrace.close_ledger()
    engine = make_engine(ledger_url)
    try:
        (billing,) = scope_stats(engine, exact=True)  # exact nearest-rank latency, compared to the digit below
        (fast,) = scope_stats(engine)  # from the rollups: latency rounded to 4 significant digits
        (routes,) = scope_stats(engine, by=("route",), filters=Filters(route=ESC))
        costs = {m.model: m for m in model_costs(engine)}
    finally:
        engine.dispose()
    r, f = retried.summary, failed.summary
    # Wasted: the two gpt-4o-mini attempts of the first task (2 x 0.00021) and the failed task's call
    # (500 x 0.15 + 50 x 0.60 per million = 0.000105).
    assert (billing.tasks, billing.successes, billing.first_pass_tasks) == (2, 1, 0)
    assert billing.total_cost_usd == r.cost_usd + f.cost_usd
    assert billing.cost_per_successful_task_usd == r.cost_usd + f.cost_usd
    assert billing.wasted_cost_usd == r.wasted_cost_usd + f.wasted_cost_usd == Decimal("0.000525")
    assert billing.retry_tax == billing.wasted_cost_usd / billing.total_cost_usd
    assert billing.mean_attempts == Decimal(r.attempts + f.attempts) / 2 == 2
    assert billing.escalation_premium_usd == r.cost_usd - f.cost_usd
    assert routes.key == {"route": ESC} and routes.tasks == 1
    # Useful: only the gpt-4o call (final attempt of the successful task); gpt-4o-mini's are all waste.
    assert costs[BIG].useful_tokens == 1100 and costs[MINI].useful_tokens == 0
    assert costs[MINI].effective_per_mtok_useful is None
    assert costs[BIG].effective_per_mtok_useful == costs[BIG].cost_usd * 1_000_000 / 1100
    # Latency: each task's own duration_s, the retried and escalated one counted from its start to its end.
    assert r.duration_s is not None and f.duration_s is not None
    assert billing.latency_success_s == Latency(1, Decimal(repr(r.duration_s)), Decimal(repr(r.duration_s)), 0)
    assert billing.latency_failed_s == Latency(1, Decimal(repr(f.duration_s)), Decimal(repr(f.duration_s)), 0)
    in_memory = summarize([r, f])  # the in-memory counterpart over the same tasks says the same
    assert billing.latency_success_s == in_memory.latency_success_s
    assert billing.latency_failed_s == in_memory.latency_failed_s
    for fast_latency, exact_latency in (
        (fast.latency_success_s, billing.latency_success_s),
        (fast.latency_failed_s, billing.latency_failed_s),
    ):
        assert fast_latency.tasks == exact_latency.tasks == 1
        assert fast_latency.p50 is not None and exact_latency.p50 is not None
        assert abs(fast_latency.p50 - exact_latency.p50) <= exact_latency.p50 / 100
    # Everything else is equal: of two tasks, p50 is the smaller and p95 the larger, which sketches hold exactly.
    assert dataclasses.replace(fast, latency_success_s=Latency(), latency_failed_s=Latency()) == dataclasses.replace(
        billing, latency_success_s=Latency(), latency_failed_s=Latency()
    )


# --- parse_since ------------------------------------------------------------------------------------

NOW = datetime(2024, 5, 8, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("24h", datetime(2024, 5, 7, 12, tzinfo=UTC)),
        ("30m", datetime(2024, 5, 8, 11, 30, tzinfo=UTC)),
        ("2w", datetime(2024, 4, 24, 12, tzinfo=UTC)),
        (" 3D ", datetime(2024, 5, 5, 12, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T08:00:00+02:00", datetime(2024, 5, 1, 6, tzinfo=UTC)),
        ("2024-05-01T08:00Z", datetime(2024, 5, 1, 8, tzinfo=UTC)),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, now=NOW) == expected


def test_parse_since_naive_now_is_utc():
    assert parse_since("1d", now=datetime(2024, 5, 8)) == datetime(2024, 5, 7, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "7", "7y", "0d", "-1d", "yesterday", "2024-13-01"])
def test_parse_since_refuses_anything_else(text):
    with pytest.raises(ConfigError, match="7d"):
        parse_since(text, now=NOW)
