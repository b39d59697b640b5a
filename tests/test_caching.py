"""price.caching: the upper bound of what caching the uncached input would save, and ContextTax.from_sums."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from costtrace.analysis.context import ContextTax, empty_sums
from costtrace.price import catalog as pricing
from costtrace.price import lookup
from costtrace.price.caching import CONTEXT_SUM_KEYS, caching_bound_nano, saving_per_token_usd


@pytest.fixture(autouse=True)
def _fresh_pricing_state() -> Iterator[None]:
    lookup._reset_unpriced_for_tests()
    pricing._reset_default_catalog_for_tests()
    yield
    lookup._reset_unpriced_for_tests()
    pricing._reset_default_catalog_for_tests()


def bound(model: str, inp: int, cr: int = 0, cw: int = 0, provider: str | None = None) -> int | None:
    return caching_bound_nano(provider, model, input_tokens=inp, cache_read_tokens=cr, cache_write_tokens=cw)


def test_bound_is_uncached_input_times_input_minus_cache_read_price():
    pricing.set_price("ctx-cached", input_per_mtok="2", output_per_mtok="8", cache_read_per_mtok="0.5")
    # uncached = 10,000 - 4,000 read - 1,000 written = 5,000 tokens x $1.50 / 1M = $0.0075
    assert bound("ctx-cached", 10_000, 4_000, 1_000) == 7_500_000
    assert bound("ctx-cached", 3_000, 3_000) == 0  # all input already read from the cache
    assert bound("ctx-cached", 3_000, 2_000, 1_000) == 0  # read or written: nothing uncached
    assert bound("ctx-cached", 0) == 0


def test_a_model_without_a_cache_read_price_or_without_a_price_is_unknown_not_zero():
    pricing.set_price("ctx-nocache", input_per_mtok="1", output_per_mtok="2")
    assert bound("ctx-nocache", 1_000) is None
    assert bound("ctx-nocache", 0) is None  # unknown even without uncached input: the caller counts calls
    assert bound("ctx-no-such-model", 1_000, provider="openai") is None
    assert bound("", 1_000, provider="") is None


def test_free_input_saves_nothing_and_a_dearer_cache_never_saves_a_negative_amount():
    pricing.set_price("ctx-free", input_per_mtok=0, output_per_mtok=0)
    pricing.set_price("ctx-odd", input_per_mtok="1", output_per_mtok="1", cache_read_per_mtok="3")
    assert bound("ctx-free", 1_000) == 0
    assert bound("ctx-odd", 1_000) == 0


def test_rounding_is_half_even_to_nano_usd_once_per_call_group():
    pricing.set_price("ctx-frac", input_per_mtok="0.0375", output_per_mtok=0, cache_read_per_mtok="0.01")
    assert saving_per_token_usd(None, "ctx-frac") == Decimal("0.0000000275")  # 27.5 nano-USD per token
    assert [bound("ctx-frac", n) for n in (1, 2, 3, 5)] == [28, 55, 82, 138]  # 27.5, 55, 82.5, 137.5


def test_tiered_models_are_read_at_their_base_tier():
    # gemini-2.5-pro (genai-prices): $1.25 input, $0.125 cached per MTok up to 200k prompt tokens;
    # $2.50 / $0.25 above. The base tier saves $1.125 per MTok, whatever the group's token sum.
    assert saving_per_token_usd("google", "gemini-2.5-pro") == Decimal("1.125") / 1_000_000
    assert bound("gemini-2.5-pro", 300_000, provider="google") == 337_500_000


def test_a_negotiated_discount_applies_to_the_saving():
    full = saving_per_token_usd("openai", "gpt-4o-mini")
    pricing.set_discount("openai", "0.5")
    assert full is not None and saving_per_token_usd("openai", "gpt-4o-mini") == full / 2


def test_the_memo_follows_price_changes():
    pricing.set_price("ctx-cached", input_per_mtok="2", output_per_mtok="8", cache_read_per_mtok="0.5")
    assert bound("ctx-cached", 1_000) == 1_500_000
    pricing.set_price("ctx-cached", input_per_mtok="2", output_per_mtok="8", cache_read_per_mtok="1")
    assert bound("ctx-cached", 1_000) == 1_000_000
    pricing._reset_default_catalog_for_tests()  # a new catalog: the override is gone
    assert bound("ctx-cached", 1_000) is None


def test_the_provider_list_price_of_a_real_model():
    # gpt-4o: $2.50 input, $1.25 cached input per MTok (genai-prices).
    assert bound("gpt-4o", 1_000, provider="openai") == 1_250_000
    assert bound("gpt-4o", 1_000, provider="") == 1_250_000  # the ledger stores a missing provider as ""


# --- ContextTax.from_sums ------------------------------------------------------------------------------


def test_context_tax_from_sums_gives_exact_shares_and_the_bound():
    sums = empty_sums()
    sums.update(
        input_nano=14_000_000, cache_read_nano=2_000_000, cache_write_nano=2_500_000, output_nano=4_000_000,
        reasoning_nano=800_000, other_nano=200_000, input_tokens=12_000, cache_read_tokens=4_000,
        cache_write_tokens=1_000, output_tokens=600, reasoning_tokens=100, caching_bound_nano=10_500_000,
    )  # fmt: skip
    ct = ContextTax.from_sums(sums)
    total = 23_500_000
    assert ct.priced_cost_usd == Decimal("0.0235")
    assert ct.input_cost_share == Decimal(14_000_000) / total
    assert ct.cache_read_cost_share == Decimal(2_000_000) / total
    assert ct.cache_write_cost_share == Decimal(2_500_000) / total
    assert ct.output_cost_share == Decimal(4_800_000) / total  # reasoning included
    assert ct.other_cost_share == Decimal(200_000) / total
    assert ct.uncached_input_tokens == 7_000
    assert ct.cache_read_token_share == Decimal(1) / 3 and ct.cache_write_token_share == Decimal(1) / 12
    assert ct.caching_savings_upper_bound_usd == Decimal("0.0105")
    assert ct.caching_savings_upper_bound_share == Decimal(10_500_000) / total
    assert ct.caching_savings_complete


def test_context_tax_of_nothing_divides_nothing():
    ct = ContextTax.empty()
    assert (ct.input_cost_share, ct.output_cost_share, ct.cache_read_token_share) == (None, None, None)
    assert ct.caching_savings_upper_bound_usd == 0 and ct.caching_savings_upper_bound_share is None
    assert ct.caching_savings_complete


def test_an_unknown_saving_is_none_and_a_partial_one_says_so():
    only_unknown = ContextTax.from_sums({**empty_sums(), "input_nano": 100, "caching_unknown_calls": 2})
    assert only_unknown.caching_savings_upper_bound_usd is None
    assert only_unknown.caching_savings_upper_bound_share is None and not only_unknown.caching_savings_complete
    partial = ContextTax.from_sums({"input_nano": 100, "caching_bound_nano": 50, "caching_unknown_calls": 1})
    assert partial.caching_savings_upper_bound_usd == Decimal("5E-8") and not partial.caching_savings_complete


def test_a_misspelt_sum_is_an_error_not_a_silent_zero():
    assert set(empty_sums()) == set(CONTEXT_SUM_KEYS)
    with pytest.raises(ValueError, match="input_nanos"):
        ContextTax.from_sums({"input_nanos": 1})
