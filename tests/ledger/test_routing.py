"""What-if re-pricing, measured TCO per route and routing advice, on a hand-built ledger (SQLite and PostgreSQL).

The ledger of feature "support" is recorded through the public API; every call is 1000 input + 100
output tokens (gpt-4o-mini $0.15/$0.60 per MTok: $0.00021 a call; gpt-4o $2.50/$10: $0.0035) except
the second attempt of the retried task (3000 + 300 on gpt-4o-mini: $0.00063):

    tasks  route                  attempts                          outcome   cost each
    2      gpt-4o-mini            mini                              success   0.00021
    1      gpt-4o-mini            mini                              failure   0.00021
    1      gpt-4o-mini            mini, retry, mini (3000/300)      success   0.00084
    2      gpt-4o-mini->gpt-4o    mini, escalate, gpt-4o            success   0.00371
    1      gpt-4o-mini->gpt-4o    mini, escalate, gpt-4o            failure   0.00371
    2      gpt-4o                 gpt-4o                            success   0.0035

9 tasks, 7 successes, $0.0196. Attempts on gpt-4o-mini: 8, failed 5 (the failure, the retried one,
3 escalated) -> p = 0.625; on gpt-4o: 5, failed 1 -> p = 0.2. First attempts: 9 calls of 1000/100.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

import costtrace
from costtrace.analysis.routing import advise, parse_route, whatif, wilson_interval
from costtrace.analysis.stats import Filters
from costtrace.analysis.tco import compare_models, from_ledger
from costtrace.errors import ConfigError
from costtrace.price.catalog import PriceCatalog
from costtrace.spend import schema
from costtrace.usage import Usage

D = Decimal
MINI, FOUR_O = "gpt-4o-mini", "gpt-4o"
SUPPORT = Filters(feature="support")


def _call(model: str, input_tokens: int = 1000, output_tokens: int = 100) -> None:
    costtrace.record_llm_call(provider="openai", model=model, input_tokens=input_tokens, output_tokens=output_tokens)


def _record_support_tasks() -> None:
    for _ in range(2):
        with costtrace.task("answer", feature="support"):
            _call(MINI)
    with costtrace.task("answer", feature="support") as t:
        _call(MINI)
        t.fail()
    with costtrace.task("answer", feature="support") as t:
        _call(MINI)
        t.retry(reason="validation_failed")
        _call(MINI, 3000, 300)
    for fail in (False, False, True):
        with costtrace.task("answer", feature="support") as t:
            _call(MINI)
            t.escalate(to_model=FOUR_O)
            _call(FOUR_O)
            if fail:
                t.fail()
    for _ in range(2):
        with costtrace.task("answer", feature="support"):
            _call(FOUR_O)
    with costtrace.task("summarise", feature="other"):
        pass  # no LLM call: no route


@pytest.fixture
def support_ledger(ledger_url: str, ledger_engine: sa.Engine) -> Iterator[sa.Engine]:
    costtrace.configure_ledger(ledger_url)
    try:
        _record_support_tasks()
        assert costtrace.flush_ledger(60)
    finally:
        costtrace.close_ledger()
    yield ledger_engine


def _task_row(feature: str, route: str, outcome: str, cost_nano: int) -> dict[str, object]:
    now = datetime(2024, 5, 1, 12)
    return {
        "task_id": uuid.uuid4().hex,
        "name": "classify",
        "feature": feature,
        "route": route,
        "outcome": outcome,
        "first_pass": outcome == "success",
        "cost_nano_usd": cost_nano,
        "wasted_nano_usd": 0,
        "cache_savings_nano_usd": 0,
        "subtasks_cost_nano_usd": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "reasoning_output_tokens": 0,
        "llm_calls": 1,
        "failed_calls": 0,
        "attempts": 1,
        "retries": 0,
        "escalations": 0,
        "unpriced_calls": 0,
        "estimated_calls": 0,
        "started_at": now - timedelta(seconds=1),
        "ended_at": now,
    }


def _insert(engine: sa.Engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        conn.execute(schema.tasks.insert(), rows)


# --- measured TCO per route -------------------------------------------------------------------------


def test_from_ledger_measures_each_route(support_ledger):
    routes = {r.route: r for r in from_ledger(support_ledger, filters=SUPPORT, rework_cost_usd=1)}
    assert set(routes) == {MINI, f"{MINI}->{FOUR_O}", FOUR_O}
    mini = routes[MINI]
    assert (mini.tasks, mini.successes, mini.total_cost_usd) == (4, 3, D("0.00147"))
    assert mini.failure_rate == D("0.25") and mini.cost_per_successful_task_usd == D("0.00049")
    assert mini.tco_per_task_usd == D("0.00147") / 4 + D("0.25")
    cascade = routes[f"{MINI}->{FOUR_O}"]
    assert (cascade.tasks, cascade.successes, cascade.total_cost_usd) == (3, 2, D("0.01113"))
    assert cascade.cost_per_successful_task_usd == D("0.005565")
    four_o = routes[FOUR_O]
    assert (four_o.tasks, four_o.successes, four_o.tco_per_task_usd) == (2, 2, D("0.0035"))


def test_compare_models_breaks_even_against_the_cheapest_route(support_ledger):
    (support,) = compare_models(support_ledger, filters=SUPPORT, rework_cost_usd=1)
    assert support.baseline == MINI
    assert support.best is not None and support.best.route == FOUR_O
    b = support.break_evens[FOUR_O]
    assert b.delta_cost_usd == D("0.0035") - D("0.0003675")  # per-task token costs
    assert b.break_even_failure_rate_delta == D("0.0031325")  # dC / $1
    assert b.failure_rate_delta == D("0.25") and b.cheaper == "frontier"


# --- what-if ----------------------------------------------------------------------------------------


def test_whatif_all_frontier(support_ledger):
    w = whatif(support_ledger, route=FOUR_O, filters=SUPPORT)
    assert (w.feature, w.route, w.tasks, w.recorded_successes) == ("support", FOUR_O, 9, 7)
    assert w.recorded_cost_usd == D("0.0196")
    assert w.projected_cost_usd == D("0.0315")  # 9 first attempts x $0.0035
    assert w.projected_successes == D("7.2")  # 9 x (1 - 0.2)
    assert w.projected_cost_per_success_usd == D("0.004375")
    (step,) = w.steps
    assert (step.failure_rate, step.attempts_sampled, step.failed_attempts_sampled) == (D("0.2"), 5, 1)
    assert (step.input_per_mtok, step.output_per_mtok, step.provider) == (D("2.5"), D(10), "openai")


def test_whatif_all_cheap_uses_the_first_attempts_tokens(support_ledger):
    w = whatif(support_ledger, route=MINI, filters=SUPPORT)
    # the retried task's second attempt (3000/300) is not part of the need: 9 x $0.00021
    assert w.projected_cost_usd == D("0.00189")
    assert w.projected_successes == D("3.375")  # 9 x (1 - 0.625)
    assert w.projected_cost_per_success_usd == D("0.00056")


def test_whatif_cascade(support_ledger):
    w = whatif(support_ledger, route=f"{MINI}->{FOUR_O}", filters=SUPPORT)
    # every task pays gpt-4o-mini, the 62.5% it fails pay gpt-4o too: 9 x (0.00021 + 0.625 x 0.0035)
    assert w.projected_cost_usd == D("0.0215775")
    assert w.projected_successes == D("7.875")  # 9 x (1 - 0.625 x 0.2)
    assert w.projected_cost_per_success_usd == D("0.00274")
    assert [(s.model, s.reach) for s in w.steps] == [(MINI, D(1)), (FOUR_O, D("0.625"))]


def test_whatif_tco_with_rework_cost(support_ledger):
    w = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, rework_cost_usd=1)
    assert w.projected_tco_usd == D("1.8315")  # 0.0315 + (9 - 7.2) x $1
    assert w.recorded_tco_usd == D("2.0196")  # 0.0196 + 2 unsuccessful x $1
    assert w.projected_tco_per_task_usd == D("1.8315") / 9


def test_whatif_prints_its_assumptions(support_ledger):
    text = "\n".join(whatif(support_ledger, route=f"{MINI}->{FOUR_O}", filters=SUPPORT).assumptions)
    assert "first recorded attempt: 9 tasks, 9000 input + 900 output tokens in 9 calls" in text
    assert "gpt-4o-mini: failure rate 62.5% (measured: 5/8 attempts failed in this scope)" in text
    assert "gpt-4o: failure rate 20.0% (measured: 1/5 attempts failed in this scope)" in text
    assert "$0.15/$0.6 per MTok input/output (genai-prices" in text
    assert "successes = tasks x (1 - p_gpt-4o-mini x p_gpt-4o) = 7.88" in text
    assert "independently" in text


def test_whatif_rates_come_from_every_route_of_the_feature(support_ledger):
    # Re-pricing only the all-cheap tasks still uses gpt-4o's rate measured on the whole feature.
    w = whatif(support_ledger, route=FOUR_O, filters=Filters(feature="support", route=MINI))
    assert w.tasks == 4 and w.recorded_cost_usd == D("0.00147")
    assert w.projected_cost_usd == D("0.014") and w.projected_successes == D("3.2")


def test_whatif_given_failure_rate_and_token_multiplier(support_ledger):
    w = whatif(
        support_ledger,
        route=FOUR_O,
        filters=SUPPORT,
        failure_rates={FOUR_O: D("0.1")},
        token_multipliers={FOUR_O: D("1.3")},
    )
    assert w.projected_cost_usd == D("0.04095")  # 9 x 0.0035 x 1.3
    assert w.projected_successes == D("8.1")
    assert w.steps[0].failure_rate_source == "given"
    assert "given (measured: 1/5 failed attempts)" in "\n".join(w.assumptions)


def test_whatif_prices_cache_and_reasoning_tokens_like_each_call(ledger_url, ledger_engine):
    costtrace.configure_ledger(ledger_url)
    try:
        for _ in range(2):
            with costtrace.task("lookup", feature="cached"):
                costtrace.record_llm_call(
                    provider="openai",
                    model=MINI,
                    input_tokens=1000,
                    output_tokens=100,
                    cache_read_input_tokens=500,
                    cache_write_input_tokens=200,
                    reasoning_output_tokens=40,
                )
        assert costtrace.flush_ledger(60)
    finally:
        costtrace.close_ledger()
    catalog = PriceCatalog()
    catalog.set_price(
        "my-model",
        input_per_mtok=1,
        output_per_mtok=2,
        cache_read_per_mtok="0.1",
        cache_write_per_mtok="1.25",
        reasoning_per_mtok=3,
    )
    w = whatif(
        ledger_engine,
        route="my-model",
        filters=Filters(feature="cached"),
        failure_rates={"my-model": 0},
        catalog=catalog,
    )
    # per call: 300 uncached x $1 + 500 x $0.1 + 200 x $1.25 + 60 x $2 + 40 x $3 = 840 per MTok
    one_call = catalog.cost(
        Usage(
            input_tokens=1000,
            output_tokens=100,
            cache_read_input_tokens=500,
            cache_write_input_tokens=200,
            reasoning_output_tokens=40,
        ),
        provider=None,
        model="my-model",
    ).total_usd
    assert one_call == D("0.00084")
    assert w.projected_cost_usd == 2 * one_call and w.projected_successes == 2


def test_whatif_refuses_a_model_without_samples_unless_given_a_rate(support_ledger):
    with pytest.raises(ConfigError, match=r"'gpt-4.1' has no recorded attempt.*failure_rates="):
        whatif(support_ledger, route="gpt-4.1", filters=SUPPORT)
    w = whatif(support_ledger, route="gpt-4.1", filters=SUPPORT, failure_rates={"gpt-4.1": "0.1"})
    assert w.steps[0].provider is None and w.steps[0].attempts_sampled == 0
    assert "given (no recorded attempt)" in "\n".join(w.assumptions)


def test_whatif_refuses_an_unpriced_model(support_ledger):
    with pytest.raises(ConfigError, match="cannot price model 'no-such-model-x'"):
        whatif(support_ledger, route="no-such-model-x", filters=SUPPORT, failure_rates={"no-such-model-x": 0})


def test_whatif_refuses_an_empty_scope(support_ledger):
    with pytest.raises(ConfigError, match="no recorded task"):
        whatif(support_ledger, route=FOUR_O, filters=Filters(feature="nope"))


def _batch_cost(model: str, input_tokens: int = 1000, output_tokens: int = 100) -> Decimal:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    total = PriceCatalog().cost(usage, provider="openai", model=model, batch=True).total_usd
    assert total is not None
    return total


def test_whatif_price_change_scales_that_models_share_exactly(support_ledger):
    base = whatif(support_ledger, route=f"{MINI}->{FOUR_O}", filters=SUPPORT)
    w = whatif(support_ledger, route=f"{MINI}->{FOUR_O}", filters=SUPPORT, price_changes={FOUR_O: D("0.20")})
    # 9 x (0.00021 + 0.625 x 0.0035 x 1.2): only gpt-4o's share moves, by exactly 1.2
    assert w.projected_cost_usd == D("0.025515")
    mini, four_o = w.steps
    assert mini.attempt_cost_usd == base.steps[0].attempt_cost_usd and mini.price_change == 0
    assert four_o.attempt_cost_usd == base.steps[1].attempt_cost_usd * D("1.2") == D("0.0042")
    assert (four_o.price_change, four_o.input_per_mtok, four_o.output_per_mtok) == (D("0.20"), D(3), D(12))
    assert w.projected_successes == base.projected_successes  # prices do not change failure rates
    assert w.price_changes == {FOUR_O: D("0.20")}
    assert any("gpt-4o: " in a and "price change +20%: every price x 1.2, $3/$12 per MTok" in a for a in w.assumptions)


def test_whatif_price_change_down_and_to_free(support_ledger):
    w = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, price_changes={FOUR_O: "-0.5"})
    assert w.projected_cost_usd == D("0.01575")  # 0.0315 x 0.5
    free = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, price_changes={FOUR_O: -1})
    assert free.projected_cost_usd == 0 and free.projected_cost_per_success_usd == 0
    assert "price change -100%: every price of the model set to 0 (free), as asked" in "\n".join(free.assumptions)


def test_whatif_batch_uses_the_providers_batch_rates(support_ledger):
    w = whatif(support_ledger, route=f"{MINI}->{FOUR_O}", filters=SUPPORT, batch=True)
    assert _batch_cost(FOUR_O) < D("0.0035")  # a batch rate of its own, not the list price
    expected = 9 * (_batch_cost(MINI) + D("0.625") * _batch_cost(FOUR_O))
    assert w.projected_cost_usd == expected
    assert w.batch and all(s.batch for s in w.steps)
    assert w.projected_successes == D("7.875")
    text = "\n".join(w.assumptions)
    assert "gpt-4o: failure rate 20.0%" in text and "batch price $" in text
    assert "batch: every attempt is priced at its provider's batch rate" in text


def test_whatif_batch_then_price_change(support_ledger):
    w = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, batch=True, price_changes={FOUR_O: "0.2"})
    assert w.projected_cost_usd == 9 * _batch_cost(FOUR_O) * D("1.2")


def test_whatif_batch_refuses_a_model_without_a_batch_price(support_ledger):
    model = "claude-3-5-sonnet-latest"
    assert not PriceCatalog().has_batch_price(None, model)
    with pytest.raises(ConfigError, match=r"'claude-3-5-sonnet-latest' .*has no batch price.*batch=True"):
        whatif(support_ledger, route=model, filters=SUPPORT, failure_rates={model: 0}, batch=True)
    catalog = PriceCatalog()
    catalog.set_price(model, input_per_mtok=1, output_per_mtok=2)  # one price for all calls: not a batch price
    with pytest.raises(ConfigError, match="has no batch price"):
        whatif(support_ledger, route=model, filters=SUPPORT, failure_rates={model: 0}, batch=True, catalog=catalog)
    catalog.set_price(model, input_per_mtok="0.5", output_per_mtok=1, batch=True)
    w = whatif(support_ledger, route=model, filters=SUPPORT, failure_rates={model: 0}, batch=True, catalog=catalog)
    assert w.projected_cost_usd == D("0.0054")  # 9 x (1000 x 0.5 + 100 x 1) / 1e6


@pytest.mark.parametrize(
    ("changes", "batch", "message"),
    [
        ({FOUR_O: "-1.01"}, False, r"price_changes\['gpt-4o'\]=.*-1 \(free\) at the lowest"),
        ({FOUR_O: "abc"}, False, r"price_changes\['gpt-4o'\]='abc' is not a number"),
        ({FOUR_O: 0.2}, False, "not a float"),
        ({MINI: "0.2"}, False, r"price_changes names 'gpt-4o-mini', not a model of route 'gpt-4o'"),
        ({}, "yes", "batch='yes' must be True or False"),
    ],
)
def test_whatif_refuses_bad_price_levers(support_ledger, changes, batch, message):
    with pytest.raises(ConfigError, match=message):
        whatif(support_ledger, route=FOUR_O, filters=SUPPORT, price_changes=changes, batch=batch)


@pytest.mark.parametrize("route", ["", "a->", "a->a"])
def test_parse_route_refuses_bad_routes(route):
    with pytest.raises(ConfigError, match="route="):
        parse_route(route)


# --- advice -----------------------------------------------------------------------------------------


def test_advice_by_cost_per_success_picks_the_cheap_route_and_warns_on_small_samples(support_ledger):
    by_feature = {a.feature: a for a in advise(support_ledger)}
    support = by_feature["support"]
    assert support.metric == "cost_per_success" and support.best_route == MINI
    assert [c.route for c in support.candidates] == [MINI, FOUR_O, f"{MINI}->{FOUR_O}"]
    assert [c.metric_usd for c in support.candidates] == [D("0.00049"), D("0.0035"), D("0.005565")]
    assert all(c.small_sample for c in support.candidates)
    assert any(w.startswith("gpt-4o-mini: only 4 tasks (< 30), success 3/4, 95% CI") for w in support.warnings)
    other = by_feature["other"]
    assert other.best_route is None and other.candidates == []
    assert "1 tasks without LLM calls were left out" in other.warnings


def test_advice_by_tco_picks_the_route_that_fails_least(support_ledger):
    (support,) = advise(support_ledger, filters=SUPPORT, rework_cost_usd=1, min_tasks=2)
    assert support.metric == "tco" and support.best_route == FOUR_O
    assert support.candidates[0].tco_per_task_usd == D("0.0035")
    assert not any("only" in w for w in support.warnings)  # every route has >= 2 tasks
    assert any(w.startswith("the best two routes overlap") for w in support.warnings)  # 2/2 vs 3/4


def test_advice_with_enough_evidence_has_no_warning(ledger_engine):
    rows = [_task_row("triage", "cheap-model", "success", 1_000_000) for _ in range(190)]
    rows += [_task_row("triage", "cheap-model", "failure", 1_000_000) for _ in range(10)]
    rows += [_task_row("triage", "big-model", "success", 5_000_000) for _ in range(100)]
    rows += [_task_row("triage", "big-model", "failure", 5_000_000) for _ in range(100)]
    _insert(ledger_engine, rows)
    (triage,) = advise(ledger_engine)
    assert triage.best_route == "cheap-model" and triage.warnings == []
    cheap, big = triage.candidates
    assert (cheap.tasks, cheap.successes, cheap.metric_usd) == (200, 190, D("0.001") / D("0.95"))
    assert (big.tasks, big.successes, big.metric_usd) == (200, 100, D("0.01"))
    assert round(cheap.success_rate_low, 4) == D("0.9104") and round(cheap.success_rate_high, 4) == D("0.9726")
    assert cheap.metric_high_usd is not None and big.metric_low_usd is not None
    assert cheap.metric_high_usd < big.metric_low_usd


def test_advice_warns_when_a_route_never_succeeds(ledger_engine):
    _insert(ledger_engine, [_task_row("triage", "broken", "failure", 1) for _ in range(40)])
    (triage,) = advise(ledger_engine)
    assert triage.best_route is None
    assert "broken: no success in 40 tasks; it cannot be ranked by cost per success" in triage.warnings


# --- Wilson intervals (95%, against published values: z = 1.96) -------------------------------------


@pytest.mark.parametrize(
    ("successes", "tasks", "low", "high"),
    [
        (8, 10, D("0.4902"), D("0.9433")),
        (0, 10, D("0"), D("0.2775")),
        (10, 10, D("0.7225"), D("1")),
        (1, 2, D("0.0945"), D("0.9055")),
        (190, 200, D("0.9104"), D("0.9726")),
    ],
)
def test_wilson_interval(successes, tasks, low, high):
    interval = wilson_interval(successes, tasks)
    assert interval is not None
    assert (round(interval[0], 4), round(interval[1], 4)) == (low, high)


def test_wilson_interval_of_nothing_is_none():
    assert wilson_interval(0, 0) is None
