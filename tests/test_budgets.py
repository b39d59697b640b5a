"""Budget definitions: validation, scopes, calendar and rolling periods across DST and month ends, files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costtrace.errors import ConfigError
from costtrace.spend.budgets import Budget, load_budgets, parse_duration


def test_limit_is_exact_decimal_and_defaults_are_alert_only():
    b = Budget("b", limit_usd=0.1)
    assert b.limit == Decimal("0.1")
    assert b.action == "alert" and not b.enforcing
    assert b.thresholds == (Decimal("0.5"), Decimal("0.8"), Decimal("1"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit_usd": -1}, "must be >= 0"),
        ({"limit_usd": "abc"}, "is not a number"),
        ({"limit_usd": float("nan")}, "finite"),
        ({"limit_usd": 1, "period": "fortnight"}, "period='fortnight'"),
        ({"limit_usd": 1, "timezone": "Mars/Olympus"}, "IANA time zone"),
        ({"limit_usd": 1, "period": "rolling"}, "needs window="),
        ({"limit_usd": 1, "window": "1h"}, "rolling"),
        ({"limit_usd": 1, "action": "panic"}, "action='panic'"),
        ({"limit_usd": 1, "action": "downgrade"}, "needs downgrade_to"),
        ({"limit_usd": 1, "thresholds": [0]}, "thresholds"),
        ({"limit_usd": 1, "fallback_price": 3}, "fallback_price"),
        ({"limit_usd": 1, "lease_s": 0}, "lease_s"),
        ({"limit_usd": 1, "max_output_tokens": -5}, "max_output_tokens"),
    ],
)
def test_bad_definitions_raise_config_error_naming_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Budget("b", **kwargs)


def test_scope_matches_dimensions_task_provider_model_and_custom_keys():
    b = Budget("b", limit_usd=1, scope={"feature": "support", "task": "triage", "region": "eu"})
    dims = {"costtrace.feature": "support", "costtrace.dimension.region": "eu"}
    assert b.matches(dims, task_name="triage", provider="openai", model="gpt-4o")
    assert not b.matches(dims, task_name="other", provider="openai", model="gpt-4o")
    assert not b.matches({"costtrace.feature": "support"}, task_name="triage", provider="openai", model="x")
    glob = Budget("g", limit_usd=1)
    assert glob.matches({}, task_name=None, provider="anthropic", model="claude")


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("tz", "at", "hours"),
    [
        ("Europe/London", datetime(2026, 3, 29, 12, tzinfo=UTC), 23),  # spring forward
        ("Europe/London", datetime(2026, 10, 25, 12, tzinfo=UTC), 25),  # fall back
        ("America/New_York", datetime(2026, 3, 8, 18, tzinfo=UTC), 23),
        ("America/New_York", datetime(2026, 11, 1, 18, tzinfo=UTC), 25),
        ("UTC", datetime(2026, 6, 1, 18, tzinfo=UTC), 24),
    ],
)
def test_day_across_a_dst_change_lasts_23_or_25_hours(tz, at, hours):
    b = Budget("d", limit_usd=1, period="day", timezone=tz)
    start, end = b.bucket(at)
    assert end - start == timedelta(hours=hours)
    local_start = start.replace(tzinfo=UTC).astimezone(ZoneInfo(tz))
    assert (local_start.hour, local_start.minute) == (0, 0)


def test_month_end_in_a_time_zone_ahead_of_utc():
    b = Budget("m", limit_usd=1, period="month", timezone="Asia/Tokyo")
    # 2026-12-31 16:00 UTC is 2027-01-01 01:00 in Tokyo: January already.
    assert b.bucket(datetime(2026, 12, 31, 16, tzinfo=UTC)) == (datetime(2026, 12, 31, 15), datetime(2027, 1, 31, 15))
    assert b.bucket(datetime(2026, 12, 31, 14, tzinfo=UTC))[1] == datetime(2026, 12, 31, 15)
    assert b.resets_at(datetime(2026, 12, 31, 14, tzinfo=UTC)) == datetime(2026, 12, 31, 15, tzinfo=UTC)


def test_week_starts_monday_and_hour_follows_half_hour_zones():
    w = Budget("w", limit_usd=1, period="week")
    start, end = w.bucket(datetime(2026, 12, 3, 10, tzinfo=UTC))  # a Thursday
    assert start == datetime(2026, 11, 30) and end == datetime(2026, 12, 7)
    h = Budget("h", limit_usd=1, period="hour", timezone="Asia/Kolkata")  # UTC+5:30
    start, end = h.bucket(datetime(2026, 12, 3, 10, 10, tzinfo=UTC))
    assert start == datetime(2026, 12, 3, 9, 30) and end == datetime(2026, 12, 3, 10, 30)


def test_rolling_window_is_24_buckets_ending_with_the_current_one():
    r = Budget("r", limit_usd=1, period="rolling", window="24h")
    at = datetime(2026, 12, 3, 10, 45)
    start, end = r.bucket(at)
    assert (start, end) == (datetime(2026, 12, 3, 10), datetime(2026, 12, 3, 11))
    assert r.window_start(at) == datetime(2026, 12, 2, 11)


def test_total_budget_never_resets():
    t = Budget("t", limit_usd=1, period="total")
    assert t.resets_at(datetime(2026, 1, 1)) is None
    assert t.bucket(datetime(2026, 1, 1)) == t.bucket(datetime(2099, 1, 1))


_ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
    "America/Havana",
    "Asia/Beirut",
    "Pacific/Apia",
]


# An extra guard, sampled. Derandomized so it picks the same examples on every run (a random one found the
# skipped-midnight bug once in a while). tests/test_budget_periods.py enumerates every offset change instead.
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    at=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)),
    tz=st.sampled_from(_ZONES),
    period=st.sampled_from(["hour", "day", "week", "month"]),
)
def test_buckets_tile_time_exactly_once(at, tz, period):
    """Every instant is in exactly one period, and consecutive periods touch: nothing lost or counted twice."""
    b = Budget("p", limit_usd=1, period=period, timezone=tz)
    start, end = b.bucket(at)
    assert start <= at < end
    assert b.bucket(end)[0] == end
    assert b.bucket(start - timedelta(microseconds=1))[1] == start


def test_durations():
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(90) == timedelta(seconds=90)
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_budgets_file_toml(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text(
        """
[[budget]]
name = "support-daily"
limit_usd = "50.25"
period = "day"
timezone = "Europe/Paris"
scope = { feature = "support", team = "cx" }
thresholds = [0.5, 0.9]
action = "block"
fallback_price = [1, 5]

[[budget]]
name = "global-rolling"
limit_usd = 500
period = "rolling"
window = "7d"
"""
    )
    support, glob = load_budgets(path)
    assert support.limit == Decimal("50.25") and support.scope == {"feature": "support", "team": "cx"}
    assert support.thresholds == (Decimal("0.5"), Decimal("0.9")) and support.enforcing
    assert support.fallback_price.input_per_mtok == Decimal(1)
    assert glob.window == timedelta(days=7)
    assert Budget.from_json(support.to_json()) == support


def test_budgets_file_json_and_its_errors(tmp_path):
    good = tmp_path / "b.json"
    good.write_text(json.dumps({"budgets": [{"name": "a", "limit_usd": 1}]}))
    assert [b.name for b in load_budgets(good)] == ["a"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[budget]]\nname = "a"\nlimit_usd = 1\nperiod = "yearly"\n')
    with pytest.raises(ConfigError, match=r"budget 1: budget 'a': period='yearly'"):
        load_budgets(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('[[budget]]\nname = "a"\nlimit = 1\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        load_budgets(typo)
    twice = tmp_path / "twice.toml"
    twice.write_text('[[budget]]\nname = "a"\nlimit_usd = 1\n[[budget]]\nname = "a"\nlimit_usd = 2\n')
    with pytest.raises(ConfigError, match="defined twice"):
        load_budgets(twice)
    with pytest.raises(ConfigError, match="cannot read"):
        load_budgets(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[budget\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_budgets(broken)


def test_one_config_file_holds_budgets_outcome_rules_and_webhooks(tmp_path, monkeypatch):
    from costtrace.spend.ledger import load_config

    monkeypatch.setenv("TEST_SLACK_HOOK", "https://hooks.slack.com/services/T0/B0/secret")
    path = tmp_path / "costtrace.toml"
    path.write_text(
        """
[[budget]]
name = "support"
limit_usd = 10
scope = { feature = "support" }

[[outcome_rule]]
name = "support-quality"
feature = "support"
window = "1h"
min_first_pass_rate = 0.8

[[webhook]]
url_env = "TEST_SLACK_HOOK"
slack = true
"""
    )
    budgets, rules, hooks = load_config(path)
    assert [b.name for b in budgets] == ["support"]
    assert rules[0].min_first_pass_rate == Decimal("0.8") and rules[0].feature == "support"
    assert hooks[0].slack and hooks[0].url.endswith("/secret") and "secret" not in repr(hooks[0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[webhook]]\nurl_env = "NOT_SET_ANYWHERE_X"\n', "NOT_SET_ANYWHERE_X"),
        ("[[webhook]]\nslack = true\n", "'url' or 'url_env' is required"),
        ('[[webhook]]\nurl = "https://x.example"\nsecret = 1\n', "unknown setting"),
        ('[[outcome_rule]]\nname = "r"\nfeature = "f"\n', "outcome_rule 1"),
        ('[[alarm]]\nname = "r"\n', "unknown section"),
    ],
)
def test_config_file_errors_name_the_entry(tmp_path, text, message):
    from costtrace.spend.ledger import load_config

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
