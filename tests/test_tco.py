"""TCO with human rework and the cheap/frontier break-even: the worked example and hand-computed figures."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costtrace.analysis.tco import (
    TCO,
    attempt_cost,
    break_even,
    calculate,
    rework_cost,
    tco_per_task,
    worked_example,
)
from costtrace.errors import ConfigError

D = Decimal


# --- the worked example of the issue, number by number ----------------------------------------------


def test_worked_example_attempt_costs():
    # budget: 40k x $1 + 8k x $5 per MTok = $0.04 + $0.04; frontier: 1.3 x (40k x $10 + 8k x $50) / 1e6
    c = worked_example()
    assert c.cheap_attempt_cost_usd == D("0.08")
    assert c.frontier_attempt_cost_usd == D("1.04")


def test_worked_example_rework_cost_is_150_per_hour_for_half_an_hour():
    c = worked_example()
    assert c.cheap.rework_cost_usd == c.frontier.rework_cost_usd == D(75)


def test_worked_example_tco_per_task():
    c = worked_example()
    assert c.cheap.expected_rework_usd == D("33.75")  # 0.45 x $75
    assert c.cheap.tco_per_task_usd == D("33.83")  # $0.08 + $33.75
    assert c.frontier.expected_rework_usd == D(6)  # 0.08 x $75
    assert c.frontier.tco_per_task_usd == D("7.04")  # $1.04 + $6


def test_worked_example_frontier_is_4_8_times_cheaper_per_finished_task():
    b = worked_example().break_even
    assert b.cheaper == "frontier" and b.frontier_pays_off is True
    assert b.tco_ratio == D("33.83") / D("7.04")
    assert round(b.tco_ratio, 1) == D("4.8")


def test_worked_example_break_even_at_its_own_rework_cost():
    b = worked_example().break_even
    assert b.delta_cost_usd == D("0.96")  # $1.04 - $0.08
    assert b.rework_cost_usd == D(75)
    assert b.break_even_failure_rate_delta == D("0.0128")  # 0.96 / 75
    assert b.failure_rate_delta == D("0.37")  # 45% - 8%: far above dp*, so the frontier wins


@pytest.mark.parametrize(
    ("rework", "fraction", "pp"),
    [
        (D(150), D("0.0064"), D("0.64")),
        (D("37.50"), D("0.0256"), D("2.56")),
        (D("7.50"), D("0.128"), D("12.8")),
        (D("3.75"), D("0.256"), D("25.6")),
    ],
)
def test_worked_example_break_even_sensitivity(rework, fraction, pp):
    by_rework = {b.rework_cost_usd: b for b in worked_example().sensitivity}
    b = by_rework[rework]
    assert b.delta_cost_usd == D("0.96")
    assert b.break_even_failure_rate_delta == fraction
    assert b.break_even_failure_rate_delta_pp == pp
    assert break_even(D("0.96"), rework).break_even_failure_rate_delta == fraction


def test_worked_example_sensitivity_keeps_the_given_order():
    assert [b.rework_cost_usd for b in worked_example().sensitivity] == [D(150), D("37.50"), D("7.50"), D("3.75")]


def test_worked_example_states_its_assumptions():
    text = "\n".join(worked_example().assumptions)
    assert "40000 input + 8000 output tokens" in text
    assert "L = $150/h x 0.5 h = $75.0" in text
    assert "tokens x 1.3" in text


# --- the functions one by one -----------------------------------------------------------------------


def test_tco_per_task_is_cost_plus_failure_rate_times_rework():
    t = tco_per_task(D("0.02"), D("0.5"), D(1))
    assert t == TCO(D("0.02"), D("0.5"), D(1), D("0.52"))
    # the same figures as costtrace.analysis.report.TaskStats' docstring: 4 tasks, 2 successes, $0.08, L = $1
    assert t.tco_per_successful_task_usd == D("1.04")


def test_tco_without_rework_is_the_token_cost():
    assert tco_per_task("0.08", "0.45", 0).tco_per_task_usd == D("0.08")


def test_tco_per_successful_task_is_none_when_nothing_succeeds():
    assert tco_per_task(1, 1, 10).tco_per_successful_task_usd is None


def test_rework_cost_is_rate_times_hours():
    assert rework_cost(150, D("0.5")) == D(75)
    assert rework_cost("37.50", 2) == D(75)


def test_attempt_cost_units_are_usd_per_million_tokens():
    assert attempt_cost(1_000_000, 0, 3, 15) == D(3)
    assert attempt_cost(0, 1_000_000, 3, 15) == D(15)
    assert attempt_cost(1_000, 100, "0.15", "0.60") == D("0.00021")  # gpt-4o-mini list prices


def test_token_multiplier_scales_the_cost_without_rounding_tokens():
    assert attempt_cost(1, 0, 1_000_000, 0, token_multiplier="1.3") == D("1.3")


def test_break_even_between_tcos_says_which_is_cheaper():
    cheap = tco_per_task("0.10", "0.10", 10)  # 0.10 + 1.00 = 1.10
    frontier = tco_per_task("0.50", "0.05", 10)  # 0.50 + 0.50 = 1.00
    b = break_even(cheap, frontier)
    assert b.delta_cost_usd == D("0.40")
    assert b.break_even_failure_rate_delta == D("0.04")  # 0.40 / 10: a 5-point gap beats it
    assert b.failure_rate_delta == D("0.05")
    assert (b.cheaper, b.tco_ratio) == ("frontier", D("1.1"))
    assert b.cheap is cheap and b.frontier is frontier


def test_break_even_when_the_gap_is_too_small_keeps_the_cheap_model():
    b = break_even(tco_per_task("0.10", "0.10", 10), tco_per_task("0.50", "0.08", 10))  # 1.10 vs 1.30
    assert b.cheaper == "cheap" and b.frontier_pays_off is False
    assert b.failure_rate_delta == D("0.02") < b.break_even_failure_rate_delta


def test_break_even_at_equal_tco():
    b = break_even(tco_per_task(1, "0.5", 2), tco_per_task(2, 0, 2))
    assert (b.cheaper, b.tco_ratio) == ("equal", D(1))


def test_break_even_without_rework_cost_is_none():
    assert break_even(D("0.96"), 0).break_even_failure_rate_delta is None
    assert break_even(tco_per_task(1, "0.5", 0), tco_per_task(2, 0, 0)).break_even_failure_rate_delta is None


def test_break_even_accepts_a_negative_cost_difference():
    assert break_even(D("-0.5"), 10).break_even_failure_rate_delta == D("-0.05")
    assert break_even("-0.5", 10).delta_cost_usd == D("-0.5")


def test_break_even_refuses_tcos_with_different_rework_costs():
    with pytest.raises(ConfigError, match="different rework costs"):
        break_even(tco_per_task(1, "0.5", 2), tco_per_task(2, 0, 3))


def test_break_even_refuses_a_mix_of_tco_and_amount():
    with pytest.raises(ConfigError, match="not a mix"):
        break_even(tco_per_task(1, "0.5", 2), D(2))  # type: ignore[call-overload]


def test_calculate_takes_rework_cost_directly():
    c = calculate(1, 5, 10, 50, 40_000, 8_000, "0.45", "0.08", 75, frontier_token_multiplier="1.3")
    assert (c.cheap.tco_per_task_usd, c.frontier.tco_per_task_usd) == (D("33.83"), D("7.04"))
    assert c.sensitivity == ()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rework_cost_usd": 75, "hourly_rate_usd": 150, "hours": 1}, {"hourly_rate_usd": 150}],
)
def test_calculate_wants_rework_cost_one_way(kwargs):
    with pytest.raises(ConfigError, match="rework_cost_usd"):
        calculate(1, 5, 10, 50, 40_000, 8_000, "0.45", "0.08", **kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tco_per_task(0.08, "0.45", 75), "not a float"),
        (lambda: tco_per_task("0.08", "1.5", 75), r"failure_rate='1.5' must be <= 1"),
        (lambda: tco_per_task("0.08", "0.45", -1), "rework_cost_usd=-1"),
        (lambda: tco_per_task("abc", "0.45", 1), "not a number"),
        (lambda: attempt_cost(-1, 0, 1, 1), "input_tokens=-1"),
        (lambda: rework_cost(True, 1), "hourly_rate_usd"),
    ],
)
def test_invalid_figures_raise_config_error_naming_them(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
