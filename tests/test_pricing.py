"""Price catalog: genai-prices data, decomposition of usage, overrides, discounts, unpriced calls.

Expected amounts are computed here by hand from rates read out of genai-prices' published data (or
from the test's own override rates), or taken from ``genai_prices.calc_price``; never restated from
the implementation.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices.data import providers as GP_PROVIDERS
from genai_prices.types import ConditionalPrice, ModelInfo, ModelPrice, StartDateConstraint, TieredPrices

import costtrace
from costtrace.errors import ConfigError
from costtrace.price import arithmetic, lookup
from costtrace.price import catalog as pricing
from costtrace.price.arithmetic import Cost
from costtrace.price.catalog import PriceCatalog
from costtrace.price.lookup import OTEL_PROVIDER_IDS, unpriced_counts
from costtrace.usage import Usage

MTOK = Decimal(1_000_000)
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
GP_SOURCE = f"genai-prices {genai_prices.__version__}"


@pytest.fixture(autouse=True)
def _fresh_pricing_state() -> Iterator[None]:
    lookup._reset_unpriced_for_tests()
    pricing._reset_default_catalog_for_tests()
    yield
    lookup._reset_unpriced_for_tests()
    pricing._reset_default_catalog_for_tests()


@pytest.fixture
def catalog() -> PriceCatalog:
    return PriceCatalog()


def gp_model(provider_id: str, model_id: str) -> ModelInfo:
    provider = next(p for p in GP_PROVIDERS if p.id == provider_id)
    return next(m for m in provider.models if m.id == model_id)


def gp_rates(provider_id: str, model_id: str, at: datetime = NOW, **context: str) -> ModelPrice:
    """The published rates (USD per MTok) of a catalog model at ``at``, as genai-prices holds them."""
    return gp_model(provider_id, model_id).get_prices(at, context or None)


def flat(price: Any) -> Decimal:
    assert isinstance(price, Decimal), price
    return price


def gp_total(usage: Usage, model: str, provider_id: str | None, at: datetime = NOW, **context: str) -> Decimal:
    """genai-prices' own calculator, fed the same usage."""
    gp_usage = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_write_tokens=usage.cache_write_input_tokens,
        output_reasoning_tokens=usage.reasoning_output_tokens,
    )
    calc = genai_prices.calc_price(
        gp_usage, model, provider_id=provider_id, genai_request_timestamp=at, price_context=context or None
    )
    return calc.total_price


# -- import and basic behaviour ----------------------------------------------------------------------


def test_importing_costtrace_does_not_import_genai_prices() -> None:
    code = (
        "import sys, costtrace, costtrace.price.catalog\n"
        "assert 'genai_prices' not in sys.modules, sorted(m for m in sys.modules if 'genai' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cost_of_plain_call_is_tokens_times_published_rates(catalog: PriceCatalog) -> None:
    rates = gp_rates("openai", "gpt-4o")
    usage = Usage(input_tokens=12_345, output_tokens=678)

    cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)

    expected_in = 12_345 * flat(rates.input_mtok) / MTOK
    expected_out = 678 * flat(rates.output_mtok) / MTOK
    assert cost.priced
    assert cost.input_usd == expected_in
    assert cost.output_usd == expected_out
    assert cost.total_usd == expected_in + expected_out
    assert cost.price_source == GP_SOURCE
    assert (cost.model_id, cost.provider_id, cost.unpriced_reason) == ("gpt-4o", "openai", None)


def test_amounts_are_decimal_never_float(catalog: PriceCatalog) -> None:
    cost = catalog.cost(Usage(input_tokens=10, output_tokens=10), provider="openai", model="gpt-4o", at=NOW)
    for name in ("total_usd", "input_usd", "cache_read_usd", "cache_write_usd", "output_usd", "other_usd"):
        assert type(getattr(cost, name)) is Decimal, name


def test_model_name_match_is_case_insensitive_and_uses_catalog_aliases(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    canonical = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)
    assert catalog.cost(usage, provider="openai", model="GPT-4o", at=NOW).total_usd == canonical.total_usd
    dated_alias = catalog.cost(usage, provider="openai", model="gpt-4o-2024-08-06", at=NOW)
    assert dated_alias.model_id == "gpt-4o"
    assert dated_alias.total_usd == gp_total(usage, "gpt-4o-2024-08-06", "openai")


# -- unpriced: flagged, never $0 -----------------------------------------------------------------------


def test_unknown_model_is_unpriced_not_zero(catalog: PriceCatalog) -> None:
    cost = catalog.cost(Usage(input_tokens=100, output_tokens=10), provider="openai", model="gpt-nope-9")

    assert cost.priced is False
    assert cost.total_usd is None
    assert cost.unpriced_reason == "unknown model 'gpt-nope-9' for provider 'openai'"
    assert (cost.model_id, cost.provider_id) == (None, None)


def test_unknown_model_without_provider_is_unpriced(catalog: PriceCatalog) -> None:
    cost = catalog.cost(Usage(input_tokens=1), provider=None, model="my-private-llm")
    assert cost.total_usd is None
    assert "no genai-prices provider matches" in (cost.unpriced_reason or "")


def test_known_provider_does_not_borrow_another_providers_price(catalog: PriceCatalog) -> None:
    cost = catalog.cost(Usage(input_tokens=100), provider="anthropic", model="gpt-4o")
    assert not cost.priced
    assert cost.unpriced_reason == "unknown model 'gpt-4o' for provider 'anthropic'"


def test_one_warning_per_unknown_model(catalog: PriceCatalog, caplog: pytest.LogCaptureFixture) -> None:
    usage = Usage(input_tokens=100)
    with caplog.at_level(logging.WARNING, logger="costtrace"):
        for _ in range(5):
            catalog.cost(usage, provider="openai", model="gpt-nope-9")
            PriceCatalog().cost(usage, provider="openai", model="gpt-nope-9")  # once per process, not per catalog
        catalog.cost(usage, provider="openai", model="gpt-nope-10")

    warnings = [r for r in caplog.records if r.name == "costtrace" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "gpt-nope-9" in warnings[0].getMessage()
    assert "not $0" in warnings[0].getMessage()


def test_unpriced_counts_count_every_unpriced_lookup(catalog: PriceCatalog) -> None:
    for _ in range(3):
        catalog.cost(Usage(input_tokens=1), provider="openai", model="gpt-nope-9")
    catalog.cost(Usage(input_tokens=1), provider=None, model="other-unknown")
    catalog.cost(Usage(input_tokens=1), provider="openai", model="gpt-4o")

    assert unpriced_counts() == {("openai", "gpt-nope-9"): 3, (None, "other-unknown"): 1}


def test_model_priced_only_in_units_costtrace_cannot_measure_is_unpriced(catalog: PriceCatalog) -> None:
    # whisper is priced per audio hour; a token Usage cannot carry that, so $0 would be invented.
    cost = catalog.cost(Usage(input_tokens=100, output_tokens=50), provider="groq", model="whisper-large-v3")
    assert not cost.priced
    assert cost.total_usd is None
    assert "audio_hours" in (cost.unpriced_reason or "")


def test_model_the_catalog_lists_as_free_is_priced_zero(catalog: PriceCatalog) -> None:
    model = gp_model("openai", "moderation")
    assert isinstance(model.prices, ModelPrice)
    assert not any(v is not None for v in vars(model.prices).values())  # genai-prices: no charge

    cost = catalog.cost(Usage(input_tokens=100), provider="openai", model="omni-moderation-latest")

    assert cost.priced
    assert cost.total_usd == 0
    assert cost.price_source == GP_SOURCE


@pytest.mark.parametrize(
    ("usage", "fragment"),
    [
        (Usage(input_tokens=100, cache_read_input_tokens=101), "cache_read_input_tokens (101)"),
        (
            Usage(input_tokens=100, cache_read_input_tokens=60, cache_write_input_tokens=50),
            "exceed input_tokens",
        ),
        (
            Usage(input_tokens=100, cache_write_input_tokens=5, cache_write_1h_input_tokens=6),
            "cache_write_1h",
        ),
        (Usage(input_tokens=1, output_tokens=10, reasoning_output_tokens=11), "reasoning_output_tokens (11)"),
        (Usage(input_tokens=-1), "input_tokens=-1"),
        (Usage(input_tokens=1.5), "input_tokens=1.5"),  # type: ignore[arg-type]
    ],
)
def test_invalid_usage_is_unpriced_with_reason_not_raised(catalog: PriceCatalog, usage: Usage, fragment: str) -> None:
    cost = catalog.cost(usage, provider="anthropic", model="claude-sonnet-4-5")

    assert not cost.priced
    assert cost.total_usd is None
    assert (cost.unpriced_reason or "").startswith("invalid usage: ")
    assert fragment in (cost.unpriced_reason or "")


def test_invalid_usage_is_rejected_even_when_the_model_has_no_cache_price(catalog: PriceCatalog) -> None:
    catalog.set_price("no-cache-model", input_per_mtok=1, output_per_mtok=1)
    cost = catalog.cost(Usage(input_tokens=10, cache_read_input_tokens=20), provider=None, model="no-cache-model")
    assert (cost.unpriced_reason or "").startswith("invalid usage: ")


def test_non_usage_object_is_unpriced_not_raised(catalog: PriceCatalog) -> None:
    cost = catalog.cost({"input_tokens": 1}, provider="openai", model="gpt-4o")  # type: ignore[arg-type]
    assert cost.unpriced_reason == "invalid usage: expected costtrace.usage.Usage, got dict"


@pytest.mark.parametrize(("provider", "model"), [("openai", None), ("openai", ""), (42, "gpt-4o")])
def test_invalid_model_or_provider_is_unpriced_not_raised(catalog: PriceCatalog, provider: Any, model: Any) -> None:
    cost = catalog.cost(Usage(input_tokens=1), provider=provider, model=model)
    assert not cost.priced
    assert (cost.unpriced_reason or "").startswith("invalid call: ")


def test_unknown_usage_is_unpriced_not_zero(catalog: PriceCatalog) -> None:
    cost = catalog.cost(Usage(source="unknown"), provider="openai", model="gpt-4o")
    assert cost.total_usd is None
    assert "usage source 'unknown'" in (cost.unpriced_reason or "")


def test_internal_error_returns_unpriced_cost_and_is_reported(
    catalog: PriceCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costtrace import _internal

    monkeypatch.setenv("COSTTRACE_RAISE_INTERNAL_ERRORS", "0")

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(pricing, "_apply_plan", broken)
    cost = catalog.cost(Usage(input_tokens=1), provider="openai", model="gpt-4o")

    assert not cost.priced and cost.total_usd is None
    assert "internal error" in (cost.unpriced_reason or "")
    assert _internal.internal_error_counts() == {"pricing.cost": 1}


# -- decomposition: cache, reasoning, request fees, tiers ----------------------------------------------


def test_cache_read_priced_at_cache_rate(catalog: PriceCatalog) -> None:
    rates = gp_rates("openai", "gpt-4o")
    usage = Usage(input_tokens=10_000, cache_read_input_tokens=8_000, output_tokens=100)

    cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)

    assert cost.input_usd == 2_000 * flat(rates.input_mtok) / MTOK
    assert cost.cache_read_usd == 8_000 * flat(rates.cache_read_mtok) / MTOK
    assert cost.total_usd == cost.input_usd + cost.cache_read_usd + 100 * flat(rates.output_mtok) / MTOK


def test_cache_savings_is_cache_reads_times_rate_difference(catalog: PriceCatalog) -> None:
    rates = gp_rates("openai", "gpt-4o")
    usage = Usage(input_tokens=10_000, cache_read_input_tokens=8_000)

    cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)

    assert cost.cache_savings_usd == 8_000 * (flat(rates.input_mtok) - flat(rates.cache_read_mtok)) / MTOK
    no_cache = catalog.cost(Usage(input_tokens=10_000), provider="openai", model="gpt-4o", at=NOW)
    assert no_cache.cache_savings_usd == 0
    assert no_cache.total_usd is not None and cost.total_usd is not None
    assert no_cache.total_usd - cost.total_usd == cost.cache_savings_usd


def test_cache_reads_charged_as_input_when_model_has_no_cache_price(catalog: PriceCatalog) -> None:
    catalog.set_price("plain-model", input_per_mtok="2", output_per_mtok="8")
    usage = Usage(input_tokens=1_000, cache_read_input_tokens=600, cache_write_input_tokens=300)

    cost = catalog.cost(usage, provider=None, model="plain-model")

    assert cost.input_usd == 1_000 * Decimal(2) / MTOK
    assert cost.cache_read_usd == 0 and cost.cache_write_usd == 0 and cost.cache_savings_usd == 0
    assert cost.total_usd == Decimal("0.002")


def test_catalog_model_without_cache_price_charges_cache_reads_as_input(catalog: PriceCatalog) -> None:
    rates = gp_rates("perplexity", "sonar")
    assert rates.cache_read_mtok is None
    usage = Usage(input_tokens=1_000, cache_read_input_tokens=900)

    cost = catalog.cost(usage, provider="perplexity", model="sonar", at=NOW)

    assert cost.input_usd == 1_000 * flat(rates.input_mtok) / MTOK
    assert cost.cache_read_usd == 0


def test_cache_write_1h_priced_at_1h_rate_and_rest_at_5m_rate(catalog: PriceCatalog) -> None:
    rates = gp_rates("anthropic", "claude-sonnet-4-5")
    base = {
        k: price.base if isinstance(price, TieredPrices) else flat(price)
        for k, price in vars(rates).items()
        if price is not None
    }
    usage = Usage(
        input_tokens=10_000,
        cache_read_input_tokens=2_000,
        cache_write_input_tokens=5_000,
        cache_write_1h_input_tokens=1_000,
        output_tokens=300,
    )

    cost = catalog.cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=NOW)

    assert cost.input_usd == 3_000 * base["input_mtok"] / MTOK
    assert cost.cache_read_usd == 2_000 * base["cache_read_mtok"] / MTOK
    assert cost.cache_write_usd == (4_000 * base["cache_write_mtok"] + 1_000 * base["cache_write_1h_mtok"]) / MTOK
    assert cost.output_usd == 300 * base["output_mtok"] / MTOK


def test_tier_cliff_prices_all_tokens_at_tier_rate(catalog: PriceCatalog) -> None:
    rates = gp_rates("anthropic", "claude-sonnet-4-5")
    tiered = rates.input_mtok
    assert isinstance(tiered, TieredPrices)
    tier = tiered.tiers[0]
    output = rates.output_mtok
    assert isinstance(output, TieredPrices)

    below = catalog.cost(
        Usage(input_tokens=tier.start, output_tokens=1_000),
        provider="anthropic",
        model="claude-sonnet-4-5",
        at=NOW,
    )
    above = catalog.cost(
        Usage(input_tokens=tier.start + 1, output_tokens=1_000),
        provider="anthropic",
        model="claude-sonnet-4-5",
        at=NOW,
    )

    assert below.input_usd == tier.start * tiered.base / MTOK
    assert above.input_usd == (tier.start + 1) * tier.price / MTOK  # every token, not just the excess
    assert above.output_usd == 1_000 * output.tiers[0].price / MTOK  # the tier is set by input tokens


def test_tier_threshold_counts_cached_input_tokens(catalog: PriceCatalog) -> None:
    rates = gp_rates("google", "gemini-2.5-pro")
    cache_read = rates.cache_read_mtok
    assert isinstance(cache_read, TieredPrices)
    start = cache_read.tiers[0].start
    usage = Usage(input_tokens=start + 1, cache_read_input_tokens=start)

    cost = catalog.cost(usage, provider="gcp.gemini", model="gemini-2.5-pro", at=NOW)

    assert cost.cache_read_usd == start * cache_read.tiers[0].price / MTOK
    assert cost.total_usd == gp_total(usage, "gemini-2.5-pro", "google")


def test_separate_reasoning_rate_prices_reasoning_apart_from_output(catalog: PriceCatalog) -> None:
    rates = gp_rates("perplexity", "sonar-deep-research")
    usage = Usage(input_tokens=100, output_tokens=1_000, reasoning_output_tokens=700)

    cost = catalog.cost(usage, provider="perplexity", model="sonar-deep-research", at=NOW)

    assert cost.reasoning_usd == 700 * flat(rates.output_reasoning_mtok) / MTOK
    assert cost.output_usd == 300 * flat(rates.output_mtok) / MTOK


def test_reasoning_without_its_own_rate_is_output(catalog: PriceCatalog) -> None:
    rates = gp_rates("openai", "o3")
    usage = Usage(input_tokens=100, output_tokens=1_000, reasoning_output_tokens=700)

    cost = catalog.cost(usage, provider="openai", model="o3", at=NOW)

    assert cost.reasoning_usd == 0
    assert cost.output_usd == 1_000 * flat(rates.output_mtok) / MTOK


def test_per_request_fee_goes_to_other_usd(catalog: PriceCatalog) -> None:
    rates = gp_rates("perplexity", "sonar")
    usage = Usage(input_tokens=100, output_tokens=100)

    cost = catalog.cost(usage, provider="perplexity", model="sonar", at=NOW)

    assert cost.other_usd == flat(rates.requests_kcount) / 1000
    assert cost.total_usd == (100 * flat(rates.input_mtok) + 100 * flat(rates.output_mtok)) / MTOK + cost.other_usd


def test_host_decimal_context_does_not_round_costs(catalog: PriceCatalog) -> None:
    import decimal

    usage = Usage(input_tokens=123_457, output_tokens=7)
    expected = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW).total_usd
    with decimal.localcontext(decimal.Context(prec=3)):
        PriceCatalog.__init__(catalog)  # fresh caches: nothing computed under the host context survives
        assert catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW).total_usd == expected


# -- dated and time-of-day prices ------------------------------------------------------------------


def test_dated_price_uses_price_in_force_at_request_time(catalog: PriceCatalog) -> None:
    model = gp_model("openai", "o3")
    assert isinstance(model.prices, list)
    dated = next(p for p in model.prices if isinstance(p.constraint, StartDateConstraint))
    assert isinstance(dated.constraint, StartDateConstraint)
    start = dated.constraint.start_date
    before_price = model.prices[0].prices.input_mtok
    after_price = dated.prices.input_mtok
    assert before_price != after_price
    day_before = datetime.combine(start - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=23)
    on_start = datetime.combine(start, datetime.min.time(), UTC)
    usage = Usage(input_tokens=1_000_000)

    before = catalog.cost(usage, provider="openai", model="o3", at=day_before)
    after = catalog.cost(usage, provider="openai", model="o3", at=on_start)

    assert before.input_usd == before_price
    assert after.input_usd == after_price
    assert after.price_date == start.isoformat()
    assert before.price_date is None  # the original price has no start date


def test_dated_price_compares_the_utc_date(catalog: PriceCatalog) -> None:
    model = gp_model("openai", "o3")
    assert isinstance(model.prices, list)
    dated = next(p for p in model.prices if isinstance(p.constraint, StartDateConstraint))
    assert isinstance(dated.constraint, StartDateConstraint)
    # 23:30 on the day before in UTC-05:00 is already the start date in UTC.
    local = datetime.combine(dated.constraint.start_date - timedelta(days=1), datetime.min.time())
    at = local.replace(hour=23, minute=30, tzinfo=timezone(timedelta(hours=-5)))

    cost = catalog.cost(Usage(input_tokens=1_000_000), provider="openai", model="o3", at=at)

    assert cost.input_usd == dated.prices.input_mtok


def test_naive_datetime_is_treated_as_utc(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    naive = datetime(2026, 11, 1, 3, 0)
    aware = naive.replace(tzinfo=UTC)
    assert (
        catalog.cost(usage, provider="deepseek", model="deepseek-chat", at=naive).total_usd
        == catalog.cost(usage, provider="deepseek", model="deepseek-chat", at=aware).total_usd
    )


def test_time_of_day_price_follows_utc_clock(catalog: PriceCatalog) -> None:
    model = gp_model("deepseek", "deepseek-chat")
    assert isinstance(model.prices, list)
    usage = Usage(input_tokens=1_000_000)
    for hour in (3, 20):
        at = datetime(2026, 11, 1, hour, 0, tzinfo=UTC)
        in_force = next(p.prices for p in reversed(model.prices) if p.constraint is None or p.constraint.active(at))
        cost = catalog.cost(usage, provider="deepseek", model="deepseek-chat", at=at)
        assert cost.input_usd == in_force.input_mtok, hour
    day = catalog.cost(usage, provider="deepseek", model="deepseek-chat", at=datetime(2026, 11, 1, 3, tzinfo=UTC))
    night = catalog.cost(usage, provider="deepseek", model="deepseek-chat", at=datetime(2026, 11, 1, 20, tzinfo=UTC))
    assert day.input_usd != night.input_usd


def test_at_defaults_to_now(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000)
    before = datetime.now(UTC)
    now = catalog.cost(usage, provider="deepseek", model="deepseek-chat")
    after = datetime.now(UTC)
    # The price in force before or after the call: one of them even if its day/night price switched meanwhile.
    in_force = {
        catalog.cost(usage, provider="deepseek", model="deepseek-chat", at=t).input_usd for t in [before, after]
    }
    assert now.input_usd in in_force


# -- service tiers, batch, price context -------------------------------------------------------------


def test_priority_service_tier_uses_priority_price(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000)
    standard = gp_rates("openai", "gpt-4o")
    priority = gp_rates("openai", "gpt-4o", service_tier="priority")
    assert priority.input_mtok != standard.input_mtok

    cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW, service_tier="priority")

    assert cost.input_usd == priority.input_mtok


def test_batch_uses_batch_price(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    batch = gp_rates("openai", "gpt-4o", processing="batch")

    cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW, batch=True)

    assert cost.total_usd == flat(batch.input_mtok) + flat(batch.output_mtok)
    assert cost.total_usd == gp_total(usage, "gpt-4o", "openai", processing="batch")


def test_service_tier_batch_means_batch_processing(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    via_tier = catalog.cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=NOW, service_tier="batch")
    via_flag = catalog.cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=NOW, batch=True)
    standard = catalog.cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=NOW)
    assert via_tier.total_usd == via_flag.total_usd
    assert via_tier.total_usd != standard.total_usd


def test_unknown_service_tier_uses_standard_price(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000)
    standard = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)
    scale = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW, service_tier="scale")
    assert scale.total_usd == standard.total_usd


def test_price_context_selects_other_variants(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    model = next(
        (p.id, m)
        for p in GP_PROVIDERS
        for m in p.models
        if any(v.when == {"speed": "fast"} for v in m.price_variants or ())
    )
    provider_id, info = model

    cost = catalog.cost(usage, provider=provider_id, model=info.id, at=NOW, price_context={"speed": "fast"})

    assert cost.total_usd == gp_total(usage, info.id, provider_id, speed="fast")


# -- provider mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(("otel_name", "gp_id"), sorted((k, v) for k, v in OTEL_PROVIDER_IDS.items() if v))
def test_otel_provider_names_map_to_existing_genai_prices_providers(otel_name: str, gp_id: str) -> None:
    assert any(p.id == gp_id for p in GP_PROVIDERS), f"{otel_name} -> {gp_id} is not a genai-prices provider"


@pytest.mark.parametrize("otel_name", ["gcp.gemini", "gcp.vertex_ai", "gcp.gen_ai"])
def test_gcp_names_map_to_google_prices(catalog: PriceCatalog, otel_name: str) -> None:
    usage = Usage(input_tokens=10_000, output_tokens=1_000)
    cost = catalog.cost(usage, provider=otel_name, model="gemini-2.5-flash", at=NOW)
    assert cost.provider_id == "google"
    assert cost.total_usd == gp_total(usage, "gemini-2.5-flash", "google")


def test_azure_maps_to_azure_price_list(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=10_000, output_tokens=1_000)
    cost = catalog.cost(usage, provider="azure.ai.openai", model="o1", at=NOW)
    assert cost.provider_id == "azure"
    assert cost.total_usd == gp_total(usage, "o1", "azure")


def test_azure_model_missing_from_azure_list_uses_openai_price(catalog: PriceCatalog) -> None:
    assert not any(m.is_match("gpt-4o") for m in next(p for p in GP_PROVIDERS if p.id == "azure").models)
    usage = Usage(input_tokens=10_000, output_tokens=1_000)

    cost = catalog.cost(usage, provider="azure.ai.openai", model="gpt-4o", at=NOW)

    assert cost.priced
    assert cost.provider_id == "openai"  # the list the price came from
    assert cost.total_usd == catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW).total_usd


def test_azure_fallback_ignores_openai_service_tier_variants(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000)
    cost = catalog.cost(usage, provider="azure.ai.openai", model="gpt-4o", at=NOW, service_tier="priority")
    assert cost.total_usd == gp_total(usage, "gpt-4o", "azure", service_tier="priority")
    assert cost.input_usd == gp_rates("openai", "gpt-4o").input_mtok


@pytest.mark.parametrize(
    ("otel_name", "model", "gp_id"),
    [
        ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws"),
        ("mistral_ai", "mistral-small-latest", "mistral"),
        ("x_ai", "grok-3", "x-ai"),
        ("cohere", "command-r-plus", "cohere"),
    ],
)
def test_otel_provider_names_price_like_their_genai_prices_provider(
    catalog: PriceCatalog, otel_name: str, model: str, gp_id: str
) -> None:
    usage = Usage(input_tokens=10_000, output_tokens=1_000)
    cost = catalog.cost(usage, provider=otel_name, model=model, at=NOW)
    assert cost.priced, cost.unpriced_reason
    assert cost.total_usd == gp_total(usage, model, gp_id)


def test_genai_prices_provider_ids_are_accepted_directly(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=10_000, output_tokens=1_000)
    cost = catalog.cost(usage, provider="google", model="gemini-2.5-flash", at=NOW)
    assert cost.provider_id == "google"


@pytest.mark.parametrize("provider", [None, "my-gateway"])
def test_missing_or_unknown_provider_is_found_from_model_name(catalog: PriceCatalog, provider: str | None) -> None:
    usage = Usage(input_tokens=10_000, output_tokens=1_000)
    cost = catalog.cost(usage, provider=provider, model="claude-sonnet-4-5", at=NOW)
    assert cost.provider_id == "anthropic"
    assert cost.total_usd == gp_total(usage, "claude-sonnet-4-5", None)


def test_watsonx_has_no_price_list_of_its_own(catalog: PriceCatalog) -> None:
    cost = catalog.cost(Usage(input_tokens=100), provider="ibm.watsonx.ai", model="ibm/granite-3-8b-instruct")
    assert not cost.priced
    assert "'ibm.watsonx.ai' has no genai-prices list" in (cost.unpriced_reason or "")


def test_is_priced_reports_whether_a_model_has_a_price(catalog: PriceCatalog) -> None:
    assert catalog.is_priced("openai", "gpt-4o")
    assert not catalog.is_priced("openai", "gpt-nope-9")
    catalog.set_price("gpt-nope-9", input_per_mtok=1, output_per_mtok=1)
    assert catalog.is_priced("openai", "gpt-nope-9")


# -- overrides from code -----------------------------------------------------------------------------


def test_override_wins_over_genai_prices(catalog: PriceCatalog) -> None:
    catalog.set_price("gpt-4o", provider="openai", input_per_mtok="1.00", output_per_mtok="4.00")
    usage = Usage(input_tokens=2_000, output_tokens=500)

    cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)

    assert cost.total_usd == (2_000 * Decimal(1) + 500 * Decimal(4)) / MTOK
    assert cost.price_source == "override"
    assert (cost.model_id, cost.provider_id) == ("gpt-4o", "openai")


def test_override_with_all_rates_prices_each_kind_of_token(catalog: PriceCatalog) -> None:
    catalog.set_price(
        "house-model",
        input_per_mtok=10,
        output_per_mtok=40,
        cache_read_per_mtok=1,
        cache_write_per_mtok=12.5,
        cache_write_1h_per_mtok=20,
        reasoning_per_mtok=50,
    )
    usage = Usage(
        input_tokens=1_000,
        cache_read_input_tokens=300,
        cache_write_input_tokens=200,
        cache_write_1h_input_tokens=50,
        output_tokens=400,
        reasoning_output_tokens=100,
    )

    cost = catalog.cost(usage, provider=None, model="house-model")

    assert cost.input_usd == 500 * Decimal(10) / MTOK
    assert cost.cache_read_usd == 300 * Decimal(1) / MTOK
    assert cost.cache_write_usd == (150 * Decimal("12.5") + 50 * Decimal(20)) / MTOK
    assert cost.output_usd == 300 * Decimal(40) / MTOK
    assert cost.reasoning_usd == 100 * Decimal(50) / MTOK
    assert cost.cache_savings_usd == 300 * Decimal(9) / MTOK
    assert cost.total_usd == Decimal("0.025175")  # 0.005 + 0.0003 + 0.002875 + 0.012 + 0.005


def test_self_hosted_model_priced_zero_is_priced_not_unpriced(catalog: PriceCatalog) -> None:
    catalog.set_price("llama-3.1-8b-local", input_per_mtok=0, output_per_mtok=0)

    cost = catalog.cost(Usage(input_tokens=5_000, output_tokens=500), provider="vllm", model="llama-3.1-8b-local")

    assert cost.priced is True
    assert cost.total_usd == 0
    assert cost.price_source == "override"
    assert cost.unpriced_reason is None


def test_override_glob_matches_fine_tuned_models(catalog: PriceCatalog) -> None:
    catalog.set_price("ft:gpt-4o-mini:*", input_per_mtok="0.3", output_per_mtok="1.2")

    cost = catalog.cost(Usage(input_tokens=1_000_000), provider="openai", model="ft:gpt-4o-mini:acme:custom:abc123")

    assert cost.total_usd == Decimal("0.3")
    assert cost.model_id == "ft:gpt-4o-mini:*"


def test_override_exact_name_beats_glob_and_longer_glob_beats_shorter(catalog: PriceCatalog) -> None:
    catalog.set_price("ft:*", input_per_mtok=1, output_per_mtok=1)
    catalog.set_price("ft:gpt-4o-mini:*", input_per_mtok=2, output_per_mtok=2)
    catalog.set_price("ft:gpt-4o-mini:acme::x1", input_per_mtok=3, output_per_mtok=3)
    usage = Usage(input_tokens=1_000_000)

    def price(model: str) -> Decimal | None:
        return catalog.cost(usage, provider="openai", model=model).total_usd

    assert price("ft:gpt-4o-mini:acme::x1") == 3
    assert price("ft:gpt-4o-mini:acme::x2") == 2
    assert price("ft:gpt-4.1:acme::x3") == 1


def test_override_model_match_is_case_insensitive(catalog: PriceCatalog) -> None:
    catalog.set_price("My-Model", input_per_mtok=1, output_per_mtok=1)
    assert catalog.cost(Usage(input_tokens=1_000_000), provider=None, model="MY-MODEL").total_usd == 1


def test_override_scoped_to_provider_applies_only_to_that_provider(catalog: PriceCatalog) -> None:
    catalog.set_price("gpt-4o", provider="azure", input_per_mtok=1, output_per_mtok=1)
    usage = Usage(input_tokens=1_000_000)

    azure = catalog.cost(usage, provider="azure.ai.openai", model="gpt-4o", at=NOW)
    openai = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)

    assert azure.price_source == "override" and azure.total_usd == 1
    assert openai.price_source == GP_SOURCE


def test_provider_scoped_override_beats_unscoped_one(catalog: PriceCatalog) -> None:
    catalog.set_price("m", input_per_mtok=1, output_per_mtok=1)
    catalog.set_price("m", provider="openai", input_per_mtok=2, output_per_mtok=2)
    usage = Usage(input_tokens=1_000_000)
    assert catalog.cost(usage, provider="openai", model="m").total_usd == 2
    assert catalog.cost(usage, provider="groq", model="m").total_usd == 1


def test_setting_the_same_override_again_replaces_it(catalog: PriceCatalog) -> None:
    catalog.set_price("m", input_per_mtok=1, output_per_mtok=1)
    assert catalog.cost(Usage(input_tokens=1_000_000), provider=None, model="m").total_usd == 1
    catalog.set_price("m", input_per_mtok=5, output_per_mtok=1)
    assert catalog.cost(Usage(input_tokens=1_000_000), provider=None, model="m").total_usd == 5


def test_dated_override_applies_from_its_start_date(catalog: PriceCatalog) -> None:
    catalog.set_price("m", input_per_mtok=1, output_per_mtok=1)
    catalog.set_price("m", input_per_mtok=2, output_per_mtok=2, start_date=date(2026, 6, 1))
    usage = Usage(input_tokens=1_000_000)

    before = catalog.cost(usage, provider=None, model="m", at=datetime(2026, 5, 31, 23, tzinfo=UTC))
    after = catalog.cost(usage, provider=None, model="m", at=datetime(2026, 6, 1, tzinfo=UTC))

    assert (before.total_usd, before.price_date) == (1, None)
    assert (after.total_usd, after.price_date) == (2, "2026-06-01")


def test_future_override_leaves_catalog_price_in_force_until_it_starts(catalog: PriceCatalog) -> None:
    catalog.set_price("gpt-4o", provider="openai", input_per_mtok=1, output_per_mtok=1, start_date="2027-01-01")
    usage = Usage(input_tokens=1_000_000)

    now = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)
    later = catalog.cost(usage, provider="openai", model="gpt-4o", at=datetime(2027, 1, 2, tzinfo=UTC))

    assert now.price_source == GP_SOURCE
    assert later.price_source == "override" and later.total_usd == 1


def test_override_not_yet_in_force_for_uncatalogued_model_is_unpriced(catalog: PriceCatalog) -> None:
    catalog.set_price("my-model", input_per_mtok=1, output_per_mtok=1, start_date="2027-01-01")
    cost = catalog.cost(Usage(input_tokens=1), provider=None, model="my-model", at=NOW)
    assert not cost.priced
    assert "starts 2027-01-01" in (cost.unpriced_reason or "")


def test_override_for_a_service_tier_applies_only_to_that_tier(catalog: PriceCatalog) -> None:
    catalog.set_price("my-model", input_per_mtok=2, output_per_mtok=2)
    catalog.set_price("my-model", service_tier="flex", input_per_mtok=1, output_per_mtok=1)
    catalog.set_price("my-model", batch=True, input_per_mtok="0.5", output_per_mtok="0.5")
    usage = Usage(input_tokens=1_000_000)

    def price(**kw: Any) -> Decimal | None:
        return catalog.cost(usage, provider=None, model="my-model", **kw).total_usd

    assert price() == 2
    assert price(service_tier="flex") == 1
    assert price(service_tier="priority") == 2
    assert price(batch=True) == Decimal("0.5")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input_per_mtok": -1, "output_per_mtok": 1}, "input_per_mtok=-1 must be >= 0"),
        ({"input_per_mtok": "cheap", "output_per_mtok": 1}, "input_per_mtok='cheap' is not a number"),
        ({"input_per_mtok": 1, "output_per_mtok": float("nan")}, "output_per_mtok=nan is not finite"),
        ({"input_per_mtok": True, "output_per_mtok": 1}, "input_per_mtok=True is not a number"),
        (
            {"input_per_mtok": 1, "output_per_mtok": 1, "cache_write_1h_per_mtok": 2},
            "needs cache_write_per_mtok",
        ),
        (
            {"input_per_mtok": 1, "output_per_mtok": 1, "start_date": "June"},
            "start_date='June' is not an ISO date",
        ),
        ({"input_per_mtok": 1, "output_per_mtok": 1, "service_tier": ""}, "service_tier=''"),
    ],
)
def test_set_price_bad_value_raises_config_error_naming_value(
    catalog: PriceCatalog, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        catalog.set_price("my-model", **kwargs)
    assert "set_price('my-model')" in str(info.value)
    assert fragment in str(info.value)


def test_set_price_requires_a_model_name(catalog: PriceCatalog) -> None:
    with pytest.raises(ConfigError, match="model=' ' must be a non-empty"):
        catalog.set_price(" ", input_per_mtok=1, output_per_mtok=1)


# -- discounts ---------------------------------------------------------------------------------------


def test_discount_multiplies_list_price(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=10_000, cache_read_input_tokens=5_000, output_tokens=1_000)
    list_price = catalog.cost(usage, provider="azure.ai.openai", model="o1", at=NOW)
    catalog.set_discount("azure.ai.openai", "0.8")

    discounted = catalog.cost(usage, provider="azure.ai.openai", model="o1", at=NOW)

    assert list_price.total_usd is not None
    assert discounted.total_usd == list_price.total_usd * Decimal("0.8")
    assert discounted.input_usd == list_price.input_usd * Decimal("0.8")
    assert discounted.cache_savings_usd == list_price.cache_savings_usd * Decimal("0.8")
    assert discounted.discount == Decimal("0.8")
    assert discounted.price_source == GP_SOURCE


def test_discount_by_genai_prices_id_matches_otel_provider_name(catalog: PriceCatalog) -> None:
    catalog.set_discount("aws", "0.5")
    usage = Usage(input_tokens=1_000_000)
    cost = catalog.cost(usage, provider="aws.bedrock", model="anthropic.claude-3-5-sonnet-20240620-v1:0", at=NOW)
    assert cost.total_usd == gp_total(usage, "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws") * Decimal("0.5")


def test_model_discount_beats_provider_discount(catalog: PriceCatalog) -> None:
    catalog.set_discount("openai", "0.9")
    catalog.set_discount("openai", "0.5", model="gpt-4o")
    usage = Usage(input_tokens=1_000_000)

    assert catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW).discount == Decimal("0.5")
    assert catalog.cost(usage, provider="openai", model="o3", at=NOW).discount == Decimal("0.9")
    assert catalog.cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=NOW).discount is None


def test_discount_does_not_apply_to_your_own_prices(catalog: PriceCatalog) -> None:
    catalog.set_discount("openai", "0.5")
    catalog.set_price("ft:*", provider="openai", input_per_mtok=1, output_per_mtok=1)
    cost = catalog.cost(Usage(input_tokens=1_000_000), provider="openai", model="ft:gpt-4o:acme::1")
    assert cost.total_usd == 1
    assert cost.discount is None


@pytest.mark.parametrize("multiplier", [0, "-0.1", 1.5, 20, "x"])
def test_discount_out_of_range_raises_config_error(catalog: PriceCatalog, multiplier: Any) -> None:
    with pytest.raises(ConfigError, match="multiplier="):
        catalog.set_discount("openai", multiplier)


# -- overrides from files ----------------------------------------------------------------------------


TOML_FILE = """
[[prices]]
model = "ft:gpt-4o-mini:*"
provider = "openai"
input_per_mtok = 0.30
output_per_mtok = 1.20
cache_read_per_mtok = 0.15

[[prices]]
model = "llama-3.1-70b-local"
input_per_mtok = 0
output_per_mtok = 0

[[prices]]
model = "house-model"
input_per_mtok = "2"
output_per_mtok = "8"
start_date = 2026-06-01

[[discounts]]
provider = "anthropic"
multiplier = 0.75
"""


def test_load_prices_toml(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TOML_FILE)

    catalog.load_prices(path)

    ft = catalog.cost(
        Usage(input_tokens=1_000_000, cache_read_input_tokens=1_000_000),
        provider="openai",
        model="ft:gpt-4o-mini:acme::1",
    )
    assert ft.total_usd == Decimal("0.15")
    assert ft.price_source == f"config:{path.resolve()}"
    local = catalog.cost(Usage(input_tokens=9), provider=None, model="llama-3.1-70b-local")
    assert (local.priced, local.total_usd) == (True, 0)
    house = catalog.cost(Usage(input_tokens=1_000_000), provider=None, model="house-model", at=NOW)
    assert (house.total_usd, house.price_date) == (2, "2026-06-01")
    claude = catalog.cost(Usage(input_tokens=1_000_000), provider="anthropic", model="claude-sonnet-4-5", at=NOW)
    assert claude.discount == Decimal("0.75")


def test_load_prices_json(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "prices": [{"model": "my-model", "provider": "openai", "input_per_mtok": 1, "output_per_mtok": 3}],
                "discounts": [{"provider": "openai", "model": "gpt-4o", "multiplier": "0.9"}],
            }
        )
    )

    catalog.load_prices(str(path))

    cost = catalog.cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000), provider="openai", model="my-model")
    assert cost.total_usd == 4
    assert cost.price_source == f"config:{path.resolve()}"
    assert catalog.cost(Usage(input_tokens=1), provider="openai", model="gpt-4o", at=NOW).discount == Decimal("0.9")


def test_reloading_a_prices_file_replaces_what_it_loaded(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [{"model": "a", "input_per_mtok": 1, "output_per_mtok": 1}]}))
    catalog.load_prices(path)
    path.write_text(json.dumps({"prices": [{"model": "b", "input_per_mtok": 1, "output_per_mtok": 1}]}))
    catalog.load_prices(path)

    assert not catalog.cost(Usage(input_tokens=1), provider=None, model="a").priced
    assert catalog.cost(Usage(input_tokens=1), provider=None, model="b").priced


def test_override_file_bad_value_names_entry(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[[prices]]\nmodel = "ok"\ninput_per_mtok = 1\noutput_per_mtok = 1\n\n'
        '[[prices]]\nmodel = "my-llm"\ninput_per_mtok = -2\noutput_per_mtok = 1\n'
    )

    with pytest.raises(ConfigError) as info:
        catalog.load_prices(path)

    message = str(info.value)
    assert str(path.resolve()) in message
    assert "prices[1] ('my-llm')" in message
    assert "input_per_mtok=-2 must be >= 0" in message
    assert not catalog.cost(Usage(input_tokens=1), provider=None, model="ok").priced  # nothing applied


def test_override_file_unknown_key_names_entry_and_allowed_keys(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [{"model": "m", "input_per_mtok": 1, "output_per_mtok": 1, "inptu": 2}]}))
    with pytest.raises(ConfigError, match=r"prices\[0\] \('m'\): unknown key\(s\) \['inptu'\]; allowed keys"):
        catalog.load_prices(path)


def test_override_file_missing_required_rate_names_it(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [{"model": "m", "input_per_mtok": 1}]}))
    with pytest.raises(ConfigError, match="output_per_mtok is required"):
        catalog.load_prices(path)


def test_override_file_unknown_top_level_key(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"price": []}))
    with pytest.raises(ConfigError, match="unknown top-level key"):
        catalog.load_prices(path)


def test_override_file_bad_discount_names_entry(catalog: PriceCatalog, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"discounts": [{"provider": "openai", "multiplier": 80}]}))
    with pytest.raises(ConfigError, match=r"discounts\[0\] \('openai'\): multiplier=80 is not in \(0, 1\]"):
        catalog.load_prices(path)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("prices.yaml", "prices: []", "use a .json or .toml file"),
        ("prices.json", "{not json", "not valid JSON"),
        ("prices.toml", "[[prices]\n", "not valid TOML"),
        ("prices.json", "[]", "expected an object"),
    ],
)
def test_unreadable_prices_file_raises_config_error(
    catalog: PriceCatalog, tmp_path: Path, name: str, content: str, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        catalog.load_prices(path)


def test_missing_prices_file_raises_config_error(catalog: PriceCatalog, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read prices file"):
        catalog.load_prices(tmp_path / "nope.toml")


# -- the default catalog -----------------------------------------------------------------------------


def test_default_catalog_loads_prices_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [{"model": "env-model", "input_per_mtok": 1, "output_per_mtok": 1}]}))
    monkeypatch.setenv("COSTTRACE_PRICES_FILE", str(path))

    cost = pricing.default_catalog().cost(Usage(input_tokens=1_000_000), provider=None, model="env-model")

    assert cost.total_usd == 1
    assert pricing.default_catalog() is pricing.default_catalog()


def test_default_catalog_bad_env_file_logs_error_and_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [{"model": "env-model", "input_per_mtok": -1, "output_per_mtok": 1}]}))
    monkeypatch.setenv("COSTTRACE_PRICES_FILE", str(path))

    with caplog.at_level(logging.ERROR, logger="costtrace"):
        catalog = pricing.default_catalog()

    assert "COSTTRACE_PRICES_FILE" in caplog.text and "input_per_mtok=-1" in caplog.text
    assert not catalog.cost(Usage(input_tokens=1), provider=None, model="env-model").priced


def test_module_level_functions_configure_the_default_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTTRACE_PRICES_FILE", raising=False)
    pricing.set_price("module-model", input_per_mtok=1, output_per_mtok=1)
    pricing.set_discount("openai", "0.5")

    catalog = pricing.default_catalog()
    assert catalog.cost(Usage(input_tokens=1_000_000), provider=None, model="module-model").total_usd == 1
    assert catalog.cost(Usage(input_tokens=1), provider="openai", model="gpt-4o", at=NOW).discount == Decimal("0.5")


# -- concurrency and caching -------------------------------------------------------------------------


def test_concurrent_costs_and_configuration_are_consistent(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1_000_000)
    expected = gp_total(usage, "gpt-4o", "openai")
    errors: list[BaseException] = []

    def price_many() -> None:
        try:
            for n in range(300):
                cost = catalog.cost(usage, provider="openai", model="gpt-4o", at=NOW)
                assert cost.total_usd == expected
                own = catalog.cost(usage, provider=None, model=f"m{n % 7}")
                assert own.total_usd in (None, 1, 2)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def configure() -> None:
        for n in range(50):
            catalog.set_price(f"m{n % 7}", input_per_mtok=1 + n % 2, output_per_mtok=1)

    threads = [threading.Thread(target=price_many) for _ in range(6)] + [threading.Thread(target=configure)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_resolution_cache_is_bounded(catalog: PriceCatalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pricing, "_MAX_RESOLVED", 16)
    catalog.set_price("m-*", input_per_mtok=1, output_per_mtok=1)
    for n in range(100):
        catalog.cost(Usage(input_tokens=1), provider=None, model=f"m-{n}")
    assert len(catalog._entries) <= 16


def test_unpriced_cost_constructor() -> None:
    cost = Cost.unpriced("because")
    assert (cost.priced, cost.total_usd, cost.unpriced_reason, cost.input_usd) == (False, None, "because", 0)


def test_conditional_prices_none_active_fall_back_to_first() -> None:
    # genai-prices rule mirrored for dated prices: before every start date, the first price applies.
    model = ModelInfo(
        id="x",
        match=genai_prices.types.ClauseEquals(equals="x"),
        prices=[
            ConditionalPrice(
                constraint=StartDateConstraint(date(2030, 1, 1)), prices=ModelPrice(input_mtok=Decimal(1))
            ),
            ConditionalPrice(
                constraint=StartDateConstraint(date(2031, 1, 1)), prices=ModelPrice(input_mtok=Decimal(2))
            ),
        ],
    )
    data = lookup._catalog_data()
    compiled = lookup._CatalogModel(data, model, "test", {}, use_variants=False)
    plan = compiled.plan_at(date(2026, 1, 1), datetime.min.time())
    assert isinstance(plan, arithmetic._Plan) and plan.flat is not None
    assert plan.flat[0] == Decimal(1) / MTOK
    assert plan.price_date == "2030-01-01"


# --- model aliases (a gateway's own model names) ------------------------------------------------------


def test_model_alias_prices_a_gateway_name_as_its_model(catalog: PriceCatalog) -> None:
    usage = Usage(input_tokens=1000, cache_read_input_tokens=400, output_tokens=50)
    catalog.set_model_alias("my-gpt", "openai/gpt-4o-mini")
    got = catalog.cost(usage, provider="openai", model="My-GPT")
    assert got.priced and (got.provider_id, got.model_id) == ("openai", "gpt-4o-mini")
    assert got.total_usd == catalog.cost(usage, provider="openai", model="gpt-4o-mini").total_usd
    catalog.set_model_alias("my-claude", "anthropic/claude-haiku-4-5")  # another provider behind one proxy
    assert catalog.cost(usage, provider="openai", model="my-claude").model_id == "claude-haiku-4-5"


def test_model_alias_to_an_unknown_model_is_unpriced_naming_the_alias(catalog: PriceCatalog) -> None:
    catalog.set_model_alias("my-gpt", "openai/gpt-9-nonexistent")
    got = catalog.cost(Usage(input_tokens=10, output_tokens=1), provider="openai", model="my-gpt")
    assert not got.priced and got.total_usd is None
    assert "model alias 'my-gpt' -> 'openai/gpt-9-nonexistent'" in (got.unpriced_reason or "")


def test_a_price_set_for_the_alias_name_wins_over_the_alias(catalog: PriceCatalog) -> None:
    catalog.set_model_alias("my-gpt", "openai/gpt-4o-mini")
    catalog.set_price("my-gpt", input_per_mtok=1, output_per_mtok=1)
    got = catalog.cost(Usage(input_tokens=1_000_000, output_tokens=0), provider="openai", model="my-gpt")
    assert got.price_source == "override" and got.total_usd == Decimal(1)


@pytest.mark.parametrize(
    ("aliases", "fragment"),
    [
        ({"my-*": "openai/gpt-4o-mini"}, "must be an exact model name"),
        ({"": "openai/gpt-4o-mini"}, "must be a non-empty model name"),
        ({"my-gpt": ""}, "the target must be 'provider/model'"),
        ({"my-gpt": "openai/"}, "both parts of 'provider/model' must be non-empty"),
        ({"my-gpt": 4}, "the target must be 'provider/model'"),
        ({"my-gpt": "openai/my-gpt"}, "names the alias itself"),
        (["my-gpt"], "must map model names to 'provider/model' strings"),
    ],
)
def test_bad_model_aliases_are_config_errors(catalog: PriceCatalog, aliases: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        catalog.set_model_aliases(aliases)


def test_model_aliases_from_a_prices_file_and_configure(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[aliases]\n"team-fast" = "anthropic/claude-haiku-4-5"\n')
    catalog = PriceCatalog()
    catalog.load_prices(path)
    assert catalog.cost(Usage(input_tokens=10, output_tokens=1), provider="openai", model="team-fast").priced
    path.write_text('[aliases]\n"team-fast" = "anthropic/"\n')
    with pytest.raises(ConfigError, match=r"prices.toml: aliases: 'team-fast'"):
        catalog.load_prices(path)
    with pytest.raises(ConfigError, match="must be an exact model name"):
        costtrace.configure(model_aliases={"gpt-*": "openai/gpt-4o"}, otlp=False, metrics=False)
