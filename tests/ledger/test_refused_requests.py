"""A request the SDK refused before sending is not a call: not in the ledger, its hard-cap reservation
released at once (not by lease expiry), and the budget's counters see only the call that went out."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import costtrace
from costtrace import _money
from costtrace.spend import reservations, schema
from costtrace.spend.budgets import Budget
from costtrace.spend.engine import make_engine
from tests.instrumentation import test_anthropic as ta
from tests.instrumentation.fake_server import FakeLLMServer

HUGE_MAX_TOKENS = 64000  # the Anthropic SDK refuses a non-streamed create() this large: "Streaming is required"


@pytest.fixture(autouse=True)
def _no_ledger_left_open():
    yield
    costtrace.close_ledger()


def test_refused_request_is_not_in_the_ledger_and_releases_its_reservation(ledger_url):
    budget = Budget("cap", limit_usd=5, period="day", action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    engine = make_engine(ledger_url)
    server = FakeLLMServer()
    costtrace.instrument("anthropic", "http")
    try:
        server.sse(ta.stream_events(ta.message_body(ta.usage_body(25, 12))), named=True)
        with costtrace.task("refused-then-streamed"), ta.sync_client(server) as client:
            with pytest.raises(ValueError, match="Streaming is"):
                client.messages.create(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS))
            assert reservations.outstanding_reservations(engine) == 0  # given back at once
            with client.messages.stream(**ta.create_kwargs(max_tokens=HUGE_MAX_TOKENS)) as stream:
                stream.get_final_message()
        assert costtrace.flush_ledger(60)
        with engine.connect() as conn:
            calls = conn.execute(sa.select(schema.calls.c.error_type, schema.calls.c.cost_nano_usd)).all()
            task = conn.execute(
                sa.select(schema.tasks.c.llm_calls, schema.tasks.c.attempts, schema.tasks.c.retries)
            ).one()
            kinds = [k for (k,) in conn.execute(sa.select(schema.events.c.kind))]
        assert len(calls) == 1 == len(server.requests)
        assert calls[0].error_type is None and calls[0].cost_nano_usd > 0
        assert tuple(task) == (1, 1, 0)
        assert "attempt_failed" not in kinds and "retry" not in kinds
        assert reservations.outstanding_reservations(engine) == 0
        (state,) = costtrace.budget_status()
        assert state.reserved_usd == 0 and state.calls == 1 and state.unpriced_calls == 0
        assert _money.to_nano(state.spent_usd) == calls[0].cost_nano_usd
    finally:
        costtrace.uninstrument("anthropic", "http")
        server.close()
        engine.dispose()
