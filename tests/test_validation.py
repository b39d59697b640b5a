"""Every number a user gives is checked where it enters, by one parser (costtrace._validate).

A bad value (negative, NaN, infinite, absurdly large, the wrong type) is a ConfigError naming the
setting at configuration time; nothing is clamped, nothing reaches the run-time paths.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import costtrace
from costtrace import _validate
from costtrace._money import to_nano
from costtrace.errors import ConfigError
from costtrace.price.catalog import PriceCatalog
from costtrace.spend.budgets import Budget, FallbackPrice, load_budgets
from costtrace.spend.outcome_rules import OutcomeRule
from costtrace.spend.webhooks import Webhook

INT64_MAX = 2**63 - 1


def test_a_negative_fallback_price_is_refused_in_code_and_in_a_file(tmp_path: Path) -> None:
    """The hostile case: negative fallback prices made unpriced calls subtract from a hard cap."""
    with pytest.raises(ConfigError, match=r"budget 'x': fallback_price input_per_mtok=-1000 must be >= 0"):
        Budget("x", limit_usd="0.001", fallback_price=(-1000, -1000), action="block")
    with pytest.raises(ConfigError, match="fallback_price output_per_mtok=-1 must be >= 0"):
        FallbackPrice(1, -1)  # type: ignore[arg-type]
    path = tmp_path / "budgets.toml"
    path.write_text('[[budget]]\nname = "x"\nlimit_usd = 0.001\naction = "block"\nfallback_price = [1, -1000]\n')
    with pytest.raises(ConfigError, match=r"budget 1: budget 'x': fallback_price output_per_mtok=-1000 must be >= 0"):
        load_budgets(path)


def test_an_absurd_rolling_window_is_refused_in_code_and_in_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"window='100000000d' is too long; it must be at most 366 days"):
        Budget("r", limit_usd=1, period="rolling", window="100000000d", action="block")
    path = tmp_path / "budgets.toml"
    path.write_text('[[budget]]\nname = "r"\nlimit_usd = 1\nperiod = "rolling"\nwindow = "100000000d"\n')
    with pytest.raises(ConfigError, match="budget 'r': window='100000000d' is too long"):
        load_budgets(path)
    assert Budget("r", limit_usd=1, period="rolling", window="366d").window == timedelta(days=366)


def _webhook(**kw: object) -> Callable[[], object]:
    return lambda: Webhook("https://hooks.example.com/x", **kw)  # type: ignore[arg-type]


def _rule(**kw: object) -> Callable[[], object]:
    return lambda: OutcomeRule("r", min_success_rate=kw.pop("min_success_rate", "0.9"), **kw)  # type: ignore[arg-type]


def _budget(**kw: object) -> Callable[[], object]:
    return lambda: Budget("b", **{"limit_usd": 1, **kw})  # type: ignore[arg-type]


def _price(**kw: object) -> Callable[[], object]:
    return lambda: PriceCatalog().set_price("m", **{"input_per_mtok": 1, "output_per_mtok": 1, **kw})  # type: ignore[arg-type]


def _task(**kw: object) -> Callable[[], object]:
    return lambda: costtrace.task("t", **kw)  # type: ignore[arg-type]


BAD_VALUES: list[tuple[Callable[[], object], str]] = [
    # budgets
    (_budget(limit_usd=10**30), "limit_usd=1000000000000000000000000000000 must be <= 1,000,000,000 USD"),
    (_budget(limit_usd="1e30"), "limit_usd='1e30' must be <= 1,000,000,000 USD"),
    (_budget(limit_usd=-0.01), "limit_usd=-0.01 must be >= 0"),
    (_budget(limit_usd=float("inf")), "limit_usd=inf is not finite"),
    (_budget(limit_usd=None), "limit_usd=None is not a number"),
    (_budget(thresholds=[0]), "threshold=0 must be > 0"),
    (_budget(thresholds=[10**9]), "threshold=1000000000 must be <= 100"),
    (_budget(thresholds=["x"]), "threshold='x' is not a number"),
    (_budget(thresholds=0.8), "thresholds=0.8 must be a list"),
    (_budget(max_output_tokens=10**9), "max_output_tokens=1000000000 must be <= 100,000,000"),
    (_budget(max_output_tokens=True), "max_output_tokens=True must be an int >= 0"),
    (_budget(lease_s=1e12), "lease_s=1000000000000.0 must be <= 604,800 seconds"),
    (_budget(lease_s=float("nan")), "lease_s=nan must be a number of seconds > 0"),
    (_budget(lease_s="60"), "lease_s='60' must be a number of seconds"),
    (_budget(fail_open="no"), "fail_open='no' must be True or False"),
    (_budget(period="rolling", window=0), "window=0 must be a positive duration"),
    (_budget(period="rolling", window=timedelta(days=367)), "is too long; it must be at most 366 days"),
    (_budget(period="rolling", window=float("nan")), "window=nan must be a positive duration"),
    (_budget(fallback_price=(1, "1e30")), "fallback_price output_per_mtok='1e30' must be <= 100,000"),
    # price overrides and discounts
    (_price(input_per_mtok=10**30), "input_per_mtok=1000000000000000000000000000000 must be <= 100,000"),
    (_price(cache_read_per_mtok=-1), "cache_read_per_mtok=-1 must be >= 0"),
    (lambda: PriceCatalog().set_discount("openai", 0), "multiplier=0 is not in (0, 1]"),
    (lambda: PriceCatalog().set_discount("openai", "nan"), "multiplier='nan' is not finite"),
    (lambda: PriceCatalog().set_discount("openai", 1.5), "multiplier=1.5 is not in (0, 1]"),
    # task caps
    (_task(max_cost_usd=1e30), "max_cost_usd=1e+30 must be <= 1,000,000,000 USD"),
    (_task(max_cost_usd=float("nan")), "max_cost_usd=nan is not finite"),
    (_task(max_llm_calls=-1), "max_llm_calls=-1 must be an int >= 0"),
    (_task(max_tokens=1.5), "max_tokens=1.5 must be an int >= 0"),
    (_task(max_tokens=10**13), "max_tokens=10000000000000 must be <= 1,000,000,000,000"),
    # outcome rules
    (_rule(max_cost_per_success_usd=-1), "max_cost_per_success_usd=-1 must be >= 0"),
    (_rule(max_cost_per_success_usd="1e30"), "max_cost_per_success_usd='1e30' must be <= 1,000,000,000 USD"),
    (_rule(min_success_rate=2), "min_success_rate=2 is not in [0, 1]"),
    (_rule(min_success_rate=float("nan")), "min_success_rate=nan is not finite"),
    (_rule(window="100000000d"), "window='100000000d' is too long"),
    (_rule(min_tasks=0), "min_tasks=0 must be an int >= 1"),
    (_rule(min_tasks=10**13), "min_tasks=10000000000000 must be <= 1,000,000,000,000"),
    # webhooks
    (_webhook(timeout_s=0), "timeout_s=0 must be a number of seconds > 0"),
    (_webhook(timeout_s=1e9), "timeout_s=1000000000.0 must be <= 3,600 seconds"),
    (_webhook(timeout_s=float("nan")), "timeout_s=nan must be a number of seconds > 0"),
    (_webhook(backoff_s=-1), "backoff_s=-1 must be a number of seconds >= 0"),
    (_webhook(backoff_s=float("inf")), "backoff_s=inf must be <= 3,600 seconds"),
    (_webhook(retries=-1), "retries=-1 must be an int >= 0"),
    (_webhook(retries=1000), "retries=1000 must be <= 10"),
    (_webhook(retries=True), "retries=True must be an int >= 0"),
]


@pytest.mark.parametrize(("make", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_every_bad_number_is_a_config_error_naming_the_setting(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert message in str(info.value)


def test_the_largest_allowed_values_are_accepted_and_fit_the_ledger() -> None:
    b = Budget(
        "b",
        limit_usd=_validate.MAX_USD,
        fallback_price=(_validate.MAX_PRICE_PER_MTOK, _validate.MAX_PRICE_PER_MTOK),
        max_output_tokens=_validate.MAX_TOKENS,
        lease_s=_validate.MAX_LEASE_S,
        thresholds=[Decimal("0.001"), _validate.MAX_FRACTION_ABOVE_ONE],
        action="block",
    )
    assert b.limit_usd == Decimal(1_000_000_000)
    assert isinstance(b.fallback_price, FallbackPrice)
    worst = b.fallback_price.cost_usd(_validate.MAX_TOKENS, _validate.MAX_TOKENS)
    assert to_nano(worst) is not None and to_nano(worst) <= INT64_MAX  # type: ignore[operator]
    assert to_nano(b.limit) <= INT64_MAX  # type: ignore[operator]


@given(st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.decimals(), st.text(max_size=20)))
def test_an_accepted_usd_amount_is_finite_in_range_and_fits_nano_usd(value: object) -> None:
    try:
        amount = _validate.usd(value, "x")
    except ConfigError as exc:
        assert str(exc).startswith(f"x={_validate._show(value)} ")  # the value as shown: long ones cut short
        return
    assert amount.is_finite() and 0 <= amount <= _validate.MAX_USD
    assert 0 <= to_nano(amount) <= INT64_MAX  # type: ignore[operator]


@given(st.one_of(st.integers(), st.floats(), st.text(max_size=16), st.timedeltas()))
def test_an_accepted_duration_is_positive_and_bounded(value: object) -> None:
    try:
        d = _validate.duration(value, "w", maximum=_validate.MAX_WINDOW)
    except ConfigError as exc:
        assert str(exc).startswith(f"w={_validate._show(value)} ")
        return
    assert timedelta(0) < d <= _validate.MAX_WINDOW


@pytest.mark.parametrize("name", ["budgets.toml", "budgets.json"])
def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path, name: str) -> None:
    from costtrace.spend.ledger import load_config

    path = tmp_path / name
    path.write_bytes('[[budget]]\nname = "caf\u00e9"\nlimit_usd = 1\n'.encode("latin-1"))
    for load in (load_budgets, load_config):
        with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 22: b'\\xe9'\); save it as UTF-8"):
            load(path)


def test_report_misuse_logs_once_per_interval_counts_every_time_and_raises_only_under_pytest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from costtrace import _internal

    error = ConfigError("outcome=" + "x" * 100_000 + " is not an outcome")
    with pytest.raises(ConfigError):  # PYTEST_CURRENT_TEST is set while this test runs
        _internal.report_misuse("example", error)
    assert len(caplog.records) == 1
    caplog.clear()
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.delenv("COSTTRACE_RAISE_INTERNAL_ERRORS")
    with caplog.at_level("WARNING", logger="costtrace"):
        for _ in range(3):
            assert _internal.report_misuse("example", error) is None
    assert _internal.internal_error_counts() == {"misuse.example": 4}
    assert caplog.records == []  # logged at the first occurrence (above); the interval has not passed
    _internal._reset_for_tests()
    with caplog.at_level("WARNING", logger="costtrace"):
        _internal.report_misuse("example", error)
    (record,) = caplog.records
    assert "ignored a call to example" in record.getMessage() and len(record.getMessage()) < 1_000
    assert "(100,026 characters)" in record.getMessage()


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (lambda v: _validate.usd(v, "x"), 10**5000, "x=<an int of 16610 bits> must be <= 1,000,000,000 USD"),
        (lambda v: _validate.seconds(v, "x", maximum=60), 10**400, "must be <= 60 seconds"),
        (lambda v: _validate.duration(v, "x", maximum=_validate.MAX_WINDOW), 10**400, "is too long"),
        (
            lambda v: _validate.duration(v, "x", maximum=_validate.MAX_WINDOW),
            "9" * 400 + "d",
            "characters) is too long",
        ),
        (lambda v: _validate.usd(v, "x"), Decimal("sNaN"), "x=Decimal('sNaN') is not finite"),
        (lambda v: _validate.usd(v, "x"), "1" * 10_000_000, "characters) must be <= 1,000,000,000 USD"),
    ],
    ids=["int-5000-digits", "seconds-int-400-digits", "duration-int", "duration-400-digits", "snan", "10MB-string"],
)
def test_huge_values_are_refused_with_a_short_message(
    parse: Callable[[object], object], value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(value)
    assert message in str(info.value) and len(str(info.value)) < 300
