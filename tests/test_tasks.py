"""The business task: outcome, attempt lineage, rollups, nesting, decorator forms."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from decimal import Decimal

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price

import costtrace
from costtrace import semconv as sc

CHEAP, STRONG = "gpt-4o-mini", "gpt-4o"


def price(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """The reference price, straight from genai-prices' own calculator."""
    usage = GPUsage(input_tokens=input_tokens, output_tokens=output_tokens)
    return calc_price(usage, model, provider_id="openai").total_price


def call(model: str, input_tokens: int = 1000, output_tokens: int = 100) -> None:
    costtrace.record_llm_call("openai", model, input_tokens, output_tokens)


def events(span, name):
    return [e for e in span.events if e.name == name]


def test_task_span_carries_name_dimensions_and_success(spans):
    with costtrace.task("resolve_ticket", feature="support", team="cx", customer="acme", user="u1", tier="gold"):
        call(CHEAP)
    s = spans.one_task("resolve_ticket")
    assert s.name == "invoke_workflow resolve_ticket"
    a = s.attributes
    assert a[sc.GEN_AI_OPERATION_NAME] == "invoke_workflow"
    assert a[sc.GEN_AI_WORKFLOW_NAME] == "resolve_ticket"
    assert (a[sc.FEATURE], a[sc.TEAM], a[sc.CUSTOMER], a[sc.USER]) == ("support", "cx", "acme", "u1")
    assert a["costtrace.dimension.tier"] == "gold"
    assert a[sc.TASK_OUTCOME] == "success"
    assert a[sc.TASK_FIRST_PASS] is True
    assert a[sc.TASK_LLM_CALLS] == 1


def test_dimensions_reach_every_call_span(spans):
    with costtrace.task("t", feature="billing", customer="acme", region="eu"):
        call(CHEAP)
        call(STRONG)
    for c in spans.calls():
        assert c.attributes[sc.FEATURE] == "billing"
        assert c.attributes[sc.CUSTOMER] == "acme"
        assert c.attributes["costtrace.dimension.region"] == "eu"
        assert c.attributes[sc.TASK_NAME] == "t"


def test_body_exception_passes_through_unchanged_and_marks_failure(spans):
    class Boom(Exception):
        pass

    original = Boom("no")
    with pytest.raises(Boom) as info:
        with costtrace.task("t"):
            call(CHEAP)
            raise original
    assert info.value is original
    a = spans.one_task().attributes
    assert a[sc.TASK_OUTCOME] == "failure"
    assert a[sc.TASK_OUTCOME_REASON] == "test_body_exception_passes_through_unchanged_and_marks_failure.<locals>.Boom"
    assert a[sc.TASK_FIRST_PASS] is False
    # The last attempt of a failed task is a failed attempt: its cost is wasted.
    assert a[sc.TASK_WASTED_COST_USD] == pytest.approx(float(price(CHEAP, 1000, 100)))


@pytest.mark.parametrize(
    ("mark", "outcome"),
    [
        ("fail", "failure"),
        ("partial", "partial"),
        ("escalate_to_human", "escalated_to_human"),
        ("succeed", "success"),
    ],
)
def test_explicit_outcome(spans, mark, outcome):
    with costtrace.task("t") as t:
        call(CHEAP)
        if mark == "succeed":
            t.succeed()
        else:
            getattr(t, mark)("needs review")
    a = spans.one_task().attributes
    assert a[sc.TASK_OUTCOME] == outcome
    assert t.summary.outcome == outcome
    assert a[sc.TASK_FIRST_PASS] is (outcome == "success")
    # The last attempt is wasted when its output was not usable: a failure or a human's rework.
    wasted = price(CHEAP, 1000, 100) if outcome in ("failure", "escalated_to_human") else 0
    assert t.summary.wasted_cost_usd == wasted


def test_two_failed_attempts_and_an_escalation(spans):
    with costtrace.task("extract_refund", feature="billing") as t:
        call(CHEAP, 1000, 100)
        t.retry(reason="validation_failed", details="missing field 'amount'")
        call(CHEAP, 1100, 120)
        t.escalate(to_model=STRONG, reason="schema_error")
        call(STRONG, 1100, 90)

    c1, c2, c3 = price(CHEAP, 1000, 100), price(CHEAP, 1100, 120), price(STRONG, 1100, 90)
    assert [c.attributes[sc.CALL_ATTEMPT] for c in spans.calls()] == [1, 2, 3]

    task_span = spans.one_task("extract_refund")
    (retry,) = events(task_span, sc.EVENT_RETRY)
    assert retry.attributes[sc.EVENT_ATTR_ATTEMPT] == 1
    assert retry.attributes[sc.EVENT_ATTR_NEXT_ATTEMPT] == 2
    assert retry.attributes[sc.EVENT_ATTR_REASON] == "validation_failed"
    assert retry.attributes[sc.EVENT_ATTR_DETAILS] == "missing field 'amount'"
    assert retry.attributes[sc.EVENT_ATTR_MODEL] == CHEAP
    assert retry.attributes[sc.EVENT_ATTR_TASK_COST_USD] == pytest.approx(float(c1))
    assert retry.attributes[sc.EVENT_ATTR_ATTEMPT_COST_USD] == pytest.approx(float(c1))

    (esc,) = events(task_span, sc.EVENT_ESCALATION)
    assert esc.attributes[sc.EVENT_ATTR_ATTEMPT] == 2
    assert esc.attributes[sc.EVENT_ATTR_NEXT_ATTEMPT] == 3
    assert esc.attributes[sc.EVENT_ATTR_FROM_MODEL] == CHEAP
    assert esc.attributes[sc.EVENT_ATTR_TO_MODEL] == STRONG
    assert esc.attributes[sc.EVENT_ATTR_REASON] == "schema_error"
    assert esc.attributes[sc.EVENT_ATTR_TASK_COST_USD] == pytest.approx(float(c1 + c2))

    s = t.summary
    assert s.outcome == "success"
    assert s.first_pass is False
    assert (s.attempts, s.retries, s.escalations, s.llm_calls) == (3, 1, 1, 3)
    assert s.cost_usd == c1 + c2 + c3
    assert s.wasted_cost_usd == c1 + c2
    a = task_span.attributes
    assert a[sc.TASK_WASTED_COST_USD] == pytest.approx(float(c1 + c2))
    assert a[sc.TASK_COST_USD] == pytest.approx(float(c1 + c2 + c3))
    assert (a[sc.TASK_ATTEMPTS], a[sc.TASK_RETRIES], a[sc.TASK_ESCALATIONS]) == (3, 1, 1)
    assert a[sc.TASK_FIRST_PASS] is False


def test_raising_call_is_a_failed_attempt_and_next_call_retries(spans):
    with costtrace.task("t") as t:
        with pytest.raises(TimeoutError):
            with costtrace.llm_call("openai", CHEAP) as c:
                c.set_usage(input_tokens=500, output_tokens=0)
                raise TimeoutError("slow")
        call(CHEAP)
    s = t.summary
    assert (s.attempts, s.retries, s.failed_calls, s.first_pass) == (2, 1, 1, False)
    assert s.wasted_cost_usd == price(CHEAP, 500, 0)
    assert [c.attributes[sc.CALL_ATTEMPT] for c in spans.calls()] == [1, 2]
    task_span = spans.one_task()
    (failed,) = events(task_span, sc.EVENT_ATTEMPT_FAILED)
    assert failed.attributes[sc.ERROR_TYPE] == "TimeoutError"
    (retry,) = events(task_span, sc.EVENT_RETRY)
    assert retry.attributes[sc.EVENT_ATTR_REASON] == "exception"
    assert retry.attributes[sc.EVENT_ATTR_ATTEMPT] == 1


def test_explicit_retry_after_raising_call_explains_it_without_a_second_attempt(spans):
    with costtrace.task("t") as t:
        try:
            with costtrace.llm_call("openai", CHEAP) as c:
                c.set_usage(input_tokens=10, output_tokens=0)
                raise ConnectionError("429")
        except ConnectionError:
            t.retry(reason="rate_limit")
        call(CHEAP)
    s = t.summary
    assert (s.attempts, s.retries) == (2, 1)
    (retry,) = events(spans.one_task(), sc.EVENT_RETRY)
    assert retry.attributes[sc.EVENT_ATTR_REASON] == "rate_limit"
    assert [c.attributes[sc.CALL_ATTEMPT] for c in spans.calls()] == [1, 2]


def test_nested_tasks_never_count_a_call_twice(spans):
    with costtrace.task("parent", feature="support") as parent:
        call(CHEAP, 2000, 100)
        with costtrace.task("child") as child:
            call(STRONG, 1000, 100)
            call(CHEAP, 300, 30)
    assert child.summary.cost_usd == price(STRONG, 1000, 100) + price(CHEAP, 300, 30)
    # The parent's cost is the whole (its subtask's included), its own share beside it.
    assert parent.summary.cost_usd == price(CHEAP, 2000, 100) + child.summary.cost_usd
    assert parent.summary.own_cost_usd == parent.summary.own_known_cost_usd == price(CHEAP, 2000, 100)
    assert parent.summary.subtasks_cost_usd == child.summary.cost_usd
    assert child.summary.parent_id == parent.id
    assert child.summary.dimensions[sc.FEATURE] == "support"  # inherited

    task_total = sum(s.attributes[sc.TASK_COST_USD] for s in spans.tasks())
    call_total = sum(s.attributes[sc.CALL_COST_USD] for s in spans.calls())
    assert task_total == pytest.approx(call_total)
    child_span = spans.one_task("child")
    assert child_span.parent.span_id == spans.one_task("parent").context.span_id
    assert child_span.attributes[sc.TASK_PARENT_ID] == parent.id


def test_call_outside_any_task_is_recorded_and_priced(spans):
    rec = costtrace.record_llm_call("openai", CHEAP, 1000, 100)
    assert rec is not None
    assert rec.task_id is None
    assert rec.cost_usd == price(CHEAP, 1000, 100)
    (span,) = spans.calls()
    assert span.attributes[sc.CALL_COST_USD] == pytest.approx(float(price(CHEAP, 1000, 100)))
    assert sc.TASK_ID not in span.attributes


def test_current_task_is_none_outside_and_the_task_inside():
    assert costtrace.current_task() is None
    with costtrace.task("outer") as outer:
        assert costtrace.current_task() is outer
        with costtrace.task("inner") as inner:
            assert costtrace.current_task() is inner
        assert costtrace.current_task() is outer
    assert costtrace.current_task() is None


def test_unpriced_call_makes_task_cost_incomplete_not_zero(spans, caplog):
    with costtrace.task("t") as t:
        call(CHEAP)
        costtrace.record_llm_call("openai", "my-private-model-v9", 1000, 100)
    s = t.summary
    assert s.unpriced_calls == 1
    assert s.cost_complete is False
    assert s.cost_usd is None and s.own_cost_usd is None  # unknown: never a number
    assert s.known_cost_usd == s.own_known_cost_usd == price(CHEAP, 1000, 100)  # the lower bound, named so
    a = spans.one_task().attributes
    assert a[sc.TASK_COST_COMPLETE] is False
    assert a[sc.TASK_UNPRICED_CALLS] == 1


def test_a_task_of_unpriced_calls_has_no_cost_and_a_cost_assert_cannot_pass():
    with costtrace.task("t") as t:
        costtrace.record_llm_call("openai", "my-private-model-v9", 1000, 100)
        costtrace.record_llm_call("openai", CHEAP, None, None)  # type: ignore[arg-type]
    s = t.summary
    assert (s.unpriced_calls, s.cost_usd, s.known_cost_usd) == (2, None, Decimal(0))
    with pytest.raises(TypeError):  # `assert cost_usd <= limit` cannot pass silently on an unknown cost
        assert s.cost_usd <= Decimal("0.01")  # type: ignore[operator]


def test_an_unpriced_subtask_makes_its_parents_cost_unknown(spans):
    with costtrace.task("root") as root:
        call(CHEAP)
        with costtrace.task("mid") as mid:
            with costtrace.task("leaf") as leaf:
                costtrace.record_llm_call("openai", "my-private-model-v9", 1000, 100)
            call(CHEAP)
    assert leaf.summary.cost_usd is None
    for t in (mid, root):
        s = t.summary
        assert (s.cost_usd, s.cost_complete, s.own_cost_complete) == (None, False, True)
        assert s.subtasks_unpriced_calls == 1 and s.all_unpriced_calls == 1
        assert s.own_cost_usd == price(CHEAP, 1000, 100)
    assert root.summary.known_cost_usd == 2 * price(CHEAP, 1000, 100)
    a = spans.one_task("root").attributes
    # The span's cost_usd and cost_complete describe the task's own calls; subtasks' are beside them.
    assert a[sc.TASK_COST_COMPLETE] is True and a[sc.TASK_SUBTASKS_UNPRICED_CALLS] == 1


def test_parent_with_subtasks_counts_each_call_once_in_spans_and_metrics(spans, metric_points):
    """The parent's summary shows the whole cost, but what backends sum across tasks (task spans, the
    task cost metric) carries each task's own calls: the sums equal the calls' sum. (The ledger's
    task rows: tests/ledger/test_ledger_api.py.)"""
    from costtrace import metrics

    with costtrace.task("parent") as parent:
        call(CHEAP, 2000, 100)
        with costtrace.task("child") as child:
            call(STRONG, 1000, 100)
            with costtrace.task("grandchild"):
                call(CHEAP, 300, 30)
        call(STRONG, 500, 50)
    calls = [price(CHEAP, 2000, 100), price(STRONG, 1000, 100), price(CHEAP, 300, 30), price(STRONG, 500, 50)]
    total = sum(calls, Decimal(0))
    assert parent.summary.cost_usd == total
    assert parent.summary.own_cost_usd == calls[0] + calls[3]
    assert child.summary.cost_usd == calls[1] + calls[2]

    metrics.drain()
    points = metric_points.collect()[sc.METRIC_TASK_COST]
    assert sum(p.count for p in points) == 3
    assert sum(p.sum for p in points) == pytest.approx(float(total))
    assert all(p.attributes[sc.TASK_COST_COMPLETE] is True for p in points)

    assert sum(s.attributes[sc.TASK_COST_USD] for s in spans.tasks()) == pytest.approx(float(total))


# --- the decorator --------------------------------------------------------------------------


def test_decorator_bare_uses_qualname_and_preserves_signature(spans):
    @costtrace.track_task
    def resolve(ticket: str, *, urgent: bool = False) -> str:
        call(CHEAP)
        return ticket.upper()

    assert resolve("t-1") == "T-1"
    assert str(inspect.signature(resolve)) == "(ticket: 'str', *, urgent: 'bool' = False) -> 'str'"
    assert resolve.__name__ == "resolve"
    assert spans.one_task().attributes[sc.TASK_NAME].endswith("resolve")


def test_decorator_named_with_dimensions_and_success_when(spans):
    @costtrace.track_task("classify", feature="triage", success_when=lambda r: r == "ok", queue="vip")
    def classify(x: str) -> str:
        return x

    classify("ok")
    classify("bad")
    outcomes = [s.attributes[sc.TASK_OUTCOME] for s in spans.tasks()]
    assert outcomes == ["success", "failure"]
    bad = spans.tasks()[1].attributes
    assert bad[sc.TASK_OUTCOME_REASON] == "success_when returned False"
    assert bad[sc.FEATURE] == "triage"
    assert bad["costtrace.dimension.queue"] == "vip"


def test_decorator_success_when_that_raises_does_not_break_the_function(spans):
    @costtrace.track_task("t", success_when=lambda r: r.missing_attribute)
    def f() -> int:
        return 7

    assert f() == 7
    assert spans.one_task().attributes[sc.TASK_OUTCOME] == "failure"


def test_decorator_exception_passes_through(spans):
    err = KeyError("k")

    @costtrace.track_task("t")
    def f() -> None:
        raise err

    with pytest.raises(KeyError) as info:
        f()
    assert info.value is err
    assert spans.one_task().attributes[sc.TASK_OUTCOME] == "failure"


def test_decorator_on_coroutine_function(spans):
    @costtrace.track_task("async_t", feature="f")
    async def work(n: int) -> int:
        await asyncio.sleep(0)
        call(CHEAP)
        return n * 2

    assert inspect.iscoroutinefunction(work)
    assert asyncio.run(work(21)) == 42
    s = spans.one_task("async_t")
    assert s.attributes[sc.TASK_LLM_CALLS] == 1
    assert s.attributes[sc.TASK_OUTCOME] == "success"


def test_decorator_on_generator_spans_the_whole_iteration_but_not_the_consumer(spans):
    seen_by_consumer = []

    @costtrace.track_task("stream_answers")
    def answers(n: int):
        for i in range(n):
            assert costtrace.current_task() is not None
            call(CHEAP)
            yield i

    for item in answers(3):
        seen_by_consumer.append(costtrace.current_task())
        costtrace.record_llm_call("openai", CHEAP, 1, 1)  # the consumer's own call, not the task's
    assert seen_by_consumer == [None, None, None]
    s = spans.one_task("stream_answers")
    assert s.attributes[sc.TASK_LLM_CALLS] == 3
    assert s.attributes[sc.TASK_OUTCOME] == "success"


def test_generator_closed_early_is_partial(spans):
    @costtrace.track_task("g")
    def gen():
        yield 1
        yield 2

    g = gen()
    assert next(g) == 1
    g.close()
    a = spans.one_task("g").attributes
    assert a[sc.TASK_OUTCOME] == "partial"


def test_generator_send_and_throw_pass_through(spans):
    @costtrace.track_task("echo")
    def echo():
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except ValueError:
            yield "caught"
        return received

    g = echo()
    assert next(g) == 0
    assert g.send("a") == 1
    assert g.throw(ValueError("x")) == "caught"
    with pytest.raises(StopIteration) as stop:
        next(g)
    assert stop.value.value == ["a"]
    assert spans.one_task("echo").attributes[sc.TASK_OUTCOME] == "success"


def test_decorator_on_async_generator(spans):
    @costtrace.track_task("agen", feature="f")
    async def agen(n: int):
        for i in range(n):
            await asyncio.sleep(0)
            call(CHEAP)
            yield i

    async def consume():
        out = []
        async for x in agen(2):
            assert costtrace.current_task() is None
            out.append(x)
        return out

    assert asyncio.run(consume()) == [0, 1]
    s = spans.one_task("agen")
    assert s.attributes[sc.TASK_LLM_CALLS] == 2
    assert s.attributes[sc.TASK_OUTCOME] == "success"


def test_async_generator_raising_marks_failure(spans):
    @costtrace.track_task("agen_fail")
    async def agen():
        yield 1
        raise RuntimeError("mid-stream")

    async def consume():
        async for _ in agen():
            pass

    with pytest.raises(RuntimeError, match="mid-stream"):
        asyncio.run(consume())
    assert spans.one_task("agen_fail").attributes[sc.TASK_OUTCOME] == "failure"


def test_async_with_task(spans):
    async def main():
        async with costtrace.task("a", feature="x") as t:
            call(CHEAP)
            return t

    t = asyncio.run(main())
    assert t.summary.llm_calls == 1
    assert spans.one_task("a").attributes[sc.TASK_OUTCOME] == "success"


def test_set_dimensions_applies_to_later_calls(spans):
    with costtrace.task("t") as t:
        call(CHEAP)
        t.set_dimensions(customer="acme")
        call(CHEAP)
    first, second = spans.calls()
    assert sc.CUSTOMER not in first.attributes
    assert second.attributes[sc.CUSTOMER] == "acme"
    assert spans.one_task().attributes[sc.CUSTOMER] == "acme"


def test_summary_while_running_has_no_outcome():
    with costtrace.task("t") as t:
        call(CHEAP)
        s = t.summary
        assert s.outcome is None and s.first_pass is None and s.llm_calls == 1


# --- the caller gets the summary of a decorated task ------------------------------------------------


def test_the_caller_of_a_decorated_task_gets_its_summary():
    @costtrace.track_task("resolve_ticket")
    def resolve(n: int) -> str:
        for _ in range(n):
            call(CHEAP)
        with costtrace.task("subtask"):
            call(CHEAP)
        return "done"

    assert contextvars.Context().run(costtrace.last_finished_task) is None  # a fresh context has none
    assert resolve(2) == "done"
    s = costtrace.last_finished_task()
    assert s is not None and s.name == "resolve_ticket"  # the outermost task, not its subtask
    assert (s.llm_calls, s.cost_usd) == (2, 3 * price(CHEAP, 1000, 100))

    @costtrace.track_task
    def broken() -> None:
        call(STRONG)
        raise KeyError("x")

    with pytest.raises(KeyError):
        broken()
    s = costtrace.last_finished_task()
    assert s is not None and (s.outcome, s.cost_usd) == ("failure", price(STRONG, 1000, 100))


def test_last_finished_task_is_per_thread():
    import threading

    @costtrace.track_task("work")
    def work(tokens: int) -> None:
        call(CHEAP, tokens, 0)

    barrier = threading.Barrier(8)
    seen: dict[int, int] = {}
    before = costtrace.last_finished_task()

    def run(i: int) -> None:
        barrier.wait()  # every thread finishes its task while the others do theirs
        work(100 + i)
        s = costtrace.last_finished_task()
        assert s is not None
        seen[i] = s.input_tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen == {i: 100 + i for i in range(8)}
    assert costtrace.last_finished_task() is before  # none finished in this thread


def test_concurrent_async_tasks_each_get_their_own_summary():
    @costtrace.track_task("answer")
    async def answer(tokens: int) -> int:
        await asyncio.sleep(0)
        call(CHEAP, tokens, 0)
        await asyncio.sleep(0)
        return tokens

    async def request(tokens: int) -> tuple[int, int]:
        await answer(tokens)
        s = costtrace.last_finished_task()
        assert s is not None
        return tokens, s.input_tokens

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(request(100 + i) for i in range(20)))

    assert all(asked == got for asked, got in asyncio.run(main()))


def test_collect_tasks_gathers_this_contexts_tasks_only():
    import threading

    @costtrace.track_task("answer")
    async def answer(tokens: int) -> None:
        await asyncio.sleep(0)
        call(CHEAP, tokens, 0)

    other_started, other_may_finish = threading.Event(), threading.Event()

    def other_request() -> None:  # a concurrent request in another thread, never collected
        with costtrace.task("other"):
            other_started.set()
            other_may_finish.wait(10)
            call(STRONG)

    other = threading.Thread(target=other_request)
    other.start()
    other_started.wait(10)

    async def main() -> list[costtrace.TaskSummary]:
        with costtrace.collect_tasks() as finished:
            await asyncio.gather(answer(100), answer(200))
            await asyncio.create_task(answer(300))
            other_may_finish.set()
            other.join()
        with costtrace.task("after"):  # after the block: not collected
            pass
        return finished

    finished = asyncio.run(main())
    assert sorted(s.input_tokens for s in finished) == [100, 200, 300]
    assert {s.name for s in finished} == {"answer"}


def test_escalation_names_requested_models_on_both_sides(spans):
    with costtrace.task("cascade") as t:
        with costtrace.llm_call("openai", CHEAP) as c:
            c.record_response(
                {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 100, "completion_tokens": 10}}
            )
        t.escalate(to_model=STRONG, reason="validation_failed")
        call(STRONG)
    (esc,) = events(spans.one_task(), sc.EVENT_ESCALATION)
    a = esc.attributes
    assert (a[sc.EVENT_ATTR_FROM_MODEL], a[sc.EVENT_ATTR_TO_MODEL]) == (CHEAP, STRONG)
    assert a[sc.EVENT_ATTR_FROM_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
    assert a[sc.EVENT_ATTR_MODEL] == CHEAP


def test_tasks_counter_counts_every_task_of_a_drain_per_attribute_set(metric_points):
    """The finished-tasks counter is added to once per attribute set and drain: its sums are still one
    per task, split by name, outcome, feature and first pass, whatever the mix in one drain."""
    from costtrace import metrics

    for i in range(7):
        with costtrace.task("triage", feature="support" if i % 2 else "billing") as t:
            call(CHEAP)
            if i == 3:
                t.fail("bad answer")
            if i == 5:
                t.retry("validation_failed")
                call(CHEAP)
    with costtrace.task("triage", feature="support"):
        pass
    metrics.drain()
    counts = {
        (p.attributes[sc.TASK_OUTCOME], p.attributes[sc.FEATURE], p.attributes[sc.TASK_FIRST_PASS]): p.value
        for p in metric_points.collect()[sc.METRIC_TASKS]
    }
    assert counts == {
        ("success", "billing", True): 4,  # i = 0, 2, 4, 6
        ("success", "support", True): 2,  # i = 1 and the task with no call
        ("failure", "support", False): 1,  # i = 3
        ("success", "support", False): 1,  # i = 5: a retry
    }


def test_metrics_drained_inside_a_span_carry_no_exemplar(metric_points):
    """Metrics are recorded after the fact (module docstring of costtrace.metrics): a drain that runs
    on the app's thread inside a task must not give the task's span to the SDK as an exemplar."""
    from costtrace import metrics

    with costtrace.task("triage"):
        call(CHEAP)
        call(CHEAP)
        metrics.drain()  # the task's span is current and sampled here
    data = metric_points.collect()
    points = data[sc.METRIC_TOKEN_USAGE] + data[sc.METRIC_OPERATION_DURATION]
    assert sum(p.count for p in points) == 6
    assert all(not p.exemplars for p in points)
