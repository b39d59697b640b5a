"""Records made in pool workers reach the ledger even when the pool terminates its workers.

``with multiprocessing.Pool(4) as p: p.map(...)`` (the idiom of Python's docs) terminates the workers
with SIGTERM on exit, and masters recycle workers (gunicorn ``max_requests``, Celery
``max_tasks_per_child``): a worker process writes each record through to its spool file before the
recording call returns, and the writer of any process on the same spool folder (here the parent's,
configured like the workers) moves what a dead worker left to the database. 0 lost, 0 duplicated.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
import warnings
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

import costtrace
from costtrace._money import to_nano
from costtrace.spend import schema
from costtrace.spend.budgets import Budget
from costtrace.spend.engine import make_engine
from tests.waiting import wait_for

GLOBAL = Budget("everything", limit_usd=1_000_000, period="total")
TASKS, CALLS_PER_TASK = 50, 25


def _configure(url: str, spool: str) -> None:
    """Pool initializer: every worker opens the same ledger (and so the same spool folder)."""
    costtrace.configure_ledger(url, budgets=[GLOBAL], spool_path=spool)


def _work(i: int) -> int:
    with costtrace.task("pooled", feature="pool"):
        for k in range(CALLS_PER_TASK):
            costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=100 + i, output_tokens=k + 1)
    return os.getpid()


def _expected_nano(n_tasks: int) -> int:
    per = Decimal("0.00000015"), Decimal("0.0000006")  # gpt-4o-mini, USD per token
    return sum(
        to_nano(per[0] * (100 + i) + per[1] * (k + 1)) or 0 for i in range(n_tasks) for k in range(CALLS_PER_TASK)
    )


def _totals(url: str) -> tuple[int, int, int, int]:
    """(call rows, distinct call ids, task rows, the budget's spend counter)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            c, t, s = schema.calls, schema.tasks, schema.budget_spend
            calls = conn.execute(sa.select(sa.func.count()).select_from(c)).scalar_one()
            distinct = conn.execute(sa.select(sa.func.count(sa.distinct(c.c.call_id)))).scalar_one()
            tasks = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            spent = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(s.c.spent_nano_usd), 0))).scalar_one()
        return int(calls), int(distinct), int(tasks), int(spent)
    finally:
        engine.dispose()


def _check_all_arrived(url: str, n_tasks: int) -> None:
    """One flush_ledger() in the parent writes what the dead workers left in their spool files."""
    want = n_tasks * CALLS_PER_TASK
    assert costtrace.flush_ledger(60)
    calls, distinct, tasks, spent = _totals(url)
    assert (calls, distinct, tasks) == (want, want, n_tasks)  # 0 lost, 0 duplicated
    assert spent == _expected_nano(n_tasks)  # every call's cost counted exactly once


@pytest.fixture
def parent_ledger(ledger_url: str, tmp_path: Path):
    spool = str(tmp_path / "spool")
    _configure(ledger_url, spool)
    yield ledger_url, spool
    costtrace.close_ledger()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_exit_terminates_workers_and_loses_nothing(parent_ledger, method: str) -> None:
    url, spool = parent_ledger
    ctx = multiprocessing.get_context(method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork while threads exist
        with ctx.Pool(4, initializer=_configure, initargs=(url, spool)) as pool:
            pids = pool.map(_work, range(TASKS))  # __exit__ terminates the workers (SIGTERM)
    assert len(set(pids)) >= 1
    _check_all_arrived(url, TASKS)


@pytest.mark.slow
def test_pool_workers_recycled_by_maxtasksperchild_lose_nothing(parent_ledger) -> None:
    url, spool = parent_ledger
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2, initializer=_configure, initargs=(url, spool), maxtasksperchild=5) as pool:
        pids = pool.map(_work, range(20), chunksize=1)
    assert len(set(pids)) >= 4  # workers were replaced
    _check_all_arrived(url, 20)


@pytest.mark.slow
def test_process_pool_executor_loses_nothing(parent_ledger) -> None:
    url, spool = parent_ledger
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=ctx, initializer=_configure, initargs=(url, spool)) as ex:
        list(ex.map(_work, range(TASKS)))
    _check_all_arrived(url, TASKS)


_WSGI_APP = textwrap.dedent(
    """
    import os
    import costtrace
    from costtrace.spend.budgets import Budget

    costtrace.configure_ledger(os.environ["LEDGER_URL"], spool_path=os.environ["LEDGER_SPOOL"],
                               budgets=[Budget("everything", limit_usd=1_000_000, period="total")])

    def app(environ, start_response):
        i = int(environ["PATH_INFO"].strip("/"))
        with costtrace.task("pooled", feature="pool"):
            for k in range({calls}):
                costtrace.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=100 + i,
                                          output_tokens=k + 1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    """
).format(calls=CALLS_PER_TASK)


@pytest.mark.slow
def test_gunicorn_workers_recycled_by_max_requests_or_killed_lose_nothing(parent_ledger, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    url, spool = parent_ledger
    (tmp_path / "ledger_app.py").write_text(_WSGI_APP)
    with socket_port() as port:
        pass  # free now, for gunicorn to bind
    env = {**os.environ, "LEDGER_URL": url, "LEDGER_SPOOL": spool, "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, "-m", "gunicorn", "-w", "2", "--max-requests", "5", "--max-requests-jitter", "0",
           "-b", f"127.0.0.1:{port}", "--graceful-timeout", "30", "ledger_app:app"]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pids = set()
    try:

        def request(i: int) -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/{i}", timeout=30) as resp:
                    return str(resp.read().decode())
            except OSError:
                return None

        wait_for(lambda: server.poll() is not None or request(0) is not None, "gunicorn to serve")
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        for i in range(1, 30):
            pid = request(i)
            assert pid is not None
            pids.add(pid)
        for pid in pids:  # the workers alive now are killed outright (gunicorn's --timeout, the OOM killer)
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass  # recycled already
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert len(pids) >= 3  # workers were recycled after 5 requests each
    _check_all_arrived(url, 30)


class socket_port:
    """A free TCP port on 127.0.0.1 (closed again on exit, for the server to bind)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
