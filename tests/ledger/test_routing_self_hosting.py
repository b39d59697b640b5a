"""``whatif`` with the self-hosting lever: break-even monthly volume, measured volume, flagged edge cases.

The ledger is test_routing.py's feature "support" (9 tasks, every first attempt 1000 input + 100 output
tokens; gpt-4o $0.0035 an attempt, failure rate 0.2; gpt-4o-mini $0.00021, failure rate 0.625), recorded
through the public API. The tasks then get end times set by hand so that the volume is known: eight end
at T0, one 30 days later, so the scope covers 30 days and runs 9 x 30.4375 / 30 = 9.13125 tasks a month.

Self-hosting at $2000 a month + $0.5/$1.5 per MTok costs 1000 x 0.5 / 1e6 + 100 x 1.5 / 1e6 = $0.00065 a
task on gpt-4o, against $0.0035 on the API: V* = 2000 / 0.00285 tasks a month.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

import costtrace
from costtrace.analysis.routing import whatif
from costtrace.analysis.self_hosting import MONTH_DAYS
from costtrace.analysis.stats import Filters
from costtrace.errors import ConfigError
from costtrace.spend import schema
from tests.ledger.test_routing import FOUR_O, MINI, SUPPORT, _record_support_tasks

D = Decimal
T0 = datetime(2026, 3, 1, 12)
SELF_HOST = {"self_host_monthly_usd": 2000, "self_host_input_per_mtok": "0.5", "self_host_output_per_mtok": "1.5"}


def _spread(engine: sa.Engine, *, last_after: timedelta, feature: str = "support") -> None:
    """Every task of ``feature`` ends at T0 but the last started, which ends ``last_after`` later."""
    t = schema.tasks.c
    with engine.begin() as conn:
        last = conn.execute(
            sa.select(t.task_id).where(t.feature == feature).order_by(t.started_at.desc()).limit(1)
        ).scalar_one()
        conn.execute(sa.update(schema.tasks).where(t.feature == feature).values(ended_at=T0))
        conn.execute(sa.update(schema.tasks).where(t.task_id == last).values(ended_at=T0 + last_after))


@pytest.fixture
def support_ledger(ledger_url: str, ledger_engine: sa.Engine) -> Iterator[sa.Engine]:
    costtrace.configure_ledger(ledger_url)
    try:
        _record_support_tasks()
        assert costtrace.flush_ledger(60)
    finally:
        costtrace.close_ledger()
    yield ledger_engine


@pytest.fixture
def month_ledger(support_ledger: sa.Engine) -> sa.Engine:
    """The support tasks spread over 30 days."""
    _spread(support_ledger, last_after=timedelta(days=30))
    return support_ledger


def test_break_even_volume_and_the_measured_months_costs(month_ledger):
    w = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, **SELF_HOST)
    s = w.self_hosting
    assert s is not None
    assert (s.price.monthly_usd, s.price.input_per_mtok, s.price.output_per_mtok) == (D(2000), D("0.5"), D("1.5"))
    assert (s.input_tokens_per_task, s.output_tokens_per_task, s.attempts_per_task) == (D(1000), D(100), D(1))
    assert s.cost_per_task_usd == D("0.00065")
    assert s.api_cost_per_task_usd == D("0.0035") == w.projected_cost_usd / w.tasks
    assert s.verdict == "above"
    assert s.break_even_tasks_per_month == D(2000) / D("0.00285")
    assert s.break_even_tasks_per_month_whole == 701_755
    # at V*, both cost the same a month
    v = s.break_even_tasks_per_month
    assert abs(D(2000) + v * s.cost_per_task_usd - v * s.api_cost_per_task_usd) < D("1e-20")
    t0 = T0.replace(tzinfo=UTC)
    assert (s.first_ended_at, s.last_ended_at) == (t0, t0 + timedelta(days=30))
    assert s.span_days == 30
    assert s.tasks_per_month == D("9.13125") == 9 * MONTH_DAYS / 30
    assert s.api_monthly_cost_usd == D("9.13125") * D("0.0035")
    assert s.monthly_cost_usd == D(2000) + D("9.13125") * D("0.00065")
    # the route's measured failure rate (0.2) holds self-hosted: 0.8 of the volume succeeds
    assert s.success_rate == D("0.8")
    assert s.cost_per_success_usd == s.monthly_cost_usd / (D("9.13125") * D("0.8"))
    assert s.api_cost_per_success_usd == w.projected_cost_per_success_usd == D("0.004375")


def test_every_self_hosting_assumption_is_stated(month_ledger):
    text = "\n".join(whatif(month_ledger, route=FOUR_O, filters=SUPPORT, **SELF_HOST).assumptions)
    assert "self-hosting gpt-4o: $2000 a month fixed (GPUs, ops) + $0.5/$1.5 per MTok input/output" in text
    assert "failing at the same rates as above" in text and "every input token, cached or not" in text
    assert "token need x 1 expected attempts per task" in text and "= 1000 in / 100 out" in text
    assert "$0.00065 per task self-hosted vs $0.0035 per task on the API route" in text
    assert "failed attempts and escalations included" in text
    assert (
        "tasks per month = 9 tasks / 30 days (from the first task's end, 2026-03-01 12:00:00 UTC, to the last's, "
        "2026-03-31 12:00:00 UTC) x 30.4375 days a month (365.25 / 12) = 9.1" in text
    )
    assert "V* = fixed cost a month / (API - self-hosted cost per task)" in text


def test_a_cascade_self_hosted_pays_the_escalated_attempts_tokens_too(month_ledger):
    w = whatif(month_ledger, route=f"{MINI}->{FOUR_O}", filters=SUPPORT, **SELF_HOST)
    s = w.self_hosting
    assert s is not None
    assert s.attempts_per_task == D("1.625")  # every task on mini, the 62.5% it fails on gpt-4o too
    assert (s.input_tokens_per_task, s.output_tokens_per_task) == (D(1625), D("162.5"))
    assert s.cost_per_task_usd == D("0.00065") * D("1.625")
    assert s.api_cost_per_task_usd == w.projected_cost_usd / 9 == D("0.0023975")
    assert s.break_even_tasks_per_month == D(2000) / (D("0.0023975") - D("0.00105625"))
    assert s.success_rate == D("0.875")  # 1 - 0.625 x 0.2


def test_a_given_failure_rate_is_the_self_hosted_models_too(month_ledger):
    w = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, failure_rates={FOUR_O: "0.5"}, **SELF_HOST)
    s = w.self_hosting
    assert s is not None and s.success_rate == D("0.5")
    assert s.cost_per_success_usd == s.monthly_cost_usd / (D("9.13125") * D("0.5"))
    assert "gpt-4o: failure rate 50.0% (given" in "\n".join(w.assumptions)


def test_token_multipliers_scale_the_self_hosted_tokens(month_ledger):
    w = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, token_multipliers={FOUR_O: 2}, **SELF_HOST)
    s = w.self_hosting
    assert s is not None and s.cost_per_task_usd == D("0.0013") and s.api_cost_per_task_usd == D("0.007")


def test_no_break_even_when_self_hosted_tokens_cost_as_much_as_the_api(month_ledger):
    # $10 per input MTok: 1000 x 10 / 1e6 = $0.01 a task, above the API's $0.0035
    w = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, self_host_monthly_usd=500, self_host_input_per_mtok=10)
    s = w.self_hosting
    assert s is not None and s.verdict == "never"
    assert s.break_even_tasks_per_month is None and s.break_even_tasks_per_month_whole is None
    assert s.monthly_cost_usd == 500 + D("9.13125") * D("0.01")  # the monthly figures are still given
    from costtrace.analysis.self_hosting import break_even_text

    assert break_even_text(s).startswith("no break-even: self-hosting's token cost per task ($0.0100) is not below")
    assert "never costs less, whatever the volume" in break_even_text(s)


def test_zero_fixed_cost_cheaper_tokens_win_at_any_volume(month_ledger):
    w = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, self_host_monthly_usd=0, self_host_output_per_mtok="1.5")
    s = w.self_hosting
    assert s is not None and s.verdict == "always" and s.break_even_tasks_per_month == 0
    assert s.cost_per_task_usd == D("0.00015") and s.monthly_cost_usd == D("9.13125") * D("0.00015")


def test_zero_fixed_cost_and_the_same_cost_per_task_tie(month_ledger):
    # gpt-4o's own list price, self-hosted with no fixed cost
    w = whatif(
        month_ledger,
        route=FOUR_O,
        filters=SUPPORT,
        self_host_monthly_usd=0,
        self_host_input_per_mtok="2.5",
        self_host_output_per_mtok=10,
    )
    s = w.self_hosting
    assert s is not None and s.verdict == "tie" and s.break_even_tasks_per_month is None


def test_a_free_api_route_is_never_beaten(month_ledger):
    w = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, price_changes={FOUR_O: -1}, self_host_monthly_usd=1)
    s = w.self_hosting
    assert s is not None and s.api_cost_per_task_usd == 0 and s.verdict == "never"


def test_one_task_measures_no_volume_and_says_so(support_ledger):
    # one gpt-4o-only task ends three days before the others; the window holds it alone
    t = schema.tasks.c
    with support_ledger.begin() as conn:
        conn.execute(sa.update(schema.tasks).where(t.feature == "support").values(ended_at=T0))
        first = conn.execute(
            sa.select(t.task_id).where(t.feature == "support", t.route == FOUR_O).order_by(t.started_at).limit(1)
        ).scalar_one()
        conn.execute(sa.update(schema.tasks).where(t.task_id == first).values(ended_at=T0 - timedelta(days=3)))
    one = Filters(feature="support", route=FOUR_O, until=T0 - timedelta(days=1))
    w = whatif(support_ledger, route=FOUR_O, filters=one, **SELF_HOST)
    s = w.self_hosting
    assert w.tasks == 1 and s is not None
    assert s.span == timedelta(0) and s.tasks_per_month is None
    assert s.api_monthly_cost_usd is None and s.monthly_cost_usd is None and s.cost_per_success_usd is None
    # the break-even needs no volume: it is still given
    assert s.break_even_tasks_per_month == D(2000) / D("0.00285")
    text = "\n".join(w.assumptions)
    assert "tasks per month: NOT MEASURED: there is one task (ended 2026-02-26 12:00:00 UTC)" in text
    assert "left out rather than extrapolated" in text


def test_a_span_under_a_day_measures_no_volume(support_ledger):
    _spread(support_ledger, last_after=timedelta(hours=23, minutes=59))
    w = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, **SELF_HOST)
    s = w.self_hosting
    assert s is not None and s.tasks_per_month is None and s.monthly_cost_usd is None
    text = "\n".join(w.assumptions)
    assert "NOT MEASURED: the 9 tasks all ended within 24.0 hours" in text and "minimum span of one day" in text


def test_a_span_of_one_day_is_measured(support_ledger):
    _spread(support_ledger, last_after=timedelta(days=1))
    s = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, **SELF_HOST).self_hosting
    assert s is not None and s.tasks_per_month == 9 * MONTH_DAYS


def test_unmeasured_volume_with_no_fixed_cost_still_gives_the_cost_per_success(support_ledger):
    s = whatif(support_ledger, route=FOUR_O, filters=SUPPORT, self_host_monthly_usd=0, self_host_input_per_mtok=1)
    assert s.self_hosting is not None and s.self_hosting.tasks_per_month is None  # recorded within seconds
    assert s.self_hosting.cost_per_success_usd == D("0.001") / D("0.8")


def test_the_span_is_the_scopes_own(month_ledger):
    # a task of another feature a year earlier does not stretch the support scope's span
    t = schema.tasks.c
    with month_ledger.begin() as conn:
        conn.execute(sa.update(schema.tasks).where(t.feature == "other").values(ended_at=T0 - timedelta(days=365)))
    s = whatif(month_ledger, route=FOUR_O, filters=SUPPORT, **SELF_HOST).self_hosting
    assert s is not None and s.span_days == 30


def test_without_the_lever_there_is_no_self_hosting(month_ledger):
    assert whatif(month_ledger, route=FOUR_O, filters=SUPPORT).self_hosting is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"self_host_monthly_usd": -1}, "self_host_monthly_usd=-1 must be >= 0"),
        ({"self_host_monthly_usd": "nan"}, "is not finite"),
        ({"self_host_monthly_usd": "lots"}, "is not a number"),
        ({"self_host_monthly_usd": 2000.0}, "not a float"),
        ({"self_host_monthly_usd": 1, "self_host_input_per_mtok": "-0.1"}, "self_host_input_per_mtok='-0.1' must be"),
        ({"self_host_monthly_usd": 1, "self_host_output_per_mtok": "inf"}, "self_host_output_per_mtok='inf' is not"),
        ({"self_host_input_per_mtok": 1}, "self_host_input_per_mtok is given without self_host_monthly_usd"),
        ({"self_host_output_per_mtok": 0}, "self_host_output_per_mtok is given without self_host_monthly_usd"),
    ],
)
def test_bad_self_hosting_costs_are_refused(support_ledger, kwargs, message):
    with pytest.raises(ConfigError) as exc:
        whatif(support_ledger, route=FOUR_O, filters=SUPPORT, **kwargs)
    assert message in str(exc.value)
