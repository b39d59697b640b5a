"""costtrace's fast cost equals ``genai_prices.calc_price`` across the catalog.

``PriceCatalog.cost`` reads genai-prices' data but not its calculator; these tests feed both the same
usage, model, provider, time and price context and require the same total (to 1e-9 USD), the same
input-side and output-side split, and, where costtrace refuses a price, a reason and a genai-prices
total of 0 (a model priced only in units costtrace cannot measure).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import genai_prices
import pytest
from genai_prices.data import providers as GP_PROVIDERS
from genai_prices.types import (
    ClauseEquals,
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    PriceVariant,
    Provider,
    StartDateConstraint,
    Tier,
    TieredPrices,
    TimeOfDateConstraint,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costtrace.price import arithmetic, lookup
from costtrace.price.catalog import PriceCatalog
from costtrace.price.lookup import OTEL_PROVIDER_IDS
from costtrace.usage import Usage

TOLERANCE = Decimal("1e-9")
CATALOG = PriceCatalog()  # shared on purpose: the resolution cache is exercised across examples


def _conditions(model: ModelInfo) -> list[ConditionalPrice]:
    return model.prices if isinstance(model.prices, list) else [ConditionalPrice(prices=model.prices)]


def _referable(provider: Provider, model: ModelInfo) -> bool:
    """The model id finds this very model (ids of a few duplicated entries find an earlier one)."""
    return provider.find_model(model.id, all_providers=GP_PROVIDERS) is model


ALL_MODELS = [(p.id, m) for p in GP_PROVIDERS for m in p.models if _referable(p, m)]
BORROWED = [
    # Models a provider prices from another provider's list (Azure -> OpenAI, Google -> Anthropic, ...).
    (p.id, m)
    for p in GP_PROVIDERS
    for fallback in p.fallback_model_providers or ()
    for fp in GP_PROVIDERS
    if fp.id == fallback
    for m in fp.models
    if _referable(p, m)
]
TIERED = [
    (pid, m)
    for pid, m in ALL_MODELS
    if any(isinstance(v, TieredPrices) for c in _conditions(m) for v in vars(c.prices).values())
]
DATED = [(pid, m) for pid, m in ALL_MODELS if len(_conditions(m)) > 1 or m.price_variants]
CACHED = [
    (pid, m)
    for pid, m in ALL_MODELS
    if any(getattr(c.prices, "cache_write_mtok", None) is not None for c in _conditions(m))
]
START_DATES = sorted(
    {
        c.constraint.start_date
        for _, m in ALL_MODELS
        for c in _conditions(m)
        if isinstance(c.constraint, StartDateConstraint)
    }
    | {
        v.constraint.start_date
        for _, m in ALL_MODELS
        for v in m.price_variants or ()
        if isinstance(v.constraint, StartDateConstraint)
    }
)
TIER_STARTS = sorted(
    {
        t.start
        for _, m in TIERED
        for c in _conditions(m)
        for v in vars(c.prices).values()
        if isinstance(v, TieredPrices)
        for t in v.tiers
    }
)


def test_catalog_sample_covers_the_interesting_cases() -> None:
    assert len(ALL_MODELS) > 1000
    assert len(TIERED) > 20 and len(DATED) > 50 and len(CACHED) > 50
    assert START_DATES and TIER_STARTS
    assert any(pid == "azure" for pid, _ in BORROWED)


def gp_usage(usage: Usage) -> genai_prices.Usage:
    """The costtrace -> genai-prices usage mapping, written out independently of costtrace.price."""
    values = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_input_tokens,
        "cache_write_tokens": usage.cache_write_input_tokens,
        "output_reasoning_tokens": usage.reasoning_output_tokens,
    }
    if usage.cache_write_1h_input_tokens:
        values["cache_write_1h_tokens"] = usage.cache_write_1h_input_tokens
        values["cache_write_5m_tokens"] = usage.cache_write_input_tokens - usage.cache_write_1h_input_tokens
    return genai_prices.Usage(**values)


def assert_matches_genai_prices(
    usage: Usage,
    provider_id: str,
    model_ref: str,
    at: datetime,
    service_tier: str | None,
    batch: bool,
    *,
    provider: str | None = None,
) -> None:
    context = {}
    if service_tier is not None:
        context["service_tier"] = service_tier
    if batch:
        context["processing"] = "batch"
    expected = genai_prices.calc_price(
        gp_usage(usage),
        model_ref,
        provider_id=provider_id,
        genai_request_timestamp=at,
        price_context=context or None,
    )

    cost = CATALOG.cost(
        usage,
        provider=provider or provider_id,
        model=model_ref,
        at=at,
        service_tier=service_tier,
        batch=batch,
    )

    label = f"{provider_id}/{model_ref} at {at.isoformat()} tier={service_tier} batch={batch} {usage}"
    if not cost.priced:
        # costtrace refuses a price only when the model is priced in units it cannot measure.
        assert "costtrace does not measure" in (cost.unpriced_reason or ""), label
        assert expected.total_price == 0, label
        return
    assert cost.total_usd is not None
    assert abs(cost.total_usd - expected.total_price) <= TOLERANCE, label
    input_side = cost.input_usd + cost.cache_read_usd + cost.cache_write_usd
    assert abs(input_side - expected.input_price) <= TOLERANCE, label
    assert abs(cost.output_usd + cost.reasoning_usd - expected.output_price) <= TOLERANCE, label
    assert cost.model_id == expected.model.id, label


token_counts = st.one_of(
    st.integers(0, 2_000),
    st.integers(0, 2_000_000),
    st.sampled_from(TIER_STARTS).flatmap(lambda s: st.sampled_from([s - 1, s, s + 1])),
)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    input_tokens = draw(token_counts)
    cache_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.one_of(st.just(0), st.integers(0, input_tokens - cache_read)))
    cache_write_1h = draw(st.one_of(st.just(0), st.integers(0, cache_write)))
    output = draw(st.one_of(st.integers(0, 5_000), st.integers(0, 500_000)))
    reasoning = draw(st.one_of(st.just(0), st.integers(0, output)))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output,
        cache_read_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
        cache_write_1h_input_tokens=cache_write_1h,
        reasoning_output_tokens=reasoning,
    )


offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30))])


@st.composite
def timestamps(draw: st.DrawFn) -> datetime:
    tz = draw(offsets)
    if draw(st.booleans()):
        at = draw(st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2028, 12, 31)))
    else:
        # Around a price change: the day before, the day itself and the day after (UTC).
        start = draw(st.sampled_from(START_DATES)) + timedelta(days=draw(st.integers(-1, 1)))
        at = datetime.combine(start, time()) + timedelta(seconds=draw(st.integers(0, 86_399)))
    if tz is None:
        return at
    return at.replace(tzinfo=UTC).astimezone(tz)


models = st.one_of(
    st.sampled_from(ALL_MODELS),
    st.sampled_from(BORROWED),
    st.sampled_from(TIERED),
    st.sampled_from(DATED),
    st.sampled_from(CACHED),
)
service_tiers = st.sampled_from([None, None, "default", "flex", "priority", "fast", "scale"])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models, usage=usages(), at=timestamps(), service_tier=service_tiers, batch=st.booleans())
def test_cost_matches_genai_prices(
    model: tuple[str, ModelInfo], usage: Usage, at: datetime, service_tier: str | None, batch: bool
) -> None:
    provider_id, info = model
    assert_matches_genai_prices(usage, provider_id, info.id, at, service_tier, batch)


OTEL_NAMES = sorted((name, gp_id) for name, gp_id in OTEL_PROVIDER_IDS.items() if gp_id is not None)
OTEL_MODELS = [(name, gp_id, m) for name, gp_id in OTEL_NAMES for pid, m in ALL_MODELS if pid == gp_id]


@settings(max_examples=500, deadline=None)
@given(model=st.sampled_from(OTEL_MODELS), usage=usages(), at=timestamps(), service_tier=service_tiers)
def test_cost_by_otel_provider_name_matches_genai_prices_for_mapped_provider(
    model: tuple[str, str, ModelInfo], usage: Usage, at: datetime, service_tier: str | None
) -> None:
    otel_name, gp_id, info = model
    assert_matches_genai_prices(usage, gp_id, info.id, at, service_tier, False, provider=otel_name)


FIXED_USAGES = [
    Usage(input_tokens=0, output_tokens=0),
    Usage(
        input_tokens=300_001,
        output_tokens=40_000,
        cache_read_input_tokens=120_000,
        cache_write_input_tokens=60_000,
        cache_write_1h_input_tokens=20_000,
        reasoning_output_tokens=10_000,
    ),
    Usage(input_tokens=1_234, output_tokens=567, cache_read_input_tokens=1_000, cache_write_input_tokens=200),
]


def _instants(model: ModelInfo) -> list[datetime]:
    """Now, plus the day before and the first instant of each of the model's start dates."""
    dates = {c.constraint.start_date for c in _conditions(model) if isinstance(c.constraint, StartDateConstraint)} | {
        v.constraint.start_date for v in model.price_variants or () if isinstance(v.constraint, StartDateConstraint)
    }
    instants = [datetime(2026, 11, 1, 3, tzinfo=UTC), datetime(2026, 11, 1, 20, tzinfo=UTC)]
    for d in sorted(dates):
        instants.append(datetime.combine(d, time(), UTC))
        instants.append(datetime.combine(d - timedelta(days=1), time(23, 59), UTC))
    return instants


@pytest.mark.parametrize("provider_id", sorted({pid for pid, _ in ALL_MODELS}))
def test_cost_matches_genai_prices_for_every_catalog_model(provider_id: str) -> None:
    for pid, model in ALL_MODELS + BORROWED:
        if pid != provider_id:
            continue
        for at in _instants(model):
            for service_tier, batch in ((None, False), ("priority", False), ("flex", False), (None, True)):
                for usage in FIXED_USAGES:
                    assert_matches_genai_prices(usage, pid, model.id, at, service_tier, batch)


def test_unpriceable_models_are_the_ones_priced_only_in_unmeasured_units() -> None:
    # Sanity for the branch in assert_matches_genai_prices: such models exist and are few.
    usage = Usage(input_tokens=10, output_tokens=10)
    unpriced = [
        (pid, m.id)
        for pid, m in ALL_MODELS
        if not CATALOG.cost(usage, provider=pid, model=m.id, at=datetime(2026, 11, 1, tzinfo=UTC)).priced
    ]
    assert 0 < len(unpriced) < 100
    assert ("groq", "whisper-large-v3") in unpriced


def test_catalog_data_loaded_once() -> None:
    assert lookup._catalog_data() is lookup._catalog_data()


# -- synthetic price lists: every genai-prices pricing feature, in combinations the catalog lacks ------

rates = st.integers(0, 200_000).map(lambda n: Decimal(n).scaleb(-4))  # up to $20.0000 per MTok
tiered_rates = st.builds(
    lambda base, tiers: TieredPrices(base=base, tiers=[Tier(start=s, price=p) for s, p in tiers]),
    rates,
    st.lists(
        st.tuples(st.sampled_from([1_000, 128_000, 200_000, 272_000]), rates),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    ),
)
price_values = st.one_of(rates, rates, tiered_rates)


@st.composite
def model_prices(draw: st.DrawFn, *, partial: bool = False) -> ModelPrice:
    """A ModelPrice whose keys satisfy genai-prices' ancestor rules (a variant may be partial)."""
    keys = {k for k in ("input_mtok", "output_mtok") if not partial or draw(st.booleans())}
    if partial or "input_mtok" in keys:
        for key in ("cache_read_mtok", "cache_write_mtok"):
            if draw(st.booleans()):
                keys.add(key)
        if partial or "cache_write_mtok" in keys:
            for key in ("cache_write_5m_mtok", "cache_write_1h_mtok"):
                if draw(st.booleans()):
                    keys.add(key)
    if (partial or "output_mtok" in keys) and draw(st.booleans()):
        keys.add("output_reasoning_mtok")
    for key in ("requests_kcount", "web_searches_kcount"):
        if draw(st.booleans()):
            keys.add(key)
    return ModelPrice(**{key: draw(price_values) for key in sorted(keys)})


times = st.builds(
    time,
    st.integers(0, 23),
    st.sampled_from([0, 30]),
    tzinfo=st.sampled_from([None, UTC, timezone(timedelta(hours=2))]),
)
constraints = st.one_of(
    st.none(),
    st.builds(StartDateConstraint, st.dates(min_value=date(2024, 1, 1), max_value=date(2027, 12, 31))),
    st.builds(TimeOfDateConstraint, times, times),  # includes windows that cross midnight
)
variants = st.builds(
    PriceVariant,
    when=st.sampled_from([{"service_tier": "priority"}, {"service_tier": "flex"}, {"processing": "batch"}]),
    prices=model_prices(partial=True),
    constraint=st.one_of(st.none(), st.builds(StartDateConstraint, st.dates(date(2024, 1, 1), date(2027, 12, 31)))),
)


@st.composite
def synthetic_models(draw: st.DrawFn) -> ModelInfo:
    conditions = [
        ConditionalPrice(constraint=draw(constraints), prices=draw(model_prices()))
        for _ in range(draw(st.integers(1, 3)))
    ]
    return ModelInfo(
        id="synthetic",
        match=ClauseEquals(equals="synthetic"),
        prices=conditions if len(conditions) > 1 or draw(st.booleans()) else conditions[0].prices,
        price_variants=draw(st.lists(variants, max_size=4)) or None,
    )


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=synthetic_models(),
    usage=usages(),
    at=timestamps(),
    service_tier=st.sampled_from([None, "priority", "flex"]),
    batch=st.booleans(),
)
def test_cost_matches_genai_prices_for_synthetic_price_lists(
    model: ModelInfo, usage: Usage, at: datetime, service_tier: str | None, batch: bool
) -> None:
    provider = Provider(id="synthetic", name="Synthetic", api_pattern="", models=[model])
    context = {}
    if service_tier is not None:
        context["service_tier"] = service_tier
    if batch:
        context["processing"] = "batch"
    compiled = lookup._CatalogModel(lookup._catalog_data(), model, "synthetic", context, use_variants=True)
    plan = compiled.plan_at(*lookup._utc_date_time(at))
    try:
        expected = model.calc_price(
            gp_usage(usage), provider, genai_request_timestamp=at, price_context=context or None
        )
    except ValueError as exc:
        # A variant can leave prices genai-prices rejects (e.g. a 1h write rate without a write rate).
        assert isinstance(plan, str) and "inconsistent" in plan, (plan, exc)
        return

    if isinstance(plan, str):
        assert "costtrace does not measure" in plan
        assert expected.total_price == 0
        return
    cost = arithmetic._apply_plan(plan, usage, None)
    assert cost.total_usd is not None
    assert abs(cost.total_usd - expected.total_price) <= TOLERANCE
    assert abs(cost.input_usd + cost.cache_read_usd + cost.cache_write_usd - expected.input_price) <= TOLERANCE
    assert abs(cost.output_usd + cost.reasoning_usd - expected.output_price) <= TOLERANCE
