"""Context propagation: concurrent async and threaded tasks never see each other's calls."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import costtrace
from costtrace import semconv as sc
from costtrace.testing import capture


async def _one_task(i: int, calls: int) -> str:
    async with costtrace.task(f"job-{i}", feature="async", customer=f"c{i}") as t:
        for _ in range(calls):
            await asyncio.sleep(random.random() / 1000)
            costtrace.record_llm_call("openai", "gpt-4o-mini", 100 + i, 10)
        return t.id


def _check_no_mixing(got, expected_calls: dict[str, int]) -> None:
    by_task = Counter(c.task_id for c in got.calls)
    summaries = {s.task_id: s for s in got.tasks}
    for task_id, n in expected_calls.items():
        assert by_task[task_id] == n
        assert summaries[task_id].llm_calls == n
    for c in got.calls:
        s = summaries[c.task_id]
        # Each call carries its own task's dimension and its own input size.
        assert c.dimensions[sc.CUSTOMER] == s.dimensions[sc.CUSTOMER]
        assert c.usage.input_tokens == 100 + int(s.name.split("-")[1])


def test_gathered_async_tasks_never_mix_calls():
    random.seed(7)

    async def main():
        return await asyncio.gather(*(_one_task(i, 1 + i % 4) for i in range(200)))

    with capture() as got:
        ids = asyncio.run(main())
    _check_no_mixing(got, {tid: 1 + i % 4 for i, tid in enumerate(ids)})
    assert costtrace.current_task() is None


def test_taskgroup_tasks_never_mix_calls():
    async def main():
        async with asyncio.TaskGroup() as tg:
            futures = [tg.create_task(_one_task(i, 3)) for i in range(50)]
        return [f.result() for f in futures]

    with capture() as got:
        ids = asyncio.run(main())
    _check_no_mixing(got, dict.fromkeys(ids, 3))


def test_calls_in_child_asyncio_tasks_belong_to_the_enclosing_task():
    async def child(n: int) -> None:
        await asyncio.sleep(0)
        costtrace.record_llm_call("openai", "gpt-4o-mini", n, 1)

    async def main():
        async with costtrace.task("fan_out") as t:
            await asyncio.gather(*(child(i + 1) for i in range(10)))
        return t

    t = asyncio.run(main())
    assert t.summary.llm_calls == 10
    assert t.summary.input_tokens == sum(range(1, 11))


def test_threads_each_with_their_own_task_never_mix_calls():
    barrier = threading.Barrier(32)
    ids: dict[int, str] = {}

    def worker(i: int) -> None:
        barrier.wait()
        with costtrace.task(f"job-{i}", customer=f"c{i}") as t:
            ids[i] = t.id
            for _ in range(5):
                costtrace.record_llm_call("openai", "gpt-4o-mini", 100 + i, 10)
                with costtrace.task("nested", customer=f"c{i}"):
                    pass

    with capture() as got:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    got.tasks = [s for s in got.tasks if s.name != "nested"]
    _check_no_mixing(got, {tid: 5 for tid in ids.values()})


def test_carry_context_takes_the_task_into_a_thread_pool():
    def classify(n: int) -> str | None:
        costtrace.record_llm_call("openai", "gpt-4o-mini", n, 1)
        current = costtrace.current_task()
        return current.id if current else None

    with costtrace.task("batch") as t:
        with ThreadPoolExecutor(max_workers=4) as pool:
            carried = list(pool.map(costtrace.carry_context(classify), range(1, 9)))
            bare = list(pool.map(classify, range(1, 3)))
    assert carried == [t.id] * 8
    assert bare == [None, None]  # without the helper the pool thread is outside the task
    assert t.summary.llm_calls == 8


def test_one_task_receiving_calls_from_many_threads_counts_each_once():
    with costtrace.task("shared") as t:
        call = costtrace.carry_context(lambda: costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1))
        with ThreadPoolExecutor(max_workers=16) as pool:
            for f in [pool.submit(call) for _ in range(2000)]:
                f.result()
    s = t.summary
    assert s.llm_calls == 2000
    assert s.input_tokens == 20000
    single = costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1).cost_usd
    assert s.cost_usd == single * 2000


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_records_its_own_calls_and_not_the_parents_queue():
    import os

    from costtrace import metrics as ct_metrics

    with costtrace.task("parent"):
        costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1)
    parent_pending = len(ct_metrics._pending)
    assert parent_pending > 0
    pid = os.fork()
    if pid == 0:  # child: must not inherit the parent's queue, and must still record
        code = 0
        try:
            if len(ct_metrics._pending) != 0:
                code = 3
            with costtrace.task("child") as t:
                costtrace.record_llm_call("openai", "gpt-4o-mini", 10, 1)
            if t.summary.llm_calls != 1 or len(ct_metrics._pending) != 2:
                code = 4
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(ct_metrics._pending) == parent_pending


def test_a_thousand_async_tasks_with_random_cancellation_leak_nothing(spans, caplog):
    import logging

    caplog.set_level(logging.ERROR)
    rng = random.Random(11)

    async def job(i: int) -> None:
        async with costtrace.task("cancellable", customer=f"c{i}"):
            async with costtrace.llm_call("openai", "gpt-4o-mini") as call:
                await asyncio.sleep(rng.random() / 200)
                call.set_usage(10, 1)
            await asyncio.sleep(rng.random() / 200)

    async def main() -> int:
        tasks = [asyncio.create_task(job(i)) for i in range(1000)]
        await asyncio.sleep(0.002)
        for t in rng.sample(tasks, 300):
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return sum(isinstance(r, asyncio.CancelledError) for r in results)

    cancelled = asyncio.run(main())
    assert cancelled > 0
    task_spans = spans.tasks()
    assert len(task_spans) == 1000  # every task span ended, cancelled or not
    outcomes = Counter(s.attributes[sc.TASK_OUTCOME] for s in task_spans)
    assert outcomes["failure"] == cancelled
    assert all(s.end_time is not None for s in spans.all())
    assert len(spans.calls()) == 1000
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]
    assert costtrace.current_task() is None
