"""Per-task caps: a runaway loop is stopped before the call that would go past its cap."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

import costtrace
from costtrace.errors import ConfigError
from costtrace.testing import capture


def _call(tokens_in: int = 1000, tokens_out: int = 100) -> None:
    with costtrace.llm_call(provider="openai", model="gpt-4o-mini") as call:
        call.set_usage(input_tokens=tokens_in, output_tokens=tokens_out)


def test_max_llm_calls_stops_the_next_call_and_fails_the_task(spans):
    made = 0
    with capture() as got:
        with pytest.raises(costtrace.TaskBudgetExceeded) as info:
            with costtrace.task("agent_loop", max_llm_calls=3):
                while True:
                    _call()
                    made += 1
    assert made == 3
    exc = info.value
    assert exc.cap == "max_llm_calls" and exc.task_name == "agent_loop" and exc.budget == "task:agent_loop"
    assert "reached max_llm_calls" in str(exc)
    summary = got.task("agent_loop")
    assert summary.llm_calls == 3 and summary.outcome == "failure" and summary.outcome_reason == "TaskBudgetExceeded"
    (task_span,) = [s for s in spans.all() if s.name == "invoke_workflow agent_loop"]
    blocked = [e for e in task_span.events if e.name == "costtrace.budget.blocked"]
    assert len(blocked) == 1 and blocked[0].attributes["costtrace.reason"] == "max_llm_calls"
    assert len([s for s in spans.all() if s.name.startswith("chat ")]) == 3  # the blocked call has no span


def test_max_cost_usd_counts_own_calls_and_finished_subtasks():
    # gpt-4o-mini: 1000 in + 100 out = $0.00021 a call.
    with pytest.raises(costtrace.TaskBudgetExceeded) as info:
        with costtrace.task("parent", max_cost_usd="0.0005") as parent:
            _call()
            with costtrace.task("child"):
                _call()
            _call()  # 3 x 0.00021 = 0.00063 >= 0.0005
            _call()
    assert info.value.cap == "max_cost_usd"
    assert parent.summary.cost_usd == Decimal("0.00063")  # its own calls and its subtask's


def test_a_subtask_call_is_stopped_by_its_ancestors_cap():
    with pytest.raises(costtrace.TaskBudgetExceeded) as info:
        with costtrace.task("outer", max_tokens=2000):
            _call(1500, 600)
            with costtrace.task("inner"):
                _call()
    assert info.value.task_name == "outer" and info.value.cap == "max_tokens"


def test_record_llm_call_is_never_blocked_a_call_that_happened_is_recorded():
    with costtrace.task("t", max_llm_calls=1) as t:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
        rec = costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
    assert rec is not None and t.summary.llm_calls == 2


def test_track_task_caps_and_bad_values():
    @costtrace.track_task("loop", max_llm_calls=1)
    def loop() -> None:
        _call()
        _call()

    with pytest.raises(costtrace.TaskBudgetExceeded):
        loop()
    with pytest.raises(ConfigError, match="max_llm_calls"):
        costtrace.track_task("x", max_llm_calls=-1)
    with pytest.raises(ConfigError, match="max_cost_usd"):
        costtrace.task("x", max_cost_usd="lots")


def test_async_task_caps():
    async def main() -> None:
        async with costtrace.task("a", max_llm_calls=0):
            async with costtrace.llm_call(provider="openai", model="gpt-4o-mini"):
                pass

    with pytest.raises(costtrace.TaskBudgetExceeded):
        asyncio.run(main())
