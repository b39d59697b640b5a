"""Hard caps through the real OpenAI and Anthropic SDKs talking HTTP to a local server.

A blocked call sends no request at all; a downgrade budget sends the cheaper model; an admitted call
is recorded and its reservation released.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

import costtrace
from costtrace.instrumentation.openai import OpenAIInstrumentor
from costtrace.spend import reservations
from costtrace.spend.budgets import Budget
from costtrace.spend.engine import make_engine
from tests.instrumentation.fake_server import FakeLLMServer
from tests.instrumentation.test_anthropic import message_body
from tests.instrumentation.test_openai import chat_body, usage_body


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    yield server
    server.close()


@pytest.fixture
def ledger(tmp_path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    yield url
    costtrace.close_ledger()


@pytest.fixture
def openai_client(llm_server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    inst = OpenAIInstrumentor()
    inst.instrument()
    with openai.OpenAI(api_key="sk-test", base_url=llm_server.url + "/v1", max_retries=0) as client:
        yield client
    inst.uninstrument()


MESSAGES = [{"role": "user", "content": "Summarise this refund request in one line. " * 20}]


def test_openai_call_over_the_cap_is_never_sent(ledger, llm_server, openai_client):
    costtrace.configure_ledger(
        ledger, budgets=[Budget("support", limit_usd="0.002", scope={"feature": "support"}, action="block")]
    )
    llm_server.json(chat_body(usage_body(200, 50), model="gpt-4o-2024-08-06"))
    with costtrace.task("resolve", feature="support"):
        # gpt-4o, ~210 input tokens: with 50 output tokens the worst case fits, with 1000 it does not.
        openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=50)
        with pytest.raises(costtrace.BudgetExceeded) as info:
            openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)
    assert len(llm_server.requests) == 1  # the blocked call never reached the server
    assert info.value.budget == "support" and info.value.requested_usd > Decimal("0.01")
    assert costtrace.flush_ledger(60)
    (state,) = costtrace.budget_status()
    assert state.calls == 1 and state.reserved_usd == 0
    assert state.spent_usd == Decimal("0.001")  # 200 x $2.50/MTok + 50 x $10/MTok


def test_downgrade_budget_sends_the_cheaper_model(ledger, llm_server, openai_client, spans):
    budget = Budget(
        "support",
        limit_usd="0.002",
        scope={"feature": "support"},
        action="downgrade",
        downgrade_to={"gpt-4o": "gpt-4o-mini"},
    )
    costtrace.configure_ledger(ledger, budgets=[budget])
    llm_server.json(chat_body(usage_body(200, 50), model="gpt-4o-mini-2024-07-18"))
    with costtrace.task("resolve", feature="support"):
        reply = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert llm_server.requests[0].body["model"] == "gpt-4o-mini"
    (call_span,) = spans.calls()
    assert call_span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert call_span.attributes["costtrace.budget.downgraded_from"] == "gpt-4o"


def test_anthropic_call_over_the_cap_is_never_sent(ledger, llm_server):
    costtrace.configure_ledger(ledger, budgets=[Budget("all", limit_usd="0.0001", action="block")])
    costtrace.instrument("anthropic")
    try:
        llm_server.json(message_body())
        with anthropic.Anthropic(api_key="sk-ant-test", base_url=llm_server.url, max_retries=0) as client:
            with pytest.raises(costtrace.BudgetExceeded, match="'all'"):
                client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=MESSAGES)
    finally:
        costtrace.uninstrument("anthropic")
    assert llm_server.requests == []


def test_calls_outside_hard_capped_scopes_do_not_touch_the_budget_store(ledger, llm_server, openai_client, tmp_path):
    costtrace.configure_ledger(
        ledger, budgets=[Budget("billing", limit_usd=0, scope={"feature": "billing"}, action="block")]
    )
    llm_server.json(chat_body(usage_body(10, 5)))
    with costtrace.task("resolve", feature="support"):
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    engine = make_engine(ledger)
    try:
        assert reservations.outstanding_reservations(engine) == 0
    finally:
        engine.dispose()
    assert len(llm_server.requests) == 1
