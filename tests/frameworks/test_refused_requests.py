"""pydantic-ai's AnthropicModel with its default ``max_tokens``: the Anthropic SDK refuses the non-streamed
request before sending it (``ValueError("Streaming is required ...")``) and pydantic-ai sends it again as
a stream. One request on the wire is one call: no failed attempt, no retry, the cost complete."""

from __future__ import annotations

from typing import Any

from tests.frameworks.conftest import need

need("pydantic_ai")

import anthropic  # noqa: E402
import pytest  # noqa: E402
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.models.anthropic import AnthropicModel  # noqa: E402
from pydantic_ai.providers.anthropic import AnthropicProvider  # noqa: E402

import costtrace  # noqa: E402
from costtrace import semconv as sc  # noqa: E402
from costtrace.testing import capture  # noqa: E402
from costtrace.usage import Usage  # noqa: E402
from tests.instrumentation import test_anthropic as ta  # noqa: E402


@pytest.fixture
def instrumented() -> Any:
    costtrace.instrument("anthropic", "http")
    yield
    costtrace.uninstrument("anthropic", "http")


def test_pydantic_ai_default_max_tokens_is_one_call(llm_server: Any, instrumented: None, spans: Any) -> None:
    llm_server.sse(ta.stream_events(ta.message_body(ta.usage_body(1200, 300))), named=True)
    client = anthropic.AsyncAnthropic(base_url=llm_server.url, api_key="test-key", max_retries=0)
    agent = Agent(AnthropicModel(ta.MODEL, provider=AnthropicProvider(anthropic_client=client)))
    with capture() as got, costtrace.task("agent"):
        result = agent.run_sync("Summarise ticket T-1 in one line.")
    assert result.output == "Customer wants a refund."
    assert len(llm_server.requests) == 1
    assert llm_server.requests[0].body["stream"] is True  # the refused request was sent again as a stream
    (rec,) = got.calls
    assert rec.usage == Usage(1200, 300) and rec.error_type is None
    ta.assert_priced_like_genai_prices(rec)
    s = got.task("agent")
    assert (s.llm_calls, s.failed_calls, s.attempts, s.retries, s.first_pass) == (1, 0, 1, 0, True)
    assert s.cost_complete and s.unpriced_calls == 0 and s.wasted_cost_usd == 0
    events = [e.name for e in spans.one_task("agent").events]
    assert events.count(sc.EVENT_REQUEST_REFUSED) == 1 and sc.EVENT_ATTEMPT_FAILED not in events
