"""The break-even rework cost L* of `routing.advise`, on hand-built ledgers (SQLite and PostgreSQL).

TCO per task = C + P(fail) x L, so two routes a (the best by cost per successful task) and b have the
same TCO at L* = (C_b - C_a) / (P_a(fail) - P_b(fail)). The ledgers below hold 50 tasks per route with
round figures, so every L* is worked out by hand in the test:

    route          cost/task  successes  P(fail)  cost/success
    cheap          $0.0005    40/50      0.20     $0.000625     the best
    cascade        $0.0012    49/50      0.02     $0.00122449   L* = 0.0007 / 0.18, wins above
    cheaper-worse  $0.0003    20/50      0.60     $0.00075      L* = -0.0002 / -0.4 = 0.0005, wins below
    dear-worse     $0.0020    35/50      0.30     $0.00285714   never wins
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from costtrace.analysis.routing import RouteEvidence, advise, rework_break_even, wilson_interval
from costtrace.analysis.stats import Filters
from tests.ledger.test_routing import _insert, _task_row

D = Decimal
NANO_PER_USD = 1_000_000_000


def _route(
    feature: str, route: str, tasks: int, successes: int, cost_per_task: str, unpriced: int = 0
) -> list[dict[str, object]]:
    nano = int(D(cost_per_task) * NANO_PER_USD)
    rows = [_task_row(feature, route, "success" if i < successes else "failure", nano) for i in range(tasks)]
    for row in rows[:unpriced]:
        row["unpriced_calls"] = 1
    return rows


def _advice(engine: sa.Engine, rows: list[dict[str, object]], **kwargs: object):
    _insert(engine, rows)
    (a,) = advise(engine, filters=Filters(feature="triage"), **kwargs)  # type: ignore[arg-type]
    return a


def _failure_interval(successes: int, tasks: int) -> tuple[Decimal, Decimal]:
    interval = wilson_interval(successes, tasks)
    assert interval is not None
    return D(1) - interval[1], D(1) - interval[0]


# --- L* on the ledger ---------------------------------------------------------------------------------


def test_without_rework_cost_the_cascade_wins_above_the_hand_computed_break_even(ledger_engine):
    a = _advice(
        ledger_engine, _route("triage", "cheap", 50, 40, "0.0005") + _route("triage", "cascade", 50, 49, "0.0012")
    )
    assert a.best_route == "cheap" and a.metric == "cost_per_success"
    (b,) = a.break_evens
    assert (b.route, b.versus, b.wins, b.bound) == ("cascade", "cheap", "above", "exact")
    assert b.delta_cost_usd == D("0.0007") and b.failure_rate_delta == D("0.18")
    assert b.break_even_rework_usd == D("0.0007") / D("0.18")  # $0.003888...
    assert (b.failure_rate, b.versus_failure_rate) == (D("0.02"), D("0.2"))
    assert (b.failure_rate_low, b.failure_rate_high) == _failure_interval(49, 50)
    assert (b.versus_failure_rate_low, b.versus_failure_rate_high) == _failure_interval(40, 50)
    assert round(b.failure_rate_high, 4) == D("0.1050")  # 1 - Wilson low of 49/50 (0.8950)
    assert a.notes[0].startswith("no rework cost given: the routes are ranked by cost per successful task")
    assert a.notes[1] == (
        "cascade beats cheap if an unresolved task costs you more than L* = $0.00389 to fix (it costs $0.000700 "
        "more per task, fails 18.0 pp less often; failure rate 2.0% (95% CI 0.4%-10.5%, 50 tasks) vs 20.0% "
        "(95% CI 11.2%-33.0%, 50 tasks))"
    )


def test_the_break_even_is_where_the_tco_per_task_of_both_routes_is_equal(ledger_engine):
    a = _advice(
        ledger_engine, _route("triage", "cheap", 50, 40, "0.0005") + _route("triage", "cascade", 50, 49, "0.0012")
    )
    (b,) = a.break_evens
    assert b.break_even_rework_usd is not None
    at = b.break_even_rework_usd
    assert abs((D("0.0005") + D("0.2") * at) - (D("0.0012") + D("0.02") * at)) < D("1e-25")
    # just above L* the TCO advice flips to the cascade; just below it stays on the cheap route
    ledger_rework = (at + D("0.0001")).quantize(D("0.0001"))
    assert advise(ledger_engine, filters=Filters(feature="triage"), rework_cost_usd=ledger_rework)[0].best_route == (
        "cascade"
    )
    below = (at - D("0.0001")).quantize(D("0.0001"))
    assert advise(ledger_engine, filters=Filters(feature="triage"), rework_cost_usd=below)[0].best_route == "cheap"


def test_a_cheaper_route_that_fails_more_wins_only_below_the_break_even(ledger_engine):
    rows = _route("triage", "cheap", 50, 40, "0.0005") + _route("triage", "cheaper-worse", 50, 20, "0.0003")
    a = _advice(ledger_engine, rows)
    assert a.best_route == "cheap"
    (b,) = a.break_evens
    assert (b.wins, b.bound, b.break_even_rework_usd) == ("below", "exact", D("0.0005"))
    assert a.notes[1].startswith(
        "cheaper-worse beats cheap only if an unresolved task costs you less than L* = $0.000500 to fix "
        "(it costs $0.000200 less per task, fails 40.0 pp more often;"
    )


def test_a_dearer_route_that_fails_more_never_wins(ledger_engine):
    a = _advice(
        ledger_engine, _route("triage", "cheap", 50, 40, "0.0005") + _route("triage", "dear-worse", 50, 35, "0.002")
    )
    (b,) = a.break_evens
    assert (b.wins, b.bound, b.break_even_rework_usd) == ("never", "exact", None)
    assert a.notes[1].startswith(
        "dear-worse never beats cheap, whatever the rework cost (it costs $0.00150 more per task, fails 10.0 pp "
        "more often;"
    )


def test_a_route_without_a_success_is_compared_too(ledger_engine):
    rows = _route("triage", "cheap", 50, 40, "0.0005") + _route("triage", "broken", 10, 0, "0.0001")
    a = _advice(ledger_engine, rows)
    (b,) = a.break_evens
    # broken: P(fail) = 1; L* = (0.0001 - 0.0005) / (0.2 - 1) = 0.0005
    assert (b.route, b.wins, b.break_even_rework_usd) == ("broken", "below", D("0.0005"))


def test_every_other_route_is_compared_with_the_best(ledger_engine):
    rows = (
        _route("triage", "cheap", 50, 40, "0.0005")
        + _route("triage", "cascade", 50, 49, "0.0012")
        + _route("triage", "cheaper-worse", 50, 20, "0.0003")
        + _route("triage", "dear-worse", 50, 35, "0.002")
    )
    a = _advice(ledger_engine, rows)
    assert [c.route for c in a.candidates] == ["cheap", "cheaper-worse", "cascade", "dear-worse"]
    assert [(b.route, b.wins) for b in a.break_evens] == [
        ("cheaper-worse", "below"),
        ("cascade", "above"),
        ("dear-worse", "never"),
    ]
    assert len(a.notes) == 4


def test_routes_tied_on_everything_tie_at_every_rework_cost(ledger_engine):
    a = _advice(
        ledger_engine, _route("triage", "a-route", 50, 45, "0.001") + _route("triage", "b-route", 50, 45, "0.001")
    )
    assert a.best_route == "a-route"  # equal metric: by name
    (b,) = a.break_evens
    assert (b.route, b.wins, b.bound, b.break_even_rework_usd) == ("b-route", "tie", "exact", None)
    assert a.notes[1].startswith("b-route and a-route tie at any rework cost (the same cost per task and failure rate;")


def test_routes_tied_on_cost_per_success_break_even_at_that_cost(ledger_engine):
    # 0.001 / 0.5 = 0.0018 / 0.9 = $0.002 per success: C_b - C_a = k (s_b - s_a), so L* = k
    rows = _route("triage", "a-route", 50, 25, "0.001") + _route("triage", "b-route", 50, 45, "0.0018")
    a = _advice(ledger_engine, rows)
    assert [c.metric_usd for c in a.candidates] == [D("0.002"), D("0.002")]
    (b,) = a.break_evens
    assert (b.route, b.wins, b.break_even_rework_usd) == ("b-route", "above", D("0.002"))


def test_a_single_route_has_nothing_to_flip(ledger_engine):
    a = _advice(ledger_engine, _route("triage", "cheap", 50, 40, "0.0005"))
    assert a.break_evens == []
    assert a.notes == [
        "no rework cost given: the routes are ranked by cost per successful task, which puts no price on an "
        "unresolved task; cheap is the only route, so there is no ranking to flip"
    ]


def test_no_success_anywhere_gives_no_break_even(ledger_engine):
    a = _advice(ledger_engine, _route("triage", "x", 5, 0, "0.001") + _route("triage", "y", 5, 0, "0.002"))
    assert a.best_route is None and a.break_evens == []
    assert a.notes[0].endswith("no route has a success, so there is no break-even either")


def test_no_tasks_no_advice(ledger_engine):
    assert advise(ledger_engine) == []
    assert advise(ledger_engine, filters=Filters(feature="triage")) == []


def test_with_a_rework_cost_the_advice_is_unchanged_and_carries_the_runner_ups_break_even(ledger_engine):
    rows = _route("triage", "cheap", 50, 40, "0.0005") + _route("triage", "cascade", 50, 49, "0.0012")
    a = _advice(ledger_engine, rows, rework_cost_usd=2)
    assert (a.metric, a.best_route, a.notes) == ("tco", "cascade", [])
    assert not any("rework" in w for w in a.warnings)
    (b,) = a.break_evens  # the runner-up against the best by TCO
    assert (b.route, b.versus, b.wins, b.break_even_rework_usd) == (
        "cheap",
        "cascade",
        "below",
        D("0.0007") / D("0.18"),
    )


# --- unpriced calls: L* is a bound, or unknown --------------------------------------------------------


@pytest.mark.parametrize(
    ("cheap_unpriced", "cascade_unpriced", "bound", "says"),
    [
        (0, 1, "at_least", "; L* is a lower bound: cascade had unpriced calls, so its cost is a lower bound"),
        (1, 0, "at_most", "; L* is an upper bound: cheap had unpriced calls, so its cost is a lower bound"),
    ],
)
def test_unpriced_calls_make_the_break_even_a_bound(ledger_engine, cheap_unpriced, cascade_unpriced, bound, says):
    rows = _route("triage", "cheap", 50, 40, "0.0005", unpriced=cheap_unpriced)
    rows += _route("triage", "cascade", 50, 49, "0.0012", unpriced=cascade_unpriced)
    a = _advice(ledger_engine, rows)
    (b,) = a.break_evens
    assert (b.wins, b.bound, b.break_even_rework_usd) == ("above", bound, D("0.0007") / D("0.18"))
    assert a.notes[1].endswith(says)


def test_unpriced_calls_on_both_routes_leave_the_break_even_unknown(ledger_engine):
    rows = _route("triage", "cheap", 50, 40, "0.0005", unpriced=2) + _route("triage", "cascade", 50, 49, "0.0012", 1)
    a = _advice(ledger_engine, rows)
    (b,) = a.break_evens
    assert (b.wins, b.bound, b.break_even_rework_usd) == ("above", "unknown", None)
    assert a.notes[1].startswith(
        "cascade vs cheap: the break-even rework cost L* is unknown (cascade and cheap had unpriced calls, "
        "so their costs are a lower bound)"
    )
    assert "$0.00389" not in a.notes[1]


def test_never_is_only_sure_when_the_dearer_route_is_the_unpriced_one(ledger_engine):
    rows = _route("triage", "cheap", 50, 40, "0.0005", unpriced=1) + _route("triage", "dear-worse", 50, 35, "0.002")
    (b,) = _advice(ledger_engine, rows).break_evens
    assert (b.wins, b.bound) == ("never", "unknown")


# --- the verdicts of rework_break_even, on evidence given directly -------------------------------------


def _evidence(route: str, tasks: int, successes: int, cost_per_task: str, unpriced: int = 0) -> RouteEvidence:
    lo, hi = wilson_interval(successes, tasks) or (D(0), D(1))
    c = D(cost_per_task)
    return RouteEvidence(
        route=route,
        tasks=tasks,
        successes=successes,
        total_cost_usd=c * tasks,
        cost_per_task_usd=c,
        cost_per_successful_task_usd=c * tasks / successes if successes else None,
        tco_per_task_usd=None,
        success_rate=D(successes) / tasks,
        success_rate_low=lo,
        success_rate_high=hi,
        metric_usd=None,
        metric_low_usd=None,
        metric_high_usd=None,
        unpriced_calls=unpriced,
    )


@pytest.mark.parametrize(
    ("other", "wins", "even"),
    [
        (("b", 50, 49, "0.0012"), "above", D("0.0007") / D("0.18")),
        (("b", 50, 20, "0.0003"), "below", D("0.0005")),
        (("b", 50, 35, "0.002"), "never", None),
        (("b", 50, 40, "0.002"), "never", None),  # dearer, fails as often
        (("b", 50, 45, "0.0004"), "always", None),  # cheaper and fails less
        (("b", 50, 45, "0.0005"), "always", None),  # as cheap and fails less
        (("b", 50, 40, "0.0004"), "always", None),  # cheaper, fails as often
        (("b", 50, 40, "0.0005"), "tie", None),
    ],
)
def test_rework_break_even_verdicts(other, wins, even):
    b = rework_break_even(_evidence("a", 50, 40, "0.0005"), _evidence(*other))
    assert (b.wins, b.break_even_rework_usd, b.bound) == (wins, even, "exact")


def test_always_is_said_in_words():
    b = rework_break_even(_evidence("a", 50, 40, "0.0005"), _evidence("b", 50, 45, "0.0004"))
    assert b.sentence().startswith(
        "b beats a at any rework cost (it costs $0.000100 less per task, fails 10.0 pp less often;"
    )
    assert b.sentence(unit="ticket").endswith("50 tickets))")


@pytest.mark.parametrize(("a_unpriced", "b_unpriced", "bound"), [(0, 1, "unknown"), (1, 0, "exact"), (1, 1, "unknown")])
def test_always_is_only_sure_when_the_reference_is_the_unpriced_one(a_unpriced, b_unpriced, bound):
    b = rework_break_even(_evidence("a", 50, 40, "0.0005", a_unpriced), _evidence("b", 50, 45, "0.0004", b_unpriced))
    assert (b.wins, b.bound, b.break_even_rework_usd) == ("always", bound, None)


@pytest.mark.parametrize(
    ("a_unpriced", "b_unpriced", "bound"), [(0, 1, "at_most"), (1, 0, "at_least"), (1, 1, "unknown")]
)
def test_below_with_unpriced_calls(a_unpriced, b_unpriced, bound):
    # b is cheaper and fails more: an unpriced b may cost more (L* shrinks), an unpriced a too (L* grows)
    b = rework_break_even(_evidence("a", 50, 40, "0.0005", a_unpriced), _evidence("b", 50, 20, "0.0003", b_unpriced))
    assert (b.wins, b.bound) == ("below", bound)
    assert b.break_even_rework_usd == (None if bound == "unknown" else D("0.0005"))
