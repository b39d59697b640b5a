"""The LiteLLM proxy as the OpenAI SDK sees it: model aliases the proxy maps to real models.

The app asks for ``my-gpt``; the proxy sends ``gpt-4o-mini`` (or a Claude model) upstream and answers
in OpenAI's shape, often naming the alias as the model, with Anthropic's cache fields added to the
usage. ``costtrace.price.catalog.set_model_alias`` (or ``configure(model_aliases=...)``) says what an alias
costs; without it the call is unpriced with the reason, never $0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import costtrace
from costtrace.price import catalog as pricing
from costtrace.testing import capture
from costtrace.usage import Usage
from tests.instrumentation.test_anthropic import genai_prices_cost
from tests.instrumentation.test_openai import MSGS, chat_body, make_client, ref_price, usage_body

openai = pytest.importorskip("openai")


@pytest.fixture(autouse=True)
def _fresh_catalog() -> Iterator[None]:
    pricing._reset_default_catalog_for_tests()
    costtrace.instrument("openai")
    yield
    costtrace.uninstrument("openai")
    pricing._reset_default_catalog_for_tests()


def _ask(server: Any, model: str) -> None:
    with make_client(server) as client:
        client.chat.completions.create(model=model, messages=MSGS)


def test_proxy_alias_without_a_mapping_is_unpriced_with_the_reason(llm_server: Any) -> None:
    llm_server.json(chat_body(usage_body(1000, 50), model="my-gpt"))
    with capture() as got, costtrace.task("proxied"):
        _ask(llm_server, "my-gpt")
    (rec,) = got.calls
    assert rec.usage == Usage(1000, 50) and rec.cost_usd is None
    assert "unknown model 'my-gpt'" in (rec.cost.unpriced_reason or "")
    assert got.tasks[0].cost_complete is False


def test_proxy_alias_mapped_to_a_model_is_priced_as_that_model(llm_server: Any) -> None:
    pricing.set_model_alias("my-gpt", "openai/gpt-4o-mini")
    llm_server.json(chat_body(usage_body(1000, 50, cached=600), model="my-gpt"))
    with capture() as got:
        _ask(llm_server, "my-gpt")
    (rec,) = got.calls
    assert rec.request_model == "my-gpt"  # the call keeps the name the app used
    assert rec.cost.model_id == "gpt-4o-mini"
    assert rec.cost_usd == ref_price("gpt-4o-mini", input_tokens=1000, cache_read_tokens=600, output_tokens=50)


def test_proxy_alias_for_a_claude_model_prices_its_cache_writes(llm_server: Any) -> None:
    """The proxy answers a Claude call in OpenAI's shape with Anthropic's cache fields added."""
    pricing.set_model_aliases({"team-claude": "anthropic/claude-haiku-4-5"})
    u = usage_body(1600, 20, cached=1000)
    u.update(cache_creation_input_tokens=500, cache_read_input_tokens=1000)
    llm_server.json(chat_body(u, model="claude-haiku-4-5-20251001"))
    with capture() as got:
        _ask(llm_server, "team-claude")
    (rec,) = got.calls
    assert rec.usage == Usage(1600, 20, cache_read_input_tokens=1000, cache_write_input_tokens=500)
    assert rec.cost_usd == genai_prices_cost(rec.usage, "claude-haiku-4-5")
