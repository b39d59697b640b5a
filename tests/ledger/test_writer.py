"""The ledger writer on real databases: exactly-once rows, exact money, outages, drops, processes, exit."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import costtrace
from costtrace import _internal, records
from costtrace._money import from_nano, to_nano
from costtrace.records import CallRecord, TaskEvent, TaskSummary
from costtrace.spend import rows, schema, store
from costtrace.spend.budgets import Budget
from costtrace.spend.engine import make_engine
from costtrace.spend.writer import LedgerWriter
from tests.waiting import wait_for

GLOBAL = Budget("everything", limit_usd=1_000_000, period="total")


# --- helpers -------------------------------------------------------------------------------------------


class Collector:
    """A listener that keeps what costtrace emits (to feed a writer by hand)."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self.tasks: list[TaskSummary] = []

    def on_call(self, record: CallRecord) -> None:
        self.calls.append(record)

    def on_task(self, summary: TaskSummary) -> None:
        self.tasks.append(summary)


@contextmanager
def listening(listener: object) -> Iterator[None]:
    records.add_listener(listener)  # type: ignore[arg-type]
    try:
        yield
    finally:
        records.remove_listener(listener)  # type: ignore[arg-type]


def make_calls(n: int, *, task: str = "t", per_task: int = 50) -> list[CallRecord]:
    """``n`` real call records (in tasks of ``per_task`` calls), not sent to any writer."""
    got = Collector()
    with listening(got):
        for start in range(0, n, per_task):
            with costtrace.task(task, feature="billing"):
                for i in range(start, min(n, start + per_task)):
                    costtrace.record_llm_call(
                        provider="openai", model="gpt-4o-mini", input_tokens=1000 + i, output_tokens=7 * i + 1
                    )
    return got.calls


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def cost_sum_nano(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(schema.calls.c.cost_nano_usd), 0))).scalar_one())


def spent_nano(engine: Engine, budget: str = GLOBAL.name) -> int:
    t = schema.budget_spend
    with engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.sum(t.c.spent_nano_usd)).where(t.c.budget_id == budget)).scalar()
    return int(value or 0)


def expected_nano(calls: list[CallRecord]) -> int:
    return sum(to_nano(c.cost_usd) or 0 for c in calls)


@pytest.fixture
def new_writer(tmp_path: Path) -> Iterator[Callable[..., LedgerWriter]]:
    """Make writers spooling under tmp_path; every one is closed after the test."""
    made: list[LedgerWriter] = []

    def make(engine: Engine, **kwargs: object) -> LedgerWriter:
        kwargs.setdefault("spool_path", tmp_path / "spool")
        w = LedgerWriter(engine, **kwargs)  # type: ignore[arg-type]
        made.append(w)
        return w

    yield make
    for w in made:
        w.close(60.0)


def sqlite_path(url: str) -> str:
    return sa.make_url(url).database or ""


@contextmanager
def sqlite_locked(url: str) -> Iterator[None]:
    """Another connection holds the SQLite database's exclusive lock."""
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Forwarder:
    """A TCP forwarder on 127.0.0.1 that can be cut (listener and every connection closed) and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, fn: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def url(self, base: str) -> str:
        return base.replace(f":{sa.make_url(base).port or 5432}/", f":{self.port}/", 1)


# --- exactly once, exact money -------------------------------------------------------------------------


def test_records_become_rows_exactly_once_with_exact_cost(ledger_engine: Engine, new_writer) -> None:
    w = new_writer(ledger_engine, budgets=lambda: [GLOBAL])
    got = Collector()
    with listening(w), listening(got):
        for t in range(4):
            with costtrace.task("resolve_ticket", feature="support", customer=f"c{t}"):
                for i in range(60):
                    costtrace.record_llm_call(
                        provider="openai", model="gpt-4o-mini", input_tokens=1234 + i, output_tokens=56 + t
                    )
    assert w.flush(60.0)
    assert count(ledger_engine, schema.calls) == len(got.calls) == 240
    assert count(ledger_engine, schema.tasks) == 4
    assert cost_sum_nano(ledger_engine) == expected_nano(got.calls) == spent_nano(ledger_engine)
    assert from_nano(cost_sum_nano(ledger_engine)) == sum((c.cost_usd or Decimal(0)) for c in got.calls)
    with ledger_engine.connect() as conn:
        task_costs = conn.execute(sa.select(schema.tasks.c.cost_nano_usd)).scalars().all()
    assert sorted(task_costs) == sorted(to_nano(s.cost_usd) for s in got.tasks)
    st = w.stats()
    assert (st.enqueued, st.written_calls, st.written_tasks, st.pending, st.dropped) == (244, 240, 4, 0, {})
    assert st.db_available and st.spooled == 0


def test_replaying_rows_already_written_duplicates_nothing(ledger_engine: Engine, new_writer, tmp_path) -> None:
    calls = make_calls(120)
    w = new_writer(ledger_engine, budgets=lambda: [GLOBAL])
    for c in calls:
        w.on_call(c)
    assert w.close(60.0)
    # A dead process's spool holding the same rows (it committed them, then crashed before truncating).
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    lines = [json.dumps({"t": "call", "r": rows.row_to_json(rows.call_row(c))}) for c in calls]
    (spool / "spool-999999999-deadbeef.jsonl").write_text("\n".join(lines) + "\n")
    w2 = new_writer(ledger_engine, budgets=lambda: [GLOBAL], batch_size=50)
    w2.start()
    wait_for(lambda: w2.stats().replayed == 120, what="the replay")
    assert count(ledger_engine, schema.calls) == 120
    assert spent_nano(ledger_engine) == cost_sum_nano(ledger_engine) == expected_nano(calls)
    assert list(spool.iterdir()) == []  # claimed, replayed, deleted


def test_sqlite_batches_of_any_size_reuse_a_few_insert_statements(ledger_engine: Engine, new_writer) -> None:
    # Each row count is its own multi-row INSERT text, kept prepared in the driver's statement cache: the
    # writer splits a batch into a fixed set of sizes, so that cache never fills with one-off statements.
    if ledger_engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL inserts a batch with one unnest() statement")
    calls = make_calls(437)
    texts: set[str] = set()

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith(f"INSERT INTO {schema.calls.name} "):
            texts.add(statement)

    sa.event.listen(ledger_engine, "before_cursor_execute", seen)
    try:
        w = new_writer(ledger_engine, budgets=lambda: [GLOBAL])
        for size in range(1, 13):
            for c in calls[:size]:  # already written ones come again: inserted and counted once
                w.on_call(c)
            assert w.flush(60.0)
        for c in calls:
            w.on_call(c)
        assert w.flush(60.0)
    finally:
        sa.event.remove(ledger_engine, "before_cursor_execute", seen)
    assert count(ledger_engine, schema.calls) == 437
    assert spent_nano(ledger_engine) == cost_sum_nano(ledger_engine) == expected_nano(calls)
    assert 0 < len(texts) <= len(store.SQLITE_CHUNK_SIZES)


def test_events_and_late_outcomes_are_written(ledger_engine: Engine, new_writer) -> None:
    w = new_writer(ledger_engine)
    with listening(w), costtrace.task("draft") as t:
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=5)
    now = datetime.now(UTC)
    w.on_event(TaskEvent(event_id="e1", kind="retry", at=now, task_id=t.summary.task_id, reason="validation"))
    w.on_event(TaskEvent(event_id="e2", kind="outcome_updated", at=now, task_id=t.summary.task_id, outcome="failure"))
    assert w.flush(60.0)
    assert count(ledger_engine, schema.events) == 2
    with ledger_engine.connect() as conn:
        outcome, original = conn.execute(sa.select(schema.tasks.c.outcome, schema.tasks.c.original_outcome)).one()
    assert (outcome, original) == ("failure", "success")


# --- the database down: spool, replay, 0 lost, 0 duplicated ----------------------------------------------


def test_sqlite_locked_spools_then_replays(tmp_path, new_writer, caplog) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url, sqlite_busy_timeout_s=0.05)
    try:
        schema.migrate(engine)
        calls = make_calls(300)
        w = new_writer(engine, budgets=lambda: [GLOBAL], batch_size=40)
        for c in calls[:100]:
            w.on_call(c)
        assert w.flush(60.0)
        with sqlite_locked(url):
            for c in calls[100:]:
                w.on_call(c)  # never raises, never blocks
            assert w.flush(60.0)  # spooled counts as flushed
            st = w.stats()
            assert not st.db_available and st.spooled == 200 and st.spool_bytes > 0
            assert st.written_calls == 100
        # replayed is counted before the spool file is truncated: wait for both (failed under load)
        wait_for(lambda: w.stats().replayed == 200 and w.stats().spool_bytes == 0, what="the replay")
        assert count(engine, schema.calls) == 300
        assert spent_nano(engine) == cost_sum_nano(engine) == expected_nano(calls)
        st = w.stats()
        assert st.db_available and st.spool_bytes == 0 and st.dropped == {}
        assert sum("database unavailable" in r.getMessage() for r in caplog.records) == 1
    finally:
        engine.dispose()


def test_spool_is_bounded_and_drops_are_counted(tmp_path, new_writer) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url, sqlite_busy_timeout_s=0.05)
    try:
        schema.migrate(engine)
        calls = make_calls(100)
        line = len(json.dumps({"t": "call", "r": rows.row_to_json(rows.call_row(calls[0]))})) + 1
        w = new_writer(engine, max_spool_bytes=line * 30 + line // 2, batch_size=1000)
        with sqlite_locked(url):
            for c in calls:
                w.on_call(c)
            assert w.flush(60.0)
        st = w.stats()
        assert st.spooled + st.dropped["spool_full"] == 100
        assert 25 <= st.spooled <= 31
        wait_for(lambda: w.stats().replayed == st.spooled, what="the replay")
        assert count(engine, schema.calls) == st.spooled
    finally:
        engine.dispose()


def test_postgres_outage_spools_then_replays_every_row_once(ledger_url: str, new_writer) -> None:
    if not ledger_url.startswith("postgresql"):
        pytest.skip("the TCP forwarder outage is the PostgreSQL case (SQLite: test_sqlite_locked_...)")
    direct = make_engine(ledger_url)
    fwd = Forwarder(sa.make_url(ledger_url).port or 5432)
    via = make_engine(fwd.url(ledger_url))
    try:
        schema.migrate(direct)
        calls = make_calls(600)
        w = new_writer(via, budgets=lambda: [GLOBAL], batch_size=50, flush_interval_s=0.05)
        for c in calls[:200]:
            w.on_call(c)
        assert w.flush(60.0)
        fwd.cut()
        for c in calls[200:400]:
            w.on_call(c)
        assert w.flush(60.0)
        st = w.stats()
        assert not st.db_available and st.spooled >= 200 - 50  # a batch may commit before the cut is seen
        fwd.restore()
        for c in calls[400:]:
            w.on_call(c)
        assert w.flush(60.0)
        wait_for(lambda: count(direct, schema.calls) == 600 and w.stats().spool_bytes == 0, what="recovery")
        assert spent_nano(direct) == cost_sum_nano(direct) == expected_nano(calls)
        assert w.stats().dropped == {}
    finally:
        fwd.cut()
        via.dispose()
        direct.dispose()


# --- validation: replayed rows are checked like live ones ------------------------------------------------

CANARY = "CANARY-7f3e-not-for-logs"


def _forged_lines(calls: list[CallRecord]) -> tuple[list[str], int]:
    """Spool lines of a hostile or broken spool: one good row, then bad ones. Returns (lines, n_bad)."""
    good = rows.row_to_json(rows.call_row(calls[0]))
    bad_rows = []
    for key, value in [
        ("cost_nano_usd", -(10**15)),  # lifts every cap if replayed
        ("input_tokens", -5),
        ("cost_nano_usd", "12"),  # wrong type
        ("priced", 1),  # not a boolean
        ("provider", "x" * 10_000),  # bigger than its column
        ("started_at", "yesterday"),  # not a time
        ("cost_nano_usd", 10**30),  # beyond BIGINT
    ]:
        row = {**rows.row_to_json(rows.call_row(calls[len(bad_rows) + 1])), key: value, "customer": CANARY}
        bad_rows.append({"t": "call", "r": row})
    missing = dict(rows.row_to_json(rows.call_row(calls[9])))
    del missing["started_at"]
    extra = {**rows.row_to_json(rows.call_row(calls[10])), "evil": CANARY}
    event = rows.row_to_json(rows.event_row(event_id="e-bad", task_id=None, kind="retry", at=datetime.now(UTC)))
    event["amount_nano_usd"] = -1
    bad_rows += [{"t": "call", "r": missing}, {"t": "call", "r": extra}, {"t": "event", "r": event}]
    bad_rows.append({"t": "table", "r": good})  # unknown kind
    lines = [json.dumps({"t": "call", "r": good})] + [json.dumps(b) for b in bad_rows]
    lines.append('{"t": "call", "r": {"call_id": "cut sho')  # a line cut short by a crash
    return lines, len(bad_rows) + 1


def test_replayed_rows_are_validated_and_bad_ones_quarantined(
    ledger_engine: Engine, new_writer, tmp_path, caplog
) -> None:
    calls = make_calls(12)
    spool = tmp_path / "spool"
    spool.mkdir()
    lines, n_bad = _forged_lines(calls)
    (spool / "spool-999999999-deadbeef.jsonl").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.INFO, logger="costtrace"):
        w = new_writer(ledger_engine, budgets=lambda: [GLOBAL])
        w.start()
        wait_for(lambda: not list(spool.glob("spool-*.jsonl")) and count(ledger_engine, schema.calls) == 1)
        assert w.close(60.0)
    # Only the good row is in the ledger, and only its cost in the budget: nothing lifted the cap.
    assert spent_nano(ledger_engine) == cost_sum_nano(ledger_engine) == expected_nano(calls[:1]) > 0
    st = w.stats()
    assert st.quarantined == n_bad
    assert st.dropped == {"invalid": n_bad - 2, "spool_corrupt": 2}  # unknown kind and cut line: unreadable
    quarantined = [line for p in spool.glob("quarantine-*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(quarantined) == sorted(lines[1:])  # kept as they were, for inspection
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in logs and CANARY not in logs and "-1000000000000000" not in logs


def test_live_rows_are_validated_like_replayed_ones(ledger_engine: Engine, new_writer, tmp_path) -> None:
    from dataclasses import replace

    good, bad = make_calls(2)
    bad = replace(bad, cost=replace(bad.cost, total_usd=Decimal("-1000000")))  # e.g. a negative custom price
    w = new_writer(ledger_engine, budgets=lambda: [GLOBAL])
    w.on_call(good)
    w.on_call(bad)
    assert w.flush(60.0)
    assert count(ledger_engine, schema.calls) == 1 and spent_nano(ledger_engine) == expected_nano([good])
    assert w.stats().quarantined == 1 and w.stats().dropped == {"invalid": 1}
    assert len(list((tmp_path / "spool").glob("quarantine-*.jsonl"))) == 1


def test_a_replay_retried_after_an_outage_counts_bad_lines_once(tmp_path, new_writer) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url, sqlite_busy_timeout_s=0.05)
    try:
        schema.migrate(engine)
        calls = make_calls(12)
        spool = tmp_path / "spool"
        spool.mkdir()
        lines, n_bad = _forged_lines(calls)
        (spool / "spool-999999999-deadbeef.jsonl").write_text("\n".join(lines) + "\n")
        with sqlite_locked(url):
            w = new_writer(engine, budgets=lambda: [GLOBAL])
            w.start()
            wait_for(lambda: not w.stats().db_available, what="the failed replay")
        wait_for(lambda: not list(spool.glob("spool-*.jsonl")) and count(engine, schema.calls) == 1)
        assert w.stats().quarantined == n_bad
    finally:
        engine.dispose()


def test_rows_the_database_rejects_are_counted_and_logged_without_their_values(
    ledger_engine: Engine, new_writer, monkeypatch, caplog
) -> None:
    from sqlalchemy.exc import IntegrityError

    calls = make_calls(3)
    real = store.write_batch

    def refuse_calls(engine, batch, budgets):  # e.g. a constraint added by the operator
        if batch.calls:
            raise IntegrityError("INSERT INTO costtrace_calls ...", [{"customer": CANARY}], Exception("constraint"))
        return real(engine, batch, budgets)

    monkeypatch.setattr(store, "write_batch", refuse_calls)
    w = new_writer(ledger_engine)
    with caplog.at_level(logging.INFO, logger="costtrace"):
        for c in calls:
            w.on_call(c)
        assert w.flush(60.0)
    assert w.stats().dropped == {"rejected": 3}
    assert CANARY not in "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected" in "\n".join(r.getMessage() for r in caplog.records)


# --- bounded queue, flush, close -----------------------------------------------------------------------


def test_queue_full_drops_are_counted_exactly_and_logged_once(ledger_engine: Engine, new_writer, caplog) -> None:
    entered, release = threading.Event(), threading.Event()

    def block(_touched: object) -> None:
        entered.set()
        release.wait(60)

    calls = make_calls(1 + 100 + 37)
    w = new_writer(ledger_engine, max_queue=100, on_committed=block)
    w.on_call(calls[0])
    assert entered.wait(60)  # the writer thread is busy: nothing leaves the queue
    with caplog.at_level(logging.WARNING, logger="costtrace"):
        for c in calls[1:]:
            w.on_call(c)
        drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drop_lines) == 1
        assert w.stats().dropped == {"queue_full": 37}
        assert not w.flush(0.2)  # times out, returns False, raises nothing
        release.set()
        assert w.flush(60.0)
        assert count(ledger_engine, schema.calls) == 101
        assert w.close(60.0) and w.close(60.0)  # idempotent
        drop_lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_lines) == 2 and "36 queue_full" in drop_lines[1]  # the rest, summed, at close


def test_flush_from_many_threads(ledger_engine: Engine, new_writer) -> None:
    w = new_writer(ledger_engine, batch_size=20)
    calls = make_calls(400)
    results: list[bool] = []

    def work(part: list[CallRecord]) -> None:
        for c in part:
            w.on_call(c)
        results.append(w.flush(60.0))

    threads = [threading.Thread(target=work, args=(calls[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
    assert count(ledger_engine, schema.calls) == 400
    assert w.flush(0.0)  # nothing pending: True at once


def test_a_raising_callback_never_kills_the_thread(ledger_engine: Engine, new_writer) -> None:
    def boom(_touched: object) -> None:
        raise RuntimeError("callback bug")

    w = new_writer(ledger_engine, on_committed=boom, flush_interval_s=0.01)
    for c in make_calls(30):
        w.on_call(c)
        assert w.flush(60.0)
    assert count(ledger_engine, schema.calls) == 30
    assert _internal.internal_error_counts()["ledger.writer.on_committed"] == 30


def test_nothing_reaches_the_app_when_the_database_is_gone(tmp_path, new_writer) -> None:
    missing = tmp_path / "no-tables.db"  # a database without the ledger's tables: every write fails
    engine = make_engine(f"sqlite:///{missing}")
    try:
        w = new_writer(engine)
        with listening(w), costtrace.task("t"):
            for _ in range(20):
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1, output_tokens=1)
        assert w.flush(60.0)
        assert w.stats().spooled == 21 and not w.stats().db_available
        schema.migrate(engine)  # the operator fixes it: the spool is replayed
        wait_for(lambda: count(engine, schema.calls) == 20 and count(engine, schema.tasks) == 1, what="replay")
    finally:
        engine.dispose()


# --- processes: SQLite under several writers, fork -------------------------------------------------------


def _child_main(url: str, spool: str, out: str, threads: int, calls_per_thread: int) -> None:
    """A child process: 2 threads recording calls; reports counts and any exception (the writer is closed
    by the exit hooks, not by this function)."""
    from costtrace.spend.engine import make_engine
    from costtrace.spend.writer import LedgerWriter

    errors: list[str] = []
    engine = make_engine(url)
    if not any(isinstance(x, LedgerWriter) for x in records._listeners):
        records.add_listener(LedgerWriter(engine, spool_path=spool, batch_size=100, flush_interval_s=0.02))

    def work(k: int) -> None:
        try:
            for i in range(calls_per_thread):
                with costtrace.task(f"child-{os.getpid()}-{k}", feature="mp"):
                    costtrace.record_llm_call(
                        provider="openai", model="gpt-4o-mini", input_tokens=100 + i, output_tokens=9
                    )
        except BaseException as exc:
            errors.append(repr(exc))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    Path(out).write_text(
        json.dumps({"pid": os.getpid(), "errors": errors, "internal": _internal.internal_error_counts()})
    )


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_several_processes_share_one_sqlite_file(tmp_path, method: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    try:
        schema.migrate(engine)
        ctx = multiprocessing.get_context(method)
        procs = [
            ctx.Process(target=_child_main, args=(url, str(tmp_path / "spool"), str(tmp_path / f"r{i}.json"), 2, 150))
            for i in range(4)
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork while threads exist
            for p in procs:
                p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        for i in range(4):
            report = json.loads((tmp_path / f"r{i}.json").read_text())
            assert report["errors"] == [] and report["internal"] == {}
        assert count(engine, schema.calls) == 4 * 2 * 150
        assert count(engine, schema.tasks) == 4 * 2 * 150
        assert not list((tmp_path / "spool").glob("*.jsonl"))
    finally:
        engine.dispose()


def test_forked_child_never_writes_the_parents_queue(tmp_path, new_writer) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = make_engine(url)
    try:
        schema.migrate(engine)
        w = new_writer(engine, flush_interval_s=60.0, batch_size=10_000)  # parent's records sit in the queue
        calls = make_calls(50)
        for c in calls:
            w.on_call(c)
        assert w.stats().pending == 50
        with listening(w):  # the child inherits the listener and the writer, not the writer's queue
            ctx = multiprocessing.get_context("fork")
            child = ctx.Process(
                target=_child_main, args=(url, str(tmp_path / "spool"), str(tmp_path / "r.json"), 1, 20)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                child.start()
            child.join(30)
        assert child.exitcode == 0
        assert json.loads((tmp_path / "r.json").read_text())["errors"] == []
        # the child's own, none of the parent's (its exit writes them, or leaves them to the next writer)
        wait_for(lambda: count(engine, schema.calls) == 20, what="the child's rows")
        assert w.stats().pending == 50
        assert w.flush(60.0)
        assert count(engine, schema.calls) == 70
    finally:
        engine.dispose()


# --- exit ------------------------------------------------------------------------------------------------

_EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import costtrace
    from costtrace import records
    from costtrace.spend.engine import make_engine
    from costtrace.spend.writer import LedgerWriter

    url, spool, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    engine = make_engine(url, sqlite_busy_timeout_s=0.05)
    records.add_listener(LedgerWriter(engine, spool_path=spool, close_timeout_s=timeout))
    for i in range(1000):
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=100 + i, output_tokens=5)
    print(time.time(), flush=True)
    """
)


def _run_exit_script(url: str, spool: Path, timeout_s: float) -> float:
    """Run the script; returns the seconds from its last record to its exit."""
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, url, str(spool), str(timeout_s)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    ended = time.time()
    assert proc.returncode == 0, proc.stderr
    return ended - float(proc.stdout.strip().splitlines()[-1])


def test_exit_writes_every_record(ledger_url: str, ledger_engine: Engine, tmp_path) -> None:
    _run_exit_script(ledger_url, tmp_path / "spool", 60.0)
    assert count(ledger_engine, schema.calls) == 1000


def test_exit_with_the_database_unreachable_is_bounded_and_spools(
    ledger_url: str, ledger_engine: Engine, tmp_path, new_writer
) -> None:
    spool = tmp_path / "spool"
    if ledger_url.startswith("sqlite"):
        with sqlite_locked(ledger_url):
            took = _run_exit_script(ledger_url, spool, 2.0)
    else:
        dead = sa.make_url(ledger_url).set(port=free_port()).render_as_string(hide_password=False)
        took = _run_exit_script(dead, spool, 2.0)
    # Exit did not wait for the database (still locked / unreachable): it returned on its own, without
    # waiting for the lock to go (subprocess timeout 60 s guards a hang); no wall-clock bound asserted.
    print(f"exit took {took:.2f} s after the last record (close timeout 2 s)")
    assert count(ledger_engine, schema.calls) == 0
    lines = sum(len(p.read_text().splitlines()) for p in spool.glob("*.jsonl"))
    assert lines == 1000
    w = new_writer(ledger_engine, spool_path=spool)  # a later process claims and replays the dead one's spool
    w.start()
    wait_for(lambda: count(ledger_engine, schema.calls) == 1000, what="the replay")
    wait_for(lambda: not list(spool.glob("*.jsonl")), what="the spool removed")


# --- hostile strings -------------------------------------------------------------------------------------

HOSTILE = [
    'it\'s "quoted" `back`',
    "'; DROP TABLE costtrace_calls; --",
    "nul\x00inside",
    "lone \ud800 surrogate",
    "emoji 😀🧾 and RTL \u202e\u05e2\u05d1\u05e8\u05d9\u05ea\u202c",
    "x" * 1_000_000,
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=["quotes", "drop-table", "nul", "surrogate", "unicode", "1mb"])
def test_hostile_strings_round_trip_and_the_schema_stays(ledger_engine: Engine, new_writer, hostile: str) -> None:
    w = new_writer(ledger_engine)
    got = Collector()
    with listening(w), listening(got), costtrace.task(hostile, feature=hostile, customer=hostile, note=hostile):
        costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=5)
    assert w.flush(60.0)
    # What rows.clean_text promises: NUL -> U+FFFD, lone surrogates -> '?', names <= 255 chars.
    name = hostile.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    with ledger_engine.connect() as conn:
        task = conn.execute(sa.select(schema.tasks)).mappings().one()
        call = conn.execute(sa.select(schema.calls)).mappings().one()
    assert task["name"] == call["task_name"] == call["feature"] == call["customer"] == name[:255]
    dims = json.loads(call["dimensions"])
    assert dims["costtrace.dimension.note"] == name[: rows.MAX_TEXT]
    assert "\x00" not in task["name"] and "\ud800" not in task["name"]
    assert set(sa.inspect(ledger_engine).get_table_names()) >= {t.name for t in schema.metadata.sorted_tables}
    assert count(ledger_engine, schema.calls) == 1 and w.stats().dropped == {}
