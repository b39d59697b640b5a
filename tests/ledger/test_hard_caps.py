"""Hard caps on real databases: reserve-then-commit never overspends, under threads and processes.

Invariants checked after every run: spend <= limit, 0 outstanding reservations once the writers have
drained, and the budget's spend counter equals the ledger's sum of its calls exactly (nano-USD).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

import costtrace
from costtrace import _money
from costtrace.spend import reservations, schema
from costtrace.spend.budgets import Budget
from costtrace.spend.engine import make_engine

SPENDER = Path(__file__).with_name("spender.py")
# gpt-4o-mini: $0.15 / $0.60 per MTok. A spender call reserves ~300 input + 200 output tokens.
CAP = Decimal("0.01")


@pytest.fixture(autouse=True)
def _no_ledger_left_open():
    yield
    costtrace.close_ledger()


def _spent_by_ledger(engine, budget: Budget) -> int:
    c = schema.calls
    q = sa.select(sa.func.coalesce(sa.func.sum(c.c.cost_nano_usd), 0))
    if "feature" in budget.scope:
        q = q.where(c.c.feature == budget.scope["feature"])
    with engine.connect() as conn:
        return int(conn.execute(q).scalar())


def _counter(engine, budget: Budget) -> tuple[int, int]:
    t = schema.budget_spend
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(t.c.spent_nano_usd), 0),
                sa.func.coalesce(sa.func.sum(t.c.reserved_nano_usd), 0),
            ).where(t.c.budget_id == budget.name)
        ).one()
    return int(row[0]), int(row[1])


def _check_invariants(url: str, budget: Budget) -> int:
    engine = make_engine(url)
    try:
        spent, reserved = _counter(engine, budget)
        assert reserved == 0
        assert reservations.outstanding_reservations(engine) == 0
        assert spent == _spent_by_ledger(engine, budget)  # counter == ledger sum, exactly
        assert spent <= _money.to_nano(budget.limit)
        return spent
    finally:
        engine.dispose()


def _spend_call(rng_tokens: tuple[int, int] = (250, 150)) -> None:
    with costtrace.task("spend", feature="support"):
        with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=200, input="word " * 300) as call:
            call.set_usage(input_tokens=rng_tokens[0], output_tokens=rng_tokens[1])


def test_64_threads_never_exceed_the_cap(ledger_url):
    budget = Budget("cap", limit_usd=CAP, period="day", scope={"feature": "support"}, action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    sent = blocked = 0
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        nonlocal sent, blocked
        for _ in range(12):
            try:
                _spend_call()
                with lock:
                    sent += 1
            except costtrace.BudgetExceeded:
                with lock:
                    blocked += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert costtrace.flush_ledger(60)
    assert sent > 0 and blocked > 0 and sent + blocked == 64 * 12
    costtrace.close_ledger()
    spent = _check_invariants(ledger_url, budget)
    per_call = _money.to_nano(Decimal("0.00015") * 250 / 1000 + Decimal("0.0006") * 150 / 1000)
    assert spent == sent * per_call


@pytest.mark.slow
def test_processes_share_one_cap(ledger_url):
    """8 processes x 4 threads on SQLite, 16 x 2 on PostgreSQL, racing for one cap."""
    budget = Budget("shared", limit_usd=CAP, period="month", scope={"feature": "support"}, action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])  # creates the schema once
    costtrace.close_ledger()
    procs, threads = (16, 2) if ledger_url.startswith("postgresql") else (8, 4)
    args = [sys.executable, str(SPENDER), ledger_url, json.dumps([json.loads(budget.to_json())])]
    children = [
        subprocess.Popen(
            [*args, "--calls", "15", "--threads", str(threads), "--seed", str(i)], stdout=subprocess.PIPE, text=True
        )
        for i in range(procs)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["errors"] == [] and r["closed"] for r in results), results
    sent = sum(r["sent"] for r in results)
    assert sent > 0 and sum(r["blocked"] for r in results) > 0
    _check_invariants(ledger_url, budget)


def test_reservation_released_on_success_error_and_cancel(ledger_url):
    budget = Budget("b", limit_usd=1, period="day", action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    engine = make_engine(ledger_url)
    try:
        _spend_call()

        class ProviderError(Exception):
            pass

        with pytest.raises(ProviderError):
            with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=100):
                raise ProviderError("500 from the provider")

        async def cancelled(inside: asyncio.Event) -> None:
            async with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=100):
                inside.set()
                await asyncio.sleep(3600)

        async def run() -> None:
            inside = asyncio.Event()
            job = asyncio.ensure_future(cancelled(inside))
            await asyncio.wait_for(inside.wait(), 60)  # cancelled inside the call, however slow its reservation
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job

        asyncio.run(run())
        assert costtrace.flush_ledger(60)
        assert reservations.outstanding_reservations(engine) == 0
        (state,) = costtrace.budget_status()
        assert state.reserved_usd == 0 and state.calls == 3 and state.unpriced_calls == 2  # errors: usage unknown
    finally:
        engine.dispose()


def test_a_process_killed_mid_call_releases_by_lease_expiry(ledger_url, tmp_path, monkeypatch):
    # A long lease, and this process's clock moved past it (calls read time.time_ns): no sleeping, and
    # no flake when a loaded machine takes more than a short lease between the child's call and ours.
    budget = Budget("lease", limit_usd="0.0003", period="total", action="block", lease_s=600)
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    costtrace.close_ledger()
    script = tmp_path / "hang.py"
    script.write_text(
        "import sys, time, costtrace\n"
        "from costtrace.spend.budgets import Budget\n"
        f"costtrace.configure_ledger(sys.argv[1], budgets=[Budget.from_json({budget.to_json()!r})])\n"
        "with costtrace.llm_call(provider='openai', model='gpt-4o-mini', max_tokens=400):\n"
        "    print('reserved', flush=True)\n"
        "    time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, str(script), ledger_url], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout.readline().strip() == "reserved"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    # 400 output tokens = $0.00024 reserved of $0.0003: a second such call does not fit until the lease ends.
    with pytest.raises(costtrace.BudgetExceeded):
        with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=400):
            pass
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 601 * 10**9)
    with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=400) as call:
        call.set_usage(input_tokens=0, output_tokens=100)
    assert costtrace.flush_ledger(60)
    costtrace.close_ledger()
    _check_invariants(ledger_url, budget)


def test_budget_exceeded_says_which_budget_spent_limit_and_reset(ledger_url):
    budget = Budget("tiny", limit_usd="0.0001", period="day", timezone="Europe/Paris", action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    before = datetime.now(UTC)
    with pytest.raises(costtrace.BudgetExceeded) as info:
        with costtrace.llm_call(provider="openai", model="gpt-4o", max_tokens=1000):
            pytest.fail("the body of a blocked call must not run")
    after = datetime.now(UTC)
    exc = info.value
    assert exc.budget == "tiny" and exc.limit_usd == Decimal("0.0001") and exc.spent_usd == 0
    assert exc.requested_usd == Decimal("0.01")  # 1000 output tokens of gpt-4o at $10/MTok
    assert exc.resets_at in {budget.resets_at(before), budget.resets_at(after)}  # the same unless midnight passed
    assert "'tiny'" in str(exc) and "resets" in str(exc)


def test_unpriced_model_blocks_or_uses_the_fallback_price(ledger_url):
    strict = Budget("strict", limit_usd=1, scope={"feature": "a"}, action="block")
    fallback = Budget("fb", limit_usd=1, scope={"feature": "b"}, action="block", fallback_price=(2, 8))
    costtrace.configure_ledger(ledger_url, budgets=[strict, fallback])
    with costtrace.task("t", feature="a"):
        with pytest.raises(costtrace.BudgetExceeded, match="has no price"):
            with costtrace.llm_call(provider="acme", model="acme-llm-9", max_tokens=10):
                pass
    with costtrace.task("t", feature="b"):
        with costtrace.llm_call(provider="acme", model="acme-llm-9", max_tokens=10) as call:
            call.set_usage(input_tokens=1000, output_tokens=10)
    assert costtrace.flush_ledger(60)
    states = {s.budget: s for s in costtrace.budget_status()}
    assert states["fb"].spent_usd == Decimal("0.00208")  # 1000 x $2/MTok + 10 x $8/MTok, never $0
    assert states["fb"].unpriced_calls == 1
    assert states["strict"].calls == 0


def test_store_unreachable_fail_open_lets_calls_through_fail_closed_blocks_fast(tmp_path, caplog, spans):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_b = Budget("open", limit_usd=1, scope={"feature": "o"}, action="block")
    closed_b = Budget("closed", limit_usd=1, scope={"feature": "c"}, action="block", fail_open=False)
    costtrace.configure_ledger(url, budgets=[open_b, closed_b], budget_timeout_s=0.2)
    conn = sqlite3.connect(str(tmp_path / "l.db"), isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")  # another process holds the database
        with costtrace.task("t", feature="o"):
            with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=10) as call:
                call.set_usage(input_tokens=10, output_tokens=10)
        assert "budget store" in caplog.text and "let calls through" in caplog.text
        (unchecked,) = spans.calls()
        assert unchecked.attributes["costtrace.budget.unchecked"] is True
        started = time.perf_counter()
        with costtrace.task("t", feature="c"):
            with pytest.raises(costtrace.BudgetStoreUnavailable, match="unreachable"):
                with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=10):
                    pass
        # Fails in about 2 x budget_timeout_s (0.4 s); SQLite's default 30 s busy timeout would take a minute.
        assert time.perf_counter() - started < 30
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert costtrace.flush_ledger(60)


def test_alert_only_budgets_never_block(ledger_url):
    budget = Budget("watch", limit_usd="0.000001", period="day")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    for _ in range(3):
        _spend_call()
    assert costtrace.flush_ledger(60)
    (state,) = costtrace.budget_status()
    assert state.spent_usd > state.limit_usd and state.calls == 3


@pytest.mark.slow
def test_period_boundary_under_load_counts_each_call_once(ledger_url):
    """4 processes spend across local midnight (Europe/Paris), their clocks set to 1 s before it."""
    budget = Budget(
        "daily", limit_usd=1000, period="day", timezone="Europe/Paris", scope={"feature": "support"}, action="block"
    )
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    costtrace.close_ledger()
    _, boundary = budget.bucket(datetime.now(UTC))
    # Each process's clock reads 1 s before local midnight at its first call, however late that is; each
    # thread then paces its 30 calls over at least 1.5 s, so every process spends on both sides of midnight.
    clock_at_go = boundary.replace(tzinfo=UTC).timestamp() - 1
    args = [sys.executable, str(SPENDER), ledger_url, json.dumps([json.loads(budget.to_json())])]
    children = [
        subprocess.Popen(
            [
                *args,
                "--calls",
                "30",
                "--threads",
                "2",
                "--seed",
                str(i),
                "--clock-at-go",
                str(clock_at_go),
                "--pace-s",
                "0.05",
                "--wait-go",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for child in children:  # every child has started: they all go together
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0 and json.loads(out.strip().splitlines()[-1])["errors"] == []
    engine = make_engine(ledger_url)
    try:
        t, c = schema.budget_spend, schema.calls
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.period_start, t.c.spent_nano_usd, t.c.calls).order_by(t.c.period_start)
            ).all()
            per_period = {
                start: conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(c.c.cost_nano_usd), 0), sa.func.count()).where(
                        c.c.started_at >= start, c.c.started_at < budget.bucket(start)[1]
                    )
                ).one()
                for start, _, _ in rows
            }
            total_calls = conn.execute(sa.select(sa.func.count()).select_from(c)).scalar()
        assert len(rows) == 2  # the day before and the day after: exactly one reset
        assert rows[1][0] == boundary
        for start, spent, n in rows:
            assert (spent, n) == tuple(per_period[start])  # each window holds exactly its calls
        assert sum(r[2] for r in rows) == total_calls == 4 * 2 * 30
    finally:
        engine.dispose()
    _check_invariants(ledger_url, budget)


def _forked_spender(n_calls: int) -> tuple[int, int]:
    """In a child forked from a parent that configured the ledger (gunicorn --preload, Celery prefork)."""
    sent = blocked = 0
    for _ in range(n_calls):
        try:
            _spend_call()
            sent += 1
        except costtrace.BudgetExceeded:
            blocked += 1
    assert costtrace.flush_ledger(60)
    return sent, blocked


@pytest.mark.slow
def test_forked_children_of_a_configured_parent_share_the_cap(ledger_url):
    import multiprocessing

    budget = Budget("forked", limit_usd=CAP, period="day", scope={"feature": "support"}, action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    _spend_call()  # the parent's pool and writer exist before the fork
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_forked_spender, [25] * 4)
    assert costtrace.flush_ledger(60)
    costtrace.close_ledger()
    sent = 1 + sum(r[0] for r in results)
    assert sum(r[1] for r in results) > 0
    spent = _check_invariants(ledger_url, budget)
    per_call = _money.to_nano(Decimal("0.00015") * 250 / 1000 + Decimal("0.0006") * 150 / 1000)
    assert spent == sent * per_call  # every admitted call recorded once: none lost, none twice


def test_spend_recorded_but_not_yet_written_counts_at_admission(ledger_url, monkeypatch):
    """record_llm_call reports spend after the fact; until the writer commits it, admission adds it."""
    from costtrace.spend import runtime

    budget = Budget("dollar", limit_usd=1, period="day", scope={"feature": "support"}, action="block")
    costtrace.configure_ledger(ledger_url, budgets=[budget])
    writer = runtime.current.writer
    # Hold the records in the writer's queue: no batch is written until flush_ledger() asks for one.
    monkeypatch.setattr(writer, "_flush_interval_s", 3600.0)
    with costtrace.task("spend", feature="support"):
        with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=10, input="hi") as call:
            call.set_usage(input_tokens=10, output_tokens=10)  # reserved: its hold covers it, not pending
        assert writer.pending_nano([budget], datetime.now(UTC)) == {}
        rec = costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=9_333_334, output_tokens=0)
        assert rec is not None and rec.cost_usd == Decimal("1.4000001")
        assert writer.stats().pending == 3 - 1  # the two calls (the task is still open); nothing written
        with pytest.raises(costtrace.BudgetExceeded) as info:
            with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=10, input="hi"):
                pytest.fail("a $1 cap let a call through after $1.40 of recorded spend")
    assert info.value.spent_usd > Decimal("1.4")  # the message counts the unwritten spend as spent
    assert costtrace.flush_ledger(60)
    assert writer.pending_nano([budget], datetime.now(UTC)) == {}  # written: counted once, by the database
    with pytest.raises(costtrace.BudgetExceeded):
        with costtrace.task("spend", feature="support"):
            with costtrace.llm_call(provider="openai", model="gpt-4o-mini", max_tokens=10, input="hi"):
                pass
    costtrace.close_ledger()
    _check_invariants_over_limit(ledger_url, budget)


def _check_invariants_over_limit(url: str, budget: Budget) -> None:
    """After-the-fact spend may pass the limit (it is never trimmed); the counter still equals the ledger."""
    engine = make_engine(url)
    try:
        spent, reserved = _counter(engine, budget)
        assert reserved == 0 and reservations.outstanding_reservations(engine) == 0
        assert spent == _spent_by_ledger(engine, budget) > _money.to_nano(budget.limit)
    finally:
        engine.dispose()
